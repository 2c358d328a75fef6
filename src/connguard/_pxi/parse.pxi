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
    Important: the byte at ``p[n]`` must be readable and must end the text,
    being neither a digit nor '.': the terminating NUL of a str's data, or
    the byte after a prefix such as the '/' of a netblock. The parse then
    checks no length: it reads a byte only after the bytes before it were
    what a quad needs there, so it stops at ``p[n]`` at the latest.
    """
    if n < 7:                                    # "a.b.c.d" is the shortest
        return 0
    return _quad(p, out)


cdef inline Py_ssize_t _quad(const uint8_t* q, uint32_t* out) noexcept nogil:
    """The dotted quad at q, which a byte other than a digit or '.' ends; its length or 0."""
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


cdef int parse_ipv6(const uint8_t* p, Py_ssize_t n, uint64_t* hi, uint64_t* lo) noexcept nogil:
    """RFC 4291 text: up to 8 hex groups, one '::', an optional trailing IPv4;
    then the end of the text or a "%zone" (RFC 4007).

    Important: ``p[n]`` must be readable and must not be a hex digit, ':' or
    '.' (a str's terminating NUL, or the ']' after a bracketed address).
    Every group then ends by ``p[n]`` with no index checked against the
    length: a byte is read only after the one before it continued the
    address. Where the address ends, the text must end or a zone begin.
    """
    cdef uint16_t groups[8]
    cdef Py_ssize_t i = 0, start, quad
    cdef int count = 0, gap = -1, v, k
    cdef bint more = True
    cdef uint32_t value, v4
    if n < 2:
        return 0
    memset(groups, 0, sizeof(groups))            # fixed size: two stores, no call
    if p[0] == 58:                               # leading ':' must be '::'
        if p[1] != 58:
            return 0
        gap = 0
        i = 2
        more = _HEX_VALUE[p[2]] >= 0             # "::" may be all there is
    while more:
        if count == 8:
            return 0
        start = i
        v = _HEX_VALUE[p[i]]
        if v < 0:                                # an empty group: ":::", or ':' at the end
            return 0
        value = <uint32_t>v
        i += 1
        v = _HEX_VALUE[p[i]]
        if v >= 0:
            value = (value << 4) | <uint32_t>v
            i += 1
            v = _HEX_VALUE[p[i]]
            if v >= 0:
                value = (value << 4) | <uint32_t>v
                i += 1
                v = _HEX_VALUE[p[i]]
                if v >= 0:
                    value = (value << 4) | <uint32_t>v
                    i += 1
                    if _HEX_VALUE[p[i]] >= 0:    # a fifth digit
                        return 0
        if p[i] == 46:                           # '.': the group began a trailing IPv4
            if count > 6:
                return 0
            quad = parse_ipv4_head(p + start, n - start, &v4)
            if quad == 0:
                return 0
            i = start + quad
            groups[count] = <uint16_t>(v4 >> 16)
            groups[count + 1] = <uint16_t>(v4 & 0xFFFF)
            count += 2
            break
        groups[count] = <uint16_t>value
        count += 1
        if p[i] != 58:                           # the address ends here
            break
        i += 1
        if p[i] == 58:
            if gap >= 0:
                return 0
            gap = count
            i += 1
            more = _HEX_VALUE[p[i]] >= 0         # "::" may end the address
    # The address ends at i: valid only at the end of the text or before a zone.
    if i != n and not (p[i] == 37 and _valid_zone(p + i + 1, n - i - 1)):
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

    Important: ``p[n]`` must be readable and must not be a hex digit, ':'
    or '.', for the parsers read up to it without checking the length
    (parse_ipv4_head and parse_ipv6 say how): a str's data, whose
    terminating NUL is there, or a prefix of it such a byte ends, like the
    address before the '/' of a netblock.
    """
    cdef Py_ssize_t end
    cdef uint32_t v4
    if n == 0:
        return 0
    # "a.b.c.d" or "a.b.c.d:port": 7 bytes or more, a digit first and a '.'
    # one to three bytes on. Text such as "2001:db8::1" goes on to IPv6 at once.
    if _is_digit(p[0]) and n >= 7 and (p[1] == 46 or p[2] == 46 or p[3] == 46):
        end = parse_ipv4_head(p, n, &v4)
        if end == n or (end > 0 and p[end] == 58 and _valid_port(p + end + 1, n - end - 1)):
            hi[0] = 0
            lo[0] = _V4_TAG | v4
            return 4
        # Not IPv4, but IPv6 may start with a digit too: go on.
    return _parse_v6_fn(p, n, hi, lo)


cdef int _parse_v6_text(const uint8_t* p, Py_ssize_t n, uint64_t* hi, uint64_t* lo) noexcept nogil:
    """parse_source_bytes of text that is not IPv4."""
    cdef Py_ssize_t addr_start = 0, addr_end = n
    cdef const uint8_t* found
    if p[0] == 91:                               # "[v6]" or "[v6]:port"
        found = <const uint8_t*>memchr(p, 93, n)
        if found == NULL:
            return 0
        addr_start, addr_end = 1, found - p
        if addr_end + 1 < n and not (p[addr_end + 1] == 58
                                     and _valid_port(p + addr_end + 2, n - addr_end - 2)):
            return 0
    # parse_ipv6 takes a zone and rejects everything else, including text
    # with under two colons.
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
