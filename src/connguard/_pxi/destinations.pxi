# Destinations: class by port, host and port sketch bits (pairs with
# _core_py/destinations.py).

cdef struct Destination:
    uint8_t cls          # index into the class table; 0 is "other"
    uint64_t host_bit    # one bit of the distinct-hosts sketch, 0 for none
    uint64_t port_bit    # one bit of the distinct-ports sketch, 0 for none


cdef struct Classes:
    # How a destination is classed: by port, unless its host is watched.
    const uint16_t* ports         # 65,536 entries: port -> class id | port_sketch_bit << 8
    const uint64_t* watch         # host hashes of the watch-list, sorted
    Py_ssize_t watch_n
    uint8_t watch_class           # the class of a watched host, whatever its port


cdef inline uint64_t sketch_bit(uint64_t h) noexcept nogil:
    return (<uint64_t>1) << (fmix64(h) >> 58)


cdef inline uint16_t port_entry(int port, uint8_t cls) noexcept nogil:
    """A Classes.ports entry: the port's class and the number of its
    distinct-port sketch bit, so that classify finds both in one load."""
    return cls | <uint16_t>((fmix64(<uint64_t>port ^ _PORT_SALT) >> 58) << 8)


cdef int _port_in(int kind, void* data, Py_ssize_t start, Py_ssize_t end) noexcept:
    """Return the decimal port in [start, end), or -1 when it is not one."""
    cdef Py_ssize_t i
    cdef uint32_t c
    cdef int port = 0
    if end - start < 1 or end - start > 5:
        return -1
    for i in range(start, end):
        c = PyUnicode_READ(kind, data, i)
        if c < 48 or c > 57:
            return -1
        port = port * 10 + <int>(c - 48)
    return port if port <= 65535 else -1


cdef inline uint64_t _mix_word(uint64_t h, uint64_t word) noexcept nogil:
    h = (h ^ word) * _GOLDEN
    return h ^ (h >> 32)


cdef inline uint64_t _ascii_lower8(uint64_t w) noexcept nogil:
    """Lower-case the ASCII letters among 8 packed bytes; leave other bytes alone.

    Per byte, with its top bit cleared (b <= 0x7F): b + 0x3F reaches 0x80
    exactly when b >= 'A', and b + 0x25 exactly when b > 'Z', so their XOR
    has the top bit set for 'A'..'Z'. No sum exceeds 0x7F + 0x3F < 0x100, so
    no carry crosses into the next byte; ``& ~w`` drops bytes >= 0x80.
    """
    cdef uint64_t low7 = w & 0x7F7F7F7F7F7F7F7FULL
    cdef uint64_t upper = ((low7 + 0x3F3F3F3F3F3F3F3FULL) ^ (low7 + 0x2525252525252525ULL)) \
        & ~w & 0x8080808080808080ULL
    return w | (upper >> 2)


