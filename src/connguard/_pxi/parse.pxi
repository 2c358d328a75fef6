# Address parsing and key hashing (pairs with _core_py/parse.py).

cdef inline uint64_t fmix64(uint64_t h) noexcept nogil:
    """Finalise a 64-bit hash (murmur3's fmix64); unsigned overflow is defined."""
    h ^= h >> 33
    h *= CG_FMIX_C1
    h ^= h >> 33
    h *= CG_FMIX_C2
    h ^= h >> 33
    return h


cdef inline uint64_t key_hash(uint64_t hi, uint64_t lo, uint64_t seed) noexcept nogil:
    return fmix64(lo ^ (hi * _GOLDEN) ^ seed)


# --- address parsing ----------------------------------------------------------
# The parsers read the ``n`` bytes at ``p`` and never past ``p + n``: every
# index is checked against ``n`` before it is read.

cdef inline bint _is_digit(uint8_t c) noexcept nogil:
    return 48 <= c <= 57


cdef int8_t _HEX_VALUE[256]     # -1 except at 0-9, a-f, A-F; filled at import


cdef void _fill_hex_table() noexcept:
    cdef int c
    for c in range(256):
        _HEX_VALUE[c] = -1
    for c in range(10):
        _HEX_VALUE[48 + c] = <int8_t>c
    for c in range(6):
        _HEX_VALUE[97 + c] = <int8_t>(10 + c)
        _HEX_VALUE[65 + c] = <int8_t>(10 + c)


_fill_hex_table()


cdef inline Py_ssize_t parse_ipv4_head(const uint8_t* p, Py_ssize_t n, uint32_t* out) noexcept nogil:
    """Parse a dotted quad at the start of p; return its length, or 0 if there is none.

    Strict: four decimal octets of one to three digits, no leading zeros.
    This runs for every IPv4 source, so it checks the length once instead of
    before every byte: a quad is at most 15 bytes, and the parse reads at
    most 16 (the byte after the last octet tells it ended). Text of 16 bytes
    or more is read in place; shorter text is first copied into a zeroed
    buffer, by two fixed-size copies that overlap (plain loads and stores,
    no library call), so that every byte past ``n`` reads as 0: neither a
    digit nor a '.', which ends the quad exactly where the text ends.
    """
    cdef uint8_t buf[24]
    cdef const uint8_t* q = p
    if n < 16:
        if n < 7:                                # "a.b.c.d" is the shortest
            return 0
        memset(buf, 0, sizeof(buf))
        if n >= 8:                               # bytes 0-7, then n-8 to n-1
            memcpy(buf, p, 8)
            memcpy(buf + n - 8, p + n - 8, 8)
        else:                                    # n == 7: bytes 0-3, then 3-6
            memcpy(buf, p, 4)
            memcpy(buf + 3, p + 3, 4)
        q = buf
    return _quad(q, out)


cdef inline Py_ssize_t _quad(const uint8_t* q, uint32_t* out) noexcept nogil:
    """The dotted quad at q (at least 16 readable bytes); its length or 0."""
    cdef Py_ssize_t i = 0
    cdef uint32_t acc = 0, octet, d
    cdef int part
    for part in range(4):
        octet = <uint32_t>q[i] - 48              # unsigned: bytes below '0' wrap high
        if octet > 9:
            return 0
        i += 1
        d = <uint32_t>q[i] - 48
        if d <= 9:
            if octet == 0:                       # "01" reads as octal elsewhere
                return 0
            octet = octet * 10 + d
            i += 1
            d = <uint32_t>q[i] - 48
            if d <= 9:
                octet = octet * 10 + d
                i += 1
                if octet > 255 or <uint32_t>q[i] - 48 <= 9:
                    return 0
        acc = (acc << 8) | octet
        if part < 3:
            if q[i] != 46:                       # '.'
                return 0
            i += 1
    out[0] = acc
    return i


cdef inline int parse_ipv4(const uint8_t* p, Py_ssize_t n, uint32_t* out) noexcept nogil:
    """Parse exactly one dotted quad."""
    return n > 0 and parse_ipv4_head(p, n, out) == n


cdef int parse_ipv6(const uint8_t* p, Py_ssize_t n, uint64_t* hi, uint64_t* lo) noexcept nogil:
    """RFC 4291 text: up to 8 hex groups, one '::', an optional trailing IPv4."""
    cdef uint16_t groups[8]
    cdef int count = 0, gap = -1, digits, v, k
    cdef Py_ssize_t i = 0, start
    cdef uint32_t value, v4
    if n < 2:
        return 0
    memset(groups, 0, sizeof(groups))            # fixed size: two stores, no call
    if p[0] == 58:                               # leading ':' must be '::'
        if p[1] != 58:
            return 0
        gap = 0
        i = 2
    while i < n:
        if count == 8:
            return 0
        start = i
        value = 0
        digits = 0
        while i < n and digits < 5:
            v = _HEX_VALUE[p[i]]
            if v < 0:
                break
            value = (value << 4) | <uint32_t>v
            digits += 1
            i += 1
        if i < n and p[i] == 46:                 # '.': the tail is an IPv4
            if count > 6 or not parse_ipv4(p + start, n - start, &v4):
                return 0
            groups[count] = <uint16_t>(v4 >> 16)
            groups[count + 1] = <uint16_t>(v4 & 0xFFFF)
            count += 2
            break
        if digits == 0 or digits > 4:
            return 0
        groups[count] = <uint16_t>value
        count += 1
        if i == n:
            break
        if p[i] != 58:
            return 0
        i += 1
        if i < n and p[i] == 58:
            if gap >= 0:
                return 0
            gap = count
            i += 1
        elif i == n:                             # a lone trailing ':'
            return 0
    if gap < 0:
        if count != 8:
            return 0
    elif count > 7:
        return 0
    else:
        # Slide the groups after '::' to the end, zeroing each place a group
        # leaves: a place a later (lower) group moves into gets its value
        # after, and the places past ``count`` were zeroed at the start. (A
        # loop zeroing the gap afterwards became a memset call.)
        k = 7
        while count > gap:
            count -= 1
            if k != count:
                groups[k] = groups[count]
                groups[count] = 0
            k -= 1
    hi[0] = ((<uint64_t>groups[0] << 48) | (<uint64_t>groups[1] << 32)
             | (<uint64_t>groups[2] << 16) | groups[3])
    lo[0] = ((<uint64_t>groups[4] << 48) | (<uint64_t>groups[5] << 32)
             | (<uint64_t>groups[6] << 16) | groups[7])
    return 1