cdef inline uint64_t _colon_in(uint64_t w) noexcept nogil:
    """Nonzero exactly when one of 8 packed bytes is ':'.

    x has a zero byte where w has ':'. Below the lowest zero byte of x nothing
    borrows in x - 0x01.., so that byte turns 0xFF and shows in the top bits;
    with no zero byte nothing borrows at all, and no b < 0x80 has b - 1 >= 0x80.
    """
    cdef uint64_t x = w ^ 0x3A3A3A3A3A3A3A3AULL
    return (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL


cdef inline uint64_t _hash_word(uint64_t h, uint64_t w, bint fold_case, uint64_t* colons) noexcept nogil:
    """One step of _bytes_hash."""
    if colons != NULL:
        colons[0] |= _colon_in(w)
    return _mix_word(h, _ascii_lower8(w) if fold_case else w)


cdef inline uint64_t _bytes_hash(const uint8_t* p, Py_ssize_t n, uint64_t seed, bint fold_case,
                                 uint64_t* colons) noexcept nogil:
    """_text_hash of n bytes at p; ``colons``, unless NULL, gets nonzero ORed in if one is ':'.

    Words are little endian, the last one zero-padded. When the text has 8
    bytes or more, that last word is loaded as the 8 bytes ending with the
    text and shifted down past the ones already hashed, which leaves zeros
    on top: no byte outside the text is read. Shorter text is gathered a
    byte at a time.
    """
    cdef uint64_t h = seed ^ <uint64_t>n
    cdef uint64_t w = 0
    cdef Py_ssize_t i = n
    while i >= 8:
        h = _hash_word(h, cg_load_le64(p), fold_case, colons)
        p += 8
        i -= 8
    if i:
        if n >= 8:
            w = cg_load_le64(p + i - 8) >> (64 - 8 * i)
        else:
            while i:
                i -= 1
                w = (w << 8) | p[i]
        h = _hash_word(h, w, fold_case, colons)
    return h


cdef uint64_t _text_hash(int kind, void* data, Py_ssize_t start, Py_ssize_t end,
                         uint64_t seed, bint fold_case) noexcept:
    """Hash text, ASCII case folded if asked (hosts are case-insensitive).

    Text stored one byte per character is read 8 bytes per step; wider text
    one code point per step. A host and its destination always share a
    storage kind (the rest of a destination is ASCII), so _core_py can choose
    the same way from the host alone.
    """
    cdef uint64_t h = seed ^ <uint64_t>(end - start)
    cdef Py_ssize_t i
    cdef uint32_t c
    if kind == PyUnicode_1BYTE_KIND:
        return _bytes_hash(<const uint8_t*>data + start, end - start, seed, fold_case, NULL)
    for i in range(start, end):
        c = PyUnicode_READ(kind, data, i)
        if fold_case and 65 <= c <= 90:
            c += 32
        h = _mix_word(h, c)
    return h


cdef Py_ssize_t _find(int kind, void* data, Py_ssize_t start, Py_ssize_t end, uint32_t ch) noexcept:
    """Return the index of the first ``ch`` in [start, end), or -1."""
    cdef const uint8_t* hit
    cdef Py_ssize_t i
    if start >= end:
        return -1
    if kind == PyUnicode_1BYTE_KIND:
        hit = <const uint8_t*>memchr(<const uint8_t*>data + start, ch, end - start)
        return -1 if hit == NULL else hit - <const uint8_t*>data
    for i in range(start, end):
        if PyUnicode_READ(kind, data, i) == ch:
            return i
    return -1


cdef uint64_t _host_port_text(int kind, void* data, Py_ssize_t n, int* port) noexcept:
    """classify's host hash and port (-1 for none) of any text of n >= 1 characters."""
    cdef Py_ssize_t close_at, colon, host_start = 0, host_end = n   # unparsable: all is host
    port[0] = -1
    if PyUnicode_READ(kind, data, 0) == 91:      # '[v6]' or '[v6]:port'
        close_at = _find(kind, data, 1, n, 93)
        if close_at > 1:
            if close_at == n - 1:
                host_start, host_end = 1, close_at
            elif PyUnicode_READ(kind, data, close_at + 1) == 58:
                port[0] = _port_in(kind, data, close_at + 2, n)
                if port[0] >= 0:
                    host_start, host_end = 1, close_at
    else:
        # "host:port" has exactly one ':'; a second one would sit in the port
        # text, which then fails as a port, so one search is enough.
        colon = _find(kind, data, 0, n, 58)
        if colon > 0:
            port[0] = _port_in(kind, data, colon + 1, n)
            if port[0] >= 0:
                host_end = colon
    return _text_hash(kind, data, host_start, host_end, _FNV_OFFSET, True)


cdef inline uint64_t _host_port_bytes(const uint8_t* p, Py_ssize_t n, int* port) noexcept nogil:
    """classify's host hash and port (-1 for none) of n >= 1 bytes not starting with '['.

    The rule is _host_port_text's: the first ':', unless it is the first
    byte, ends the host when 1-5 digits up to 65535 follow it to the end;
    otherwise all is host. So read at most 5 digits back from the end to the
    ':' before them, with no memchr. That ':' is the first exactly when the
    host before it has none, which the hash notes as it reads the host. If
    the host has one, the first ':' is there and the port text after it
    holds this ':' and fails, so all is host, as here. Conversely, a port
    the rule finds ends the text, so this scan finds it too.
    """
    cdef Py_ssize_t colon = n - 1
    cdef int value = 0, scale = 1
    cdef uint64_t colons = 0, h
    while colon > 0 and scale <= 10000 and _is_digit(p[colon]):
        value += (p[colon] - 48) * scale
        scale *= 10
        colon -= 1
    if scale > 1 and colon > 0 and p[colon] == 58 and value <= 65535:
        h = _bytes_hash(p, colon, _FNV_OFFSET, True, &colons)
        if not colons:
            port[0] = value
            return h
    port[0] = -1
    return _bytes_hash(p, n, _FNV_OFFSET, True, NULL)


cdef bint _watched(const Classes* classes, uint64_t h) noexcept nogil:
    """Binary search of the sorted watch-list."""
    cdef Py_ssize_t low = 0, high = classes.watch_n, mid
    while low < high:
        mid = (low + high) >> 1
        if classes.watch[mid] < h:
            low = mid + 1
        else:
            high = mid
    return low < classes.watch_n and classes.watch[low] == h


def host_hash(host):
    """The hash a destination host is known by (ASCII case folded): watch-lists hold these."""
    if not PyUnicode_Check(host):
        raise TypeError(f"host must be str, not {type(host).__name__}")
    return _text_hash(PyUnicode_KIND(host), PyUnicode_DATA(host), 0, PyUnicode_GET_LENGTH(host),
                      _FNV_OFFSET, True)


cdef int classify(object destination, const Classes* classes, Destination* d) except -1:
    """Fill ``d`` for a destination; unparsable text counts as class "other".

    A host on the watch-list is of the watch class whatever its port.
    """
    cdef uint64_t h
    cdef Py_ssize_t n
    cdef int kind, port
    cdef void* data
    d.cls = 0
    d.host_bit = 0
    d.port_bit = 0
    if destination is None:
        return 0
    if not PyUnicode_Check(destination):
        raise TypeError(f"destination must be str or None, not {type(destination).__name__}")
    n = PyUnicode_GET_LENGTH(destination)
    if n == 0:
        return 0
    kind = PyUnicode_KIND(destination)
    data = PyUnicode_DATA(destination)
    if kind == PyUnicode_1BYTE_KIND and (<const uint8_t*>data)[0] != 91:
        h = _host_port_bytes(<const uint8_t*>data, n, &port)     # the common case, quicker
    else:
        h = _host_port_text(kind, data, n, &port)
    d.host_bit = sketch_bit(h)
    if port >= 0:
        d.cls = <uint8_t>classes.ports[port]
        d.port_bit = (<uint64_t>1) << (classes.ports[port] >> 8)
    if classes.watch_n and _watched(classes, h):
        d.cls = classes.watch_class
    return 0