cdef inline bint _valid_zone(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Interface names and numbers: letters, digits, '.', '_', '-'."""
    cdef Py_ssize_t i
    cdef uint8_t c
    if n == 0:
        return False
    for i in range(n):
        c = p[i]
        if not (_is_digit(c) or 65 <= c <= 90 or 97 <= c <= 122
                or c == 46 or c == 95 or c == 45):
            return False
    return True


cdef inline bint _valid_port(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint32_t port = 0
    if n == 0 or n > 5:
        return False
    for i in range(n):
        if not _is_digit(p[i]):
            return False
        port = port * 10 + (p[i] - 48)
    return port <= 65535


cdef int parse_source_bytes(const uint8_t* p, Py_ssize_t n, uint64_t* hi,
                            uint64_t* lo) noexcept nogil:
    """Parse a source as text; return 4 or 6 (the family) or 0 when invalid.

    IPv4 comes back as its ::ffff:a.b.c.d form, so IPv4-mapped IPv6 folds to
    the same key for free.
    """
    cdef Py_ssize_t end
    cdef uint32_t v4
    if n == 0:
        return 0
    if _is_digit(p[0]):                          # "a.b.c.d" or "a.b.c.d:port"
        end = parse_ipv4_head(p, n, &v4)
        if end == n or (end > 0 and p[end] == 58 and _valid_port(p + end + 1, n - end - 1)):
            hi[0] = 0
            lo[0] = _V4_TAG | v4
            return 4
        # Not IPv4, but IPv6 may start with a digit too: go on.
    return _parse_v6_fn(p, n, hi, lo)


cdef int _parse_v6_text(const uint8_t* p, Py_ssize_t n, uint64_t* hi, uint64_t* lo) noexcept nogil:
    """parse_source_bytes of text that is not IPv4."""
    cdef Py_ssize_t addr_start = 0, addr_end = n, zone_at
    cdef const uint8_t* found
    if p[0] == 91:                               # "[v6]" or "[v6]:port"
        found = <const uint8_t*>memchr(p, 93, n)
        if found == NULL:
            return 0
        addr_start, addr_end = 1, found - p
        if addr_end + 1 < n and not (p[addr_end + 1] == 58
                                     and _valid_port(p + addr_end + 2, n - addr_end - 2)):
            return 0
    found = <const uint8_t*>memchr(p + addr_start, 37, addr_end - addr_start)   # "%zone"
    if found != NULL:
        zone_at = found - p
        if not _valid_zone(found + 1, addr_end - zone_at - 1):
            return 0
        addr_end = zone_at
    # parse_ipv6 rejects everything else, including text with under two colons.
    if not parse_ipv6(p + addr_start, addr_end - addr_start, hi, lo):
        return 0
    if hi[0] == 0 and (lo[0] >> 32) == 0xFFFF:
        return 4
    return 6


# Called through a pointer, never directly, so that the compiler cannot
# inline the IPv6 parser into parse_source_bytes: its registers and stack
# would then be set up on every IPv4 call too (callgrind: inlined, an IPv4
# pair cost 28 instructions more, an IPv6 pair 21 fewer).
cdef int (*_parse_v6_fn)(const uint8_t*, Py_ssize_t, uint64_t*, uint64_t*) noexcept nogil
_parse_v6_fn = _parse_v6_text


cdef object _bad_source(object source):
    text = source if len(source) <= 64 else source[:64] + "..."
    return ValueError(f"invalid source address: {text!r}")


cdef object peer_host(object source, str name):
    """The host of a peername tuple, ``(host, port)`` or ``(host, port,
    flowinfo, scope_id)`` as sockets and asyncio report it; raise TypeError
    naming ``name`` for anything else. Called only for a source that is not
    a str, so text sources pay nothing for it."""
    cdef Py_ssize_t n
    if PyTuple_Check(source):
        n = PyTuple_GET_SIZE(source)
        if (n == 2 or n == 4) and PyUnicode_Check(<object>PyTuple_GET_ITEM(source, 0)) \
                and PyLong_Check(<object>PyTuple_GET_ITEM(source, 1)):
            return <object>PyTuple_GET_ITEM(source, 0)
    raise TypeError(f"Argument '{name}' has incorrect type (expected str or a peername "
                    f"tuple (host, port[, flowinfo, scope_id]), got {type(source).__name__})")


cdef inline int source_key(object source, uint64_t* hi, uint64_t* lo) except 0:
    """Parse ``source`` (text or a peername tuple) or raise TypeError or ValueError naming it."""
    cdef Py_ssize_t n
    cdef int family
    if not PyUnicode_Check(source):
        # Out of line: reassigning ``source`` here would make Cython own a
        # reference to it on every call, text or not.
        return _peer_key(source, hi, lo)
    n = PyUnicode_GET_LENGTH(source)
    # Non-ASCII text is rejected before reading: this is also what keeps
    # Unicode digits such as '١' from being read as numbers. Only ASCII str
    # has the 1-byte layout the byte parsers read.
    if n == 0 or n > _MAX_SOURCE or not PyUnicode_IS_ASCII(source):
        raise _bad_source(source)
    family = parse_source_bytes(<const uint8_t*>PyUnicode_DATA(source), n, hi, lo)
    if family == 0:
        raise _bad_source(source)
    return family


cdef int _peer_key(object peer, uint64_t* hi, uint64_t* lo) except 0:
    """source_key of a peername tuple's host."""
    return source_key(peer_host(peer, "source"), hi, lo)


def default_clock():
    """Read the default clock (coarse monotonic on Linux, else time.monotonic's)."""
    return cg_monotonic()


def parse_source(source):
    """Return ``(family, address)`` for a source; IPv4-mapped IPv6 folds to 4."""
    cdef uint64_t hi = 0, lo = 0
    if source_key(source, &hi, &lo) == 4:
        return 4, <uint32_t>lo
    return 6, (<object>hi << 64) | lo
