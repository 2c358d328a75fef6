# cython: language_level=3, freethreading_compatible=True
"""Compiled core: address parsing, the sharded source table, destination classes.

_core_py.py mirrors this module name for name; a change here is a change there.

Locking (uvloop style, next to the data it guards):

* ``SourceTable._tables[i]`` -- one shard's entry array, index and counters --
  is guarded by ``SourceTable._shards[i].lock``.
* ``SourceTable`` configuration is written once in ``__init__`` and only read
  afterwards, so it needs no lock.
* Under a shard lock only plain C runs: no Python call, no allocation of a
  Python object, nothing that can raise. Parsing, the clock and argument
  conversion all happen before the lock is taken.
* On GIL builds the locked region cannot release the GIL (it never calls
  into Python), so the GIL already serialises it and the shard lock compiles
  away (``CG_SHARD_LOCKS`` is 0). On free-threaded builds it is a real lock.
"""

cimport cython
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.math cimport floor, isfinite
from libc.stdint cimport int8_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memchr, memcpy, memset

cdef extern from *:
    """
    #ifdef Py_GIL_DISABLED
    #define CG_SHARD_LOCKS 1
    #else
    #define CG_SHARD_LOCKS 0
    #endif

    /* Little-endian 64-bit load from any address. memcpy is how C spells an
       unaligned, alias-safe load; compilers turn it into one instruction. */
    static CYTHON_INLINE uint64_t cg_load_le64(const unsigned char *p) {
        uint64_t w;
        memcpy(&w, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
    #endif
        return w;
    }

    /* A counter that threads may bump at once: relaxed atomics on
       free-threaded builds; under the GIL a plain increment is already safe. */
    #if defined(Py_GIL_DISABLED) && defined(_MSC_VER)
    #include <intrin.h>
    #define CG_COUNT(p) ((void)_InterlockedIncrement64((volatile long long *)(p)))
    #elif defined(Py_GIL_DISABLED)
    #define CG_COUNT(p) ((void)__atomic_fetch_add((p), 1, __ATOMIC_RELAXED))
    #else
    #define CG_COUNT(p) ((void)(++*(p)))
    #endif

    /* The default clock, read without making a float. On Linux it is the
       coarse monotonic clock: same epoch as time.monotonic(), a resolution
       of a kernel tick (1-4 ms, ample for windows of seconds), and several
       times cheaper to read, which matters twice per connection. Elsewhere
       it is time.monotonic()'s clock. _core_py.default_clock is the same. */
    #if defined(__linux__)
    #include <time.h>
    #endif
    static CYTHON_INLINE double cg_monotonic(void) {
    #if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    #elif PY_VERSION_HEX >= 0x030D0000
        PyTime_t t = 0;
        (void)PyTime_MonotonicRaw(&t);
        return (double)t / 1e9;
    #else
        return (double)_PyTime_GetMonotonicClock() / 1e9;
    #endif
    }
    """
    const bint CG_SHARD_LOCKS
    double cg_monotonic() noexcept nogil
    void CG_COUNT(int64_t* counter) noexcept nogil
    uint64_t cg_load_le64(const uint8_t* p) noexcept nogil

cdef extern from "Python.h":
    enum: PyUnicode_1BYTE_KIND
    bint PyUnicode_Check(object) noexcept
    bint PyUnicode_IS_ASCII(object) noexcept
    void* PyUnicode_DATA(object) noexcept
    int PyUnicode_KIND(object) noexcept
    Py_ssize_t PyUnicode_GET_LENGTH(object) noexcept
    uint32_t PyUnicode_READ(int kind, void* data, Py_ssize_t i) noexcept nogil  # a code point as a number

# --- constants shared with _core_py -------------------------------------------

cdef enum:
    _MAX_CLASSES = 8           # "other" plus up to seven named destination classes
    _SAMPLES = 8               # sources sampled per eviction
    _MAX_SOURCE = 100          # longer text cannot be an address; rejected unread
    _FLOOD = 1                 # pattern bits; room for the destination patterns
    _RATE = 2
    _COUNT_MAX = 65535         # per-class counters saturate here

MAX_CLASSES = _MAX_CLASSES
MAX_SOURCE_LENGTH = _MAX_SOURCE
EVICTION_SAMPLES = _SAMPLES
PATTERN_BITS = {"conn_flood": _FLOOD, "conn_rate": _RATE, "spam_relay": 4,
                "port_scan": 8, "credential_stuffing": 16, "dns_tunnel": 32}
SKETCH_BITS = 64
TOP_BY = {"active": 0, "total": 1, "rate": 2, "flagged": 3}   # flagged: by rate, flagged only

cdef uint64_t _GOLDEN = 0x9E3779B97F4A7C15ULL
cdef uint64_t _V4_TAG = 0x0000FFFF00000000ULL   # IPv4 keys live in ::ffff:0:0/96
cdef uint64_t _PORT_SALT = 0x5BD1E9955BD1E995ULL
cdef uint64_t _FNV_OFFSET = 0xCBF29CE484222325ULL


cdef inline uint64_t fmix64(uint64_t h) noexcept nogil:
    """Finalise a 64-bit hash (murmur3's fmix64); unsigned overflow is defined."""
    h ^= h >> 33
    h *= 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    h *= 0xC4CEB9FE1A85EC53ULL
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


cdef inline uint32_t _digit(const uint8_t* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """The decimal digit at p[i], or a value > 9 when there is none."""
    return <uint32_t>p[i] - 48 if i < n else 10     # unsigned: bytes below '0' wrap high


cdef Py_ssize_t parse_ipv4_head(const uint8_t* p, Py_ssize_t n, uint32_t* out) noexcept nogil:
    """Parse a dotted quad at the start of p; return its length, or 0 if there is none.

    Strict: four decimal octets of one to three digits, no leading zeros.
    Each octet is read unrolled (one unsigned compare per character) since
    this runs twice for every IPv4 connection.
    """
    cdef Py_ssize_t i = 0
    cdef uint32_t acc = 0, octet, d
    cdef int part
    for part in range(4):
        octet = _digit(p, i, n)
        if octet > 9:
            return 0
        i += 1
        d = _digit(p, i, n)
        if d <= 9:
            if octet == 0:                       # "01" reads as octal elsewhere
                return 0
            octet = octet * 10 + d
            i += 1
            d = _digit(p, i, n)
            if d <= 9:
                octet = octet * 10 + d
                i += 1
                if octet > 255 or _digit(p, i, n) <= 9:
                    return 0
        acc = (acc << 8) | octet
        if part < 3:
            if i >= n or p[i] != 46:            # '.'
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
        # Slide the groups after '::' to the end and zero the gap.
        k = 7
        while count > gap:
            count -= 1
            groups[k] = groups[count]
            k -= 1
        while k >= gap:
            groups[k] = 0
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
    cdef Py_ssize_t end, addr_start = 0, addr_end = n, zone_at
    cdef const uint8_t* found
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


cdef object _bad_source(object source):
    text = source if len(source) <= 64 else source[:64] + "..."
    return ValueError(f"invalid source address: {text!r}")


cdef object _not_str(object value, str name):
    return TypeError(f"Argument '{name}' has incorrect type "
                     f"(expected str, got {type(value).__name__})")


cdef inline int source_key(object source, uint64_t* hi, uint64_t* lo) except 0:
    """Parse ``source`` or raise TypeError (not a str) or ValueError naming it."""
    cdef Py_ssize_t n
    cdef int family
    if not PyUnicode_Check(source):
        raise _not_str(source, "source")
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


def default_clock():
    """Read the default clock (coarse monotonic on Linux, else time.monotonic's)."""
    return cg_monotonic()


def parse_source(source):
    """Return ``(family, address)`` for a source; IPv4-mapped IPv6 folds to 4."""
    cdef uint64_t hi = 0, lo = 0
    if source_key(source, &hi, &lo) == 4:
        return 4, <uint32_t>lo
    return 6, (<object>hi << 64) | lo


# --- destinations -------------------------------------------------------------

cdef struct Destination:
    uint8_t cls          # index into the class table; 0 is "other"
    uint64_t host_bit    # one bit of the distinct-hosts sketch, 0 for none
    uint64_t port_bit    # one bit of the distinct-ports sketch, 0 for none


cdef inline uint64_t sketch_bit(uint64_t h) noexcept nogil:
    return (<uint64_t>1) << (fmix64(h) >> 58)


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


cdef uint64_t _text_hash(int kind, void* data, Py_ssize_t start, Py_ssize_t end,
                         uint64_t seed, bint fold_case) noexcept:
    """Hash text, ASCII case folded if asked (hosts are case-insensitive).

    Text stored one byte per character is read 8 bytes per step; wider text
    one code point per step. A host and its destination always share a
    storage kind (the rest of a destination is ASCII), so _core_py can choose
    the same way from the host alone.
    """
    cdef uint64_t h = seed ^ <uint64_t>(end - start)
    cdef uint64_t w
    cdef const uint8_t* p
    cdef uint8_t tail[8]
    cdef Py_ssize_t i
    cdef uint32_t c
    if kind == PyUnicode_1BYTE_KIND:
        p = <const uint8_t*>data + start
        i = end - start
        while i >= 8:
            w = cg_load_le64(p)
            h = _mix_word(h, _ascii_lower8(w) if fold_case else w)
            p += 8
            i -= 8
        if i:
            memset(tail, 0, 8)
            memcpy(tail, p, i)
            w = cg_load_le64(tail)
            h = _mix_word(h, _ascii_lower8(w) if fold_case else w)
        return h
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


cdef int classify(object destination, const uint8_t* port_class, Destination* d) except -1:
    """Fill ``d`` for a destination; unparsable text counts as class "other"."""
    cdef Py_ssize_t n, close_at, colon, host_start = 0, host_end
    cdef int kind, port = -1
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
    host_end = n                                 # unparsable: the whole text is the host
    if PyUnicode_READ(kind, data, 0) == 91:      # '[v6]' or '[v6]:port'
        close_at = _find(kind, data, 1, n, 93)
        if close_at > 1:
            if close_at == n - 1:
                host_start, host_end = 1, close_at
            elif PyUnicode_READ(kind, data, close_at + 1) == 58:
                port = _port_in(kind, data, close_at + 2, n)
                if port >= 0:
                    host_start, host_end = 1, close_at
    else:
        # "host:port" has exactly one ':'; a second one would sit in the port
        # text, which then fails as a port, so one search is enough.
        colon = _find(kind, data, 0, n, 58)
        if colon > 0:
            port = _port_in(kind, data, colon + 1, n)
            if port >= 0:
                host_end = colon
    d.host_bit = sketch_bit(_text_hash(kind, data, host_start, host_end, _FNV_OFFSET, True))
    if port >= 0:
        d.port_bit = sketch_bit(<uint64_t>port ^ _PORT_SALT)
        d.cls = port_class[port]
    return 0


# --- keyed tables -------------------------------------------------------------
# A Table holds entries of one type; every entry type starts with a Header,
# which is all the table itself reads (key, idleness, whether evictable).

cdef struct Header:
    uint64_t key_hi
    uint64_t key_lo
    double last_seen          # idleness: the smallest goes first on eviction
    uint32_t active           # > 0: never evicted
    uint8_t patterns          # PATTERN_BITS (source entries)
    uint8_t reported          # pattern bits already announced (logged once per pattern)
    uint8_t _pad[2]


cdef struct Entry:
    # A tracked source. 112 bytes; with the index (<= 10 bytes per entry) a
    # tracked source costs <= 122 bytes at full capacity.
    Header hdr                # hdr.last_seen also fixes the window bucket of cls_cur
    double first_seen
    uint64_t total
    uint16_t cls_cur[_MAX_CLASSES]    # accepts per class, current bucket (saturating)
    uint16_t cls_prev[_MAX_CLASSES]   # accepts per class, previous bucket
    uint64_t hosts_cur        # distinct-host sketches (linear counting)
    uint64_t hosts_prev
    uint64_t ports_cur        # distinct-port sketches
    uint64_t ports_prev


cdef struct Config:
    double window
    double rate_threshold     # accepts per second; +inf is off
    uint32_t concurrent_threshold


cdef inline double fast_floor(double x) noexcept nogil:
    """floor(x) without a libm call (baseline x86-64 has no rounding instruction).

    Exact: within +-2**53 every double converts to int64 exactly by
    truncation, and truncation is floor for x >= 0 and ceil for x < 0.
    """
    cdef int64_t i
    if -9007199254740992.0 < x < 9007199254740992.0:
        i = <int64_t>x
        return <double>(i - (i > x))
    return floor(x)                              # already an integer, or huge


cdef inline void roll(Entry* e, double now, double window) noexcept nogil:
    """Advance e's window buckets to ``now`` (now >= e.hdr.last_seen)."""
    cdef double gap
    if now == e.hdr.last_seen:         # common: the coarse clock ticks every few ms
        return
    gap = fast_floor(now / window) - fast_floor(e.hdr.last_seen / window)
    if gap == 0:
        return
    if gap == 1:
        memcpy(e.cls_prev, e.cls_cur, sizeof(e.cls_cur))
        e.hosts_prev = e.hosts_cur
        e.ports_prev = e.ports_cur
    else:
        memset(e.cls_prev, 0, sizeof(e.cls_prev))
        e.hosts_prev = 0
        e.ports_prev = 0
    memset(e.cls_cur, 0, sizeof(e.cls_cur))
    e.hosts_cur = 0
    e.ports_cur = 0


cdef inline double window_weight(double now, double window) noexcept nogil:
    """Weight of the previous bucket: the share of it still inside the window."""
    return 1.0 - (now / window - fast_floor(now / window))


cdef inline double accept_rate(Entry* e, double now, double window) noexcept nogil:
    cdef uint32_t cur = 0, prev = 0
    cdef int c
    for c in range(_MAX_CLASSES):
        cur += e.cls_cur[c]
        prev += e.cls_prev[c]
    return (cur + prev * window_weight(now, window)) / window


cdef struct Table:
    # One shard's open-addressing table and counters, guarded by its Shard's
    # lock. Entries are ``esize`` bytes each and start with a Header.
    char* entries             # dense: entries 0..n-1, swap-removed on eviction
    uint32_t esize
    uint32_t* index           # slot -> entry position + 1; 0 is an empty slot
    uint32_t index_mask
    uint32_t n
    uint32_t allocated        # entries has room for this many
    uint32_t capacity         # hard bound on n
    uint64_t rng              # xorshift64* state for eviction sampling
    int64_t active_connections
    uint32_t active_sources   # entries with hdr.active > 0: never evicted
    uint32_t flagged_sources  # entries with hdr.patterns != 0
    uint32_t flagged_by[8]    # entries with each PATTERN_BITS bit set
    uint64_t evictions
    uint64_t overflows


@cython.final
cdef class Shard:
    """The lock of one shard: a table's _tables[i] is guarded by _shards[i].lock.

    A scalar pymutex in its own small object: a C array of pymutex crashes on
    CPython < 3.13, where Cython backs each one with a PyThread lock.
    """

    cdef cython.pymutex lock


cdef inline Header* table_at(Table* self, uint32_t pos) noexcept nogil:
    return <Header*>(self.entries + <size_t>pos * self.esize)


cdef inline uint32_t table_home(Table* self, Header* e, uint64_t seed) noexcept nogil:
    return <uint32_t>(key_hash(e.key_hi, e.key_lo, seed) >> 8) & self.index_mask


cdef inline uint64_t table_next_random(Table* self) noexcept nogil:
    cdef uint64_t x = self.rng
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    self.rng = x
    return x * 0x2545F4914F6CDD1DULL


cdef inline Header* table_find(Table* self, uint64_t hi, uint64_t lo, uint64_t h) noexcept nogil:
    """Return the entry for a key, or NULL."""
    cdef uint32_t slot = <uint32_t>(h >> 8) & self.index_mask
    cdef uint32_t ix
    cdef Header* e
    if self.index == NULL:
        return NULL
    while True:
        ix = self.index[slot]
        if ix == 0:
            return NULL
        e = table_at(self, ix - 1)
        if e.key_lo == lo and e.key_hi == hi:
            return e
        slot = (slot + 1) & self.index_mask


cdef uint32_t table_slot_of(Table* self, uint32_t pos, uint64_t seed) noexcept nogil:
    """Return the index slot that points at entry ``pos``."""
    cdef uint32_t slot = table_home(self, table_at(self, pos), seed)
    while self.index[slot] != pos + 1:
        slot = (slot + 1) & self.index_mask
    return slot


cdef bint table_grow(Table* self, uint64_t seed) noexcept nogil:
    """Double the entry array (up to capacity) and rebuild the index.

    Plain libc allocation: safe under the lock (no Python), and a failure
    is reported to the caller, which counts it as an overflow.
    """
    cdef uint32_t want = self.allocated * 2 if self.allocated else 16
    cdef uint32_t slots = 8, i, slot
    cdef char* entries
    cdef uint32_t* index
    if want > self.capacity:
        want = self.capacity
    while slots < want + want // 4:          # load factor <= 0.8
        slots *= 2
    entries = <char*>realloc(self.entries, <size_t>want * self.esize)
    if entries == NULL:
        return False
    self.entries = entries
    index = <uint32_t*>calloc(slots, sizeof(uint32_t))
    if index == NULL:
        return False
    free(self.index)
    self.index = index
    self.index_mask = slots - 1
    self.allocated = want
    for i in range(self.n):
        slot = table_home(self, table_at(self, i), seed)
        while index[slot] != 0:
            slot = (slot + 1) & self.index_mask
        index[slot] = i + 1
    return True


cdef void table_remove(Table* self, uint32_t pos, uint64_t seed) noexcept nogil:
    """Drop entry ``pos``: backward-shift delete in the index, swap-remove."""
    cdef uint32_t hole = table_slot_of(self, pos, seed), j, home, last
    cdef uint32_t mask = self.index_mask
    j = hole
    while True:
        j = (j + 1) & mask
        if self.index[j] == 0:
            break
        home = table_home(self, table_at(self, self.index[j] - 1), seed)
        # Move j into the hole unless its home lies cyclically in (hole, j].
        if ((j - home) & mask) >= ((j - hole) & mask):
            self.index[hole] = self.index[j]
            hole = j
    self.index[hole] = 0
    self.n -= 1
    last = self.n
    if pos != last:
        self.index[table_slot_of(self, last, seed)] = pos + 1
        memcpy(table_at(self, pos), table_at(self, last), self.esize)


cdef bint table_evict_one(Table* self, uint64_t seed) noexcept nogil:
    """Evict the idlest of a few sampled entries that are not busy.

    When the samples are all busy, scan from a random point: an idle
    entry exists (checked first), so the scan ends, and it only runs
    when nearly every entry is busy.
    """
    cdef uint32_t _sample, i, best = 0
    cdef bint found = False
    cdef Header* e
    if self.n == 0 or self.active_sources >= self.n:
        return False
    for _sample in range(_SAMPLES):
        i = <uint32_t>(table_next_random(self) % self.n)
        e = table_at(self, i)
        if e.active == 0 and (not found or e.last_seen < table_at(self, best).last_seen):
            best = i
            found = True
    if not found:
        i = <uint32_t>(table_next_random(self) % self.n)
        while table_at(self, i).active != 0:
            i = (i + 1) % self.n
        best = i
    table_flags_changed(self, table_at(self, best).patterns, 0)
    table_remove(self, best, seed)
    self.evictions += 1
    return True


cdef void table_flags_changed(Table* self, uint8_t before, uint8_t after) noexcept nogil:
    """Keep flagged_sources and flagged_by in step with one entry's pattern bits."""
    cdef int bit
    if (before == 0) != (after == 0):
        self.flagged_sources += 1 if before == 0 else -1
    for bit in range(8):
        if (before ^ after) & (1 << bit):
            self.flagged_by[bit] += 1 if after & (1 << bit) else -1


cdef Header* table_insert(Table* self, uint64_t hi, uint64_t lo, uint64_t h, double now,
                          uint64_t seed) noexcept nogil:
    """Add a zeroed entry for a new key; NULL (an overflow) when there is no room."""
    cdef uint32_t slot, pos
    cdef Header* e
    if self.n >= self.capacity and not table_evict_one(self, seed):
        self.overflows += 1
        return NULL
    if self.n >= self.allocated and not table_grow(self, seed):
        self.overflows += 1
        return NULL
    pos = self.n
    self.n += 1
    e = table_at(self, pos)
    memset(e, 0, self.esize)
    e.key_hi = hi
    e.key_lo = lo
    e.last_seen = now
    slot = <uint32_t>(h >> 8) & self.index_mask
    while self.index[slot] != 0:
        slot = (slot + 1) & self.index_mask
    self.index[slot] = pos + 1
    return e


cdef int table_accept(Table* self, uint64_t hi, uint64_t lo, uint64_t h, Destination* d,
                      double now, const Config* cfg, uint64_t seed) noexcept nogil:
    """Count one accepted connection; 0 when there was no room, else 1, plus
    (bits << 8) for patterns raised on this source for the first time."""
    cdef uint8_t fresh
    cdef Entry* e = <Entry*>table_find(self, hi, lo, h)
    cdef uint8_t before
    if e == NULL:
        e = <Entry*>table_insert(self, hi, lo, h, now, seed)
        if e == NULL:
            return 0
        e.first_seen = now
    else:
        if now < e.hdr.last_seen:                # time never runs back per source
            now = e.hdr.last_seen
        roll(e, now, cfg.window)
        e.hdr.last_seen = now
    before = e.hdr.patterns
    e.hdr.active += 1
    if e.hdr.active == 1:
        self.active_sources += 1
    self.active_connections += 1
    e.total += 1
    if e.cls_cur[d.cls] < _COUNT_MAX:
        e.cls_cur[d.cls] += 1
    e.hosts_cur |= d.host_bit
    e.ports_cur |= d.port_bit
    if e.hdr.active >= cfg.concurrent_threshold:
        e.hdr.patterns |= _FLOOD
    update_rate_flag(e, now, cfg)
    if before != e.hdr.patterns:
        table_flags_changed(self, before, e.hdr.patterns)
    fresh = e.hdr.patterns & ~e.hdr.reported
    e.hdr.reported |= fresh
    return 1 | (fresh << 8)


cdef bint table_close(Table* self, uint64_t hi, uint64_t lo, uint64_t h, double now,
                      const Config* cfg) noexcept nogil:
    """Count one closed connection; an unknown or idle source is a no-op."""
    cdef Entry* e = <Entry*>table_find(self, hi, lo, h)
    cdef uint8_t before
    if e == NULL or e.hdr.active == 0:
        return False
    if now < e.hdr.last_seen:
        now = e.hdr.last_seen
    roll(e, now, cfg.window)
    e.hdr.last_seen = now
    before = e.hdr.patterns
    e.hdr.active -= 1
    self.active_connections -= 1
    if e.hdr.active == 0:
        self.active_sources -= 1
        e.hdr.patterns &= ~_FLOOD
    update_rate_flag(e, now, cfg)
    if before != e.hdr.patterns:
        table_flags_changed(self, before, e.hdr.patterns)
    return True


cdef bint table_copy(Table* self, uint64_t hi, uint64_t lo, uint64_t h, void* out) noexcept nogil:
    """Copy the entry for a key into ``out``; False when there is none."""
    cdef Header* e = table_find(self, hi, lo, h)
    if e == NULL:
        return False
    memcpy(out, e, self.esize)
    return True


cdef inline void update_rate_flag(Entry* e, double now, const Config* cfg) noexcept nogil:
    # rate_threshold is +inf when the pattern is off: skip the windowed sum.
    if isfinite(cfg.rate_threshold) and accept_rate(e, now, cfg.window) > cfg.rate_threshold:
        e.hdr.patterns |= _RATE
    else:
        e.hdr.patterns &= ~_RATE


cdef struct Ranked:
    double score
    uint64_t key_hi
    uint64_t key_lo


cdef int _compare_ranked(const void* a, const void* b) noexcept nogil:
    """Order by score, highest first, then by key: the same total order as _core_py."""
    cdef const Ranked* x = <const Ranked*>a
    cdef const Ranked* y = <const Ranked*>b
    if x.score != y.score:
        return -1 if x.score > y.score else 1
    if x.key_hi != y.key_hi:
        return -1 if x.key_hi < y.key_hi else 1
    if x.key_lo != y.key_lo:
        return -1 if x.key_lo < y.key_lo else 1
    return 0


cdef class ShardedTable:
    """Sharded, bounded tables of one entry type, keyed by netblock or text.

    Shared by SourceTable, BanTable and BucketTable: the shards and their
    locks, the clock, source-address keys, and the aggregate counters.
    """

    # Written once in _setup, read-only afterwards (no lock needed); the
    # contents of _tables[i] are guarded by _shards[i].lock.
    cdef tuple _shards        # Shard objects: the locks
    cdef Table* _tables       # one per shard, in C memory: no refcounting on the hot path
    cdef uint64_t _shard_mask
    cdef uint64_t _seed
    cdef uint64_t _mask_hi
    cdef uint64_t _mask_lo
    cdef uint32_t _mask_v4
    cdef object _clock

    cdef int _setup(self, uint64_t capacity, uint32_t shards, uint32_t esize, int ipv4_prefix,
                    int ipv6_prefix, object clock, uint64_t seed) except -1:
        cdef uint32_t i
        if self._shards is not None:
            raise RuntimeError(f"{type(self).__name__} is already initialised")
        if shards == 0 or shards & (shards - 1) or capacity < shards:
            raise ValueError("shards must be a power of two no larger than capacity")
        self._seed = seed
        self._mask_v4 = 0 if ipv4_prefix <= 0 else (~<uint32_t>0) << (32 - min(ipv4_prefix, 32))
        self._mask_hi = _prefix_mask(ipv6_prefix)
        self._mask_lo = _prefix_mask(ipv6_prefix - 64)
        self._clock = clock
        self._tables = <Table*>calloc(shards, sizeof(Table))
        if self._tables == NULL:
            raise MemoryError()
        for i in range(shards):
            # Spread the remainder so the shard capacities sum to capacity.
            self._tables[i].capacity = <uint32_t>(capacity // shards + (1 if i < capacity % shards else 0))
            self._tables[i].rng = fmix64(seed + i + 1) | 1
            self._tables[i].esize = esize
        self._shard_mask = shards - 1
        self._shards = tuple([Shard() for _ in range(shards)])
        return 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self._tables != NULL:
            for i in range(self._shard_mask + 1):
                free(self._tables[i].entries)
                free(self._tables[i].index)
            free(self._tables)

    cdef inline double _now(self, object now) except? -1.0:
        cdef double t
        if now is None:
            if self._clock is None:
                return cg_monotonic()
            now = self._clock()
        t = now
        if not isfinite(t):
            raise ValueError(f"now must be a finite number of seconds, got {now!r}")
        return t

    cdef inline Shard _lock_of(self, Py_ssize_t i):
        # _shards keeps every Shard alive as long as this table.
        return <Shard>PyTuple_GET_ITEM(self._shards, i)

    cdef inline int _key(self, object source, uint64_t* hi, uint64_t* lo) except 0:
        cdef int family = source_key(source, hi, lo)
        if family == 4:
            lo[0] = _V4_TAG | (lo[0] & self._mask_v4)
        else:
            hi[0] &= self._mask_hi
            lo[0] &= self._mask_lo
        return family

    def source_key(self, source):
        """Return ``(family, hi, lo)``: the masked netblock key of a source."""
        cdef uint64_t hi, lo
        family = self._key(source, &hi, &lo)
        return family, hi, lo

    cdef bint _copy_entry(self, uint64_t hi, uint64_t lo, void* out) noexcept:
        """Copy a key's entry into ``out`` under its shard's lock; False when absent."""
        cdef uint64_t h = key_hash(hi, lo, self._seed)
        cdef Py_ssize_t i = h & self._shard_mask
        cdef bint found
        if CG_SHARD_LOCKS:
            with self._lock_of(i).lock:
                found = table_copy(&self._tables[i], hi, lo, h, out)
        else:
            found = table_copy(&self._tables[i], hi, lo, h, out)
        return found

    def counters(self):
        """Return (active_connections, active_sources, tracked_sources,
        flagged_sources, evictions, overflows), summed over the shards."""
        cdef int64_t sums[6]
        cdef Py_ssize_t i
        memset(sums, 0, sizeof(sums))
        for i in range(self._shard_mask + 1):
            if CG_SHARD_LOCKS:
                with self._lock_of(i).lock:
                    _add_counters(&self._tables[i], sums)
            else:
                _add_counters(&self._tables[i], sums)
        return tuple([sums[i] for i in range(6)])

    def flagged_by(self):
        """Return how many entries have each pattern bit set (PATTERN_BITS order)."""
        cdef int64_t sums[8]
        cdef Py_ssize_t i
        cdef int bit
        memset(sums, 0, sizeof(sums))
        for i in range(self._shard_mask + 1):
            if CG_SHARD_LOCKS:
                with self._lock_of(i).lock:
                    for bit in range(8):
                        sums[bit] += self._tables[i].flagged_by[bit]
            else:
                for bit in range(8):
                    sums[bit] += self._tables[i].flagged_by[bit]
        return tuple([sums[bit] for bit in range(len(PATTERN_BITS))])

    def memory_bytes(self):
        """Return the bytes this table holds: C tables and shard objects."""
        cdef uint64_t total = (self._shard_mask + 1) * sizeof(Table)
        cdef Py_ssize_t i
        for i in range(self._shard_mask + 1):
            if CG_SHARD_LOCKS:
                with self._lock_of(i).lock:
                    total += table_bytes(&self._tables[i])
            else:
                total += table_bytes(&self._tables[i])
            total += self._shards[i].__sizeof__()
        return total

    @property
    def capacity(self):
        """The hard bound on entries."""
        cdef uint64_t total = 0
        cdef Py_ssize_t i
        for i in range(self._shard_mask + 1):
            total += self._tables[i].capacity   # written once in _setup
        return total

    @property
    def shards(self):
        return len(self._shards)


cdef class SourceTable(ShardedTable):
    """Per-source connection counts in sharded, bounded hash tables.

    The public face is connguard.Tracker, which validates arguments and
    turns the raw tuples returned here into SourceStats.
    """

    # Written once in __init__, read-only afterwards.
    cdef Config _cfg
    cdef bint _deny
    cdef uint8_t* _port_class

    def __init__(self, *, uint64_t capacity, uint32_t shards, double window,
                 uint32_t concurrent_threshold, double rate_threshold,
                 int ipv4_prefix, int ipv6_prefix, bint deny,
                 bytes port_classes not None, object clock, uint64_t seed):
        if len(port_classes) != 65536 or max(port_classes) >= _MAX_CLASSES:
            raise ValueError("port_classes must map all 65536 ports to a class id")
        self._setup(capacity, shards, sizeof(Entry), ipv4_prefix, ipv6_prefix, clock, seed)
        self._port_class = <uint8_t*>malloc(65536)
        if self._port_class == NULL:
            raise MemoryError()
        memcpy(self._port_class, <const char*>port_classes, 65536)
        self._cfg.window = window
        self._cfg.rate_threshold = rate_threshold
        self._cfg.concurrent_threshold = concurrent_threshold
        self._deny = deny

    def __dealloc__(self):
        free(self._port_class)

    # binding=False: a plain method descriptor, called through CPython's own
    # vectorcall, skips the CyFunction dispatch layer on the hot path.
    @cython.binding(False)
    def accept(self, source, destination="", now=None):
        """Count an accepted connection; False only when overflow="deny" refuses it."""
        cdef uint64_t hi, lo
        cdef Destination d
        cdef int result
        self._key(source, &hi, &lo)
        classify(destination, self._port_class, &d)
        cdef double t = self._now(now)
        result = tracker_accept(self, hi, lo, &d, t)
        return result != 0 or not self._deny

    @cython.binding(False)
    def close(self, source, now=None):
        """Count a closed connection; return False when there was none to close."""
        return tracker_close(self, source, now)

    def stats_raw(self, uint64_t hi, uint64_t lo, now=None):
        """Return one source's raw counters, windows advanced to ``now``, or None."""
        cdef double t = self._now(now)
        cdef Entry e
        return _raw(&e, t, self._cfg.window) if self._copy_entry(hi, lo, &e) else None

    def top_raw(self, Py_ssize_t n, int by, now=None):
        """Return the raw counters of the n highest-ranked sources."""
        cdef double t = self._now(now)
        cdef Py_ssize_t filled = 0, i
        cdef Ranked* ranked = <Ranked*>malloc(max(self.capacity, 1) * sizeof(Ranked))
        if ranked == NULL:
            raise MemoryError()
        try:
            for i in range(self._shard_mask + 1):
                if CG_SHARD_LOCKS:
                    with self._lock_of(i).lock:
                        filled = _rank_table(&self._tables[i], ranked, filled, by, t, self._cfg.window)
                else:
                    filled = _rank_table(&self._tables[i], ranked, filled, by, t, self._cfg.window)
            qsort(ranked, filled, sizeof(Ranked), _compare_ranked)
            result = []
            for i in range(min(n, filled)):
                raw = self.stats_raw(ranked[i].key_hi, ranked[i].key_lo, t)
                if raw is not None:              # evicted between the two passes
                    result.append(raw)
            return result
        finally:
            free(ranked)

    def memory_bytes(self):
        """Return the bytes this table holds: C tables, port classes, shard objects."""
        return ShardedTable.memory_bytes(self) + 65536


# --- bans ---------------------------------------------------------------------
# A ban is a bare Header: hdr.last_seen holds the time the ban ends, so the
# sampled eviction of a full table drops the ban that ends soonest.

cdef class BanTable(ShardedTable):
    """Ban expiry per netblock: the hot-path half of connguard.BanManager."""

    def __init__(self, *, uint64_t capacity, uint32_t shards, int ipv4_prefix,
                 int ipv6_prefix, object clock, uint64_t seed):
        self._setup(capacity, shards, sizeof(Header), ipv4_prefix, ipv6_prefix, clock, seed)

    @cython.binding(False)
    def is_banned(self, source, now=None):
        """Return True while the source's netblock is banned."""
        cdef uint64_t hi, lo
        self._key(source, &hi, &lo)
        return ban_active(self, hi, lo, self._now(now))

    def set_until(self, uint64_t hi, uint64_t lo, double until):
        """Ban a key until ``until``; False when the table had no room."""
        cdef uint64_t h = key_hash(hi, lo, self._seed)
        cdef Py_ssize_t i = h & self._shard_mask
        cdef bint stored
        if CG_SHARD_LOCKS:
            with self._lock_of(i).lock:
                stored = ban_set(&self._tables[i], hi, lo, h, until, self._seed)
        else:
            stored = ban_set(&self._tables[i], hi, lo, h, until, self._seed)
        return stored

    def clear(self, uint64_t hi, uint64_t lo):
        """Lift a key's ban; False when it had none."""
        cdef uint64_t h = key_hash(hi, lo, self._seed)
        cdef Py_ssize_t i = h & self._shard_mask
        cdef bint cleared
        if CG_SHARD_LOCKS:
            with self._lock_of(i).lock:
                cleared = table_delete(&self._tables[i], hi, lo, h, self._seed)
        else:
            cleared = table_delete(&self._tables[i], hi, lo, h, self._seed)
        return cleared

    def until(self, uint64_t hi, uint64_t lo):
        """Return when a key's ban ends, or None when it has none."""
        cdef Header e
        return e.last_seen if self._copy_entry(hi, lo, &e) else None

    def active(self, now=None):
        """Count the bans in force at ``now``."""
        cdef double t = self._now(now)
        cdef Py_ssize_t i, count = 0
        for i in range(self._shard_mask + 1):
            if CG_SHARD_LOCKS:
                with self._lock_of(i).lock:
                    count += ban_count(&self._tables[i], t)
            else:
                count += ban_count(&self._tables[i], t)
        return count


cdef bint ban_set(Table* self, uint64_t hi, uint64_t lo, uint64_t h, double until,
                  uint64_t seed) noexcept nogil:
    cdef Header* e = table_find(self, hi, lo, h)
    if e == NULL:
        e = table_insert(self, hi, lo, h, until, seed)
        if e == NULL:
            return False
    e.last_seen = until
    return True


cdef Py_ssize_t ban_count(Table* self, double now) noexcept nogil:
    cdef uint32_t j
    cdef Py_ssize_t count = 0
    for j in range(self.n):
        if table_at(self, j).last_seen > now:
            count += 1
    return count


cdef bint table_delete(Table* self, uint64_t hi, uint64_t lo, uint64_t h, uint64_t seed) noexcept nogil:
    """Remove a key's entry; False when there is none."""
    cdef Header* e = table_find(self, hi, lo, h)
    if e == NULL:
        return False
    table_remove(self, <uint32_t>((<char*>e - self.entries) // self.esize), seed)
    return True


# --- rate limiting ------------------------------------------------------------

cdef struct Bucket:
    Header hdr                # hdr.last_seen: when the tokens were last refilled
    double tokens
    double last_violation
    uint32_t violations       # denied requests in the current violation window
    uint32_t _pad


cdef struct LimitConfig:
    double rate               # tokens per second
    double burst              # bucket size; a new key starts full
    double violation_window   # the count restarts after this long without one
    uint32_t warn_after       # violations up to this many are warnings
    uint32_t abuse_after      # from this many on, rate_limit_abuse


cdef enum:
    TAKE_ALLOWED = 0
    TAKE_WARNING = 1
    TAKE_VIOLATION = 2
    TAKE_ABUSE = 3


cdef int bucket_take(Table* self, uint64_t hi, uint64_t lo, uint64_t h, double now,
                     const LimitConfig* cfg, uint64_t seed, uint32_t* violations) noexcept nogil:
    """Spend one token; return TAKE_ALLOWED or the escalation level of the denial.

    ``violations`` receives the key's count of denials in the current window.
    """
    cdef Bucket* b = <Bucket*>table_find(self, hi, lo, h)
    cdef double tokens
    violations[0] = 0
    if b == NULL:
        b = <Bucket*>table_insert(self, hi, lo, h, now, seed)
        if b == NULL:                            # out of memory: allow, counted as overflow
            return TAKE_ALLOWED
        b.tokens = cfg.burst
    elif now > b.hdr.last_seen:                  # time never runs back per key
        tokens = b.tokens + (now - b.hdr.last_seen) * cfg.rate
        b.tokens = cfg.burst if tokens > cfg.burst else tokens
        b.hdr.last_seen = now
    if b.tokens >= 1.0:
        b.tokens -= 1.0
        return TAKE_ALLOWED
    if b.violations and now - b.last_violation > cfg.violation_window:
        b.violations = 0
    if b.violations < 0xFFFFFFFFU:
        b.violations += 1
    b.last_violation = now
    violations[0] = b.violations
    if b.violations <= cfg.warn_after:
        return TAKE_WARNING
    if b.violations < cfg.abuse_after:
        return TAKE_VIOLATION
    return TAKE_ABUSE


cdef class BucketTable(ShardedTable):
    """Token buckets per key with escalating violations: connguard.RateLimiter's core."""

    cdef LimitConfig _cfg     # written once in __init__

    def __init__(self, *, uint64_t capacity, uint32_t shards, double rate, double burst,
                 uint32_t warn_after, uint32_t abuse_after, double violation_window,
                 object clock, uint64_t seed):
        self._setup(capacity, shards, sizeof(Bucket), 32, 128, clock, seed)
        self._cfg.rate = rate
        self._cfg.burst = burst
        self._cfg.warn_after = warn_after
        self._cfg.abuse_after = abuse_after
        self._cfg.violation_window = violation_window

    cdef inline int _bucket_key(self, object key, uint64_t* hi, uint64_t* lo) except -1:
        cdef Py_ssize_t n
        if not PyUnicode_Check(key):
            raise _not_str(key, "key")
        n = PyUnicode_GET_LENGTH(key)
        # Two independent 64-bit hashes: a 128-bit key, so distinct keys
        # never share a bucket in practice, and no key text is stored.
        hi[0] = _text_hash(PyUnicode_KIND(key), PyUnicode_DATA(key), 0, n,
                           self._seed ^ _GOLDEN, False)
        lo[0] = _text_hash(PyUnicode_KIND(key), PyUnicode_DATA(key), 0, n,
                           self._seed ^ _PORT_SALT, False)
        return 0

    cdef inline int _take(self, object key, object now) except -1:
        cdef uint64_t hi, lo
        cdef uint32_t violations
        self._bucket_key(key, &hi, &lo)
        return limit_take(self, hi, lo, self._now(now), &violations)

    @cython.binding(False)
    def allow(self, key, now=None):
        """Spend a token for ``key``; True when one was there."""
        return self._take(key, now) == TAKE_ALLOWED

    @cython.binding(False)
    def take(self, key, now=None):
        """Spend a token for ``key``; 0 allowed, else 1 warning, 2 violation, 3 abuse."""
        return self._take(key, now)

    def state(self, key, now=None):
        """Return ``(tokens, violations)`` for a key as of its last request, or None."""
        cdef uint64_t hi, lo
        cdef Bucket b
        self._bucket_key(key, &hi, &lo)
        return (b.tokens, b.violations) if self._copy_entry(hi, lo, &b) else None


# --- the guard ----------------------------------------------------------------

cdef enum:
    REASON_NONE = 0
    REASON_BANNED = 1
    REASON_OVERFLOW = 2
    REASON_LIMIT = 3
    VERDICT_REFUSED = 4           # added to a reason: the connection was refused

cdef uint64_t _LIMIT_SALT = 0xA0761D6478BD642FULL   # netblock keys apart from text keys


cdef class GuardTable:
    """One call per accepted connection: the ban table, the limiter, the tracker.

    The address is parsed once, with the tracker's prefixes (the Guard makes
    the ban table's match); each table's shard lock is taken in turn, never
    two at once. connguard.Guard is the public face.
    """

    # Written once in __init__, read-only afterwards.
    cdef SourceTable _tracker
    cdef BanTable _bans           # may be None
    cdef BucketTable _limiter     # may be None
    cdef bint _enforce
    cdef tuple _verdicts          # indexed by reason + VERDICT_REFUSED if refused
    cdef object _on_limit         # called (source, level) when a source first reaches a level
    cdef object _on_flag          # called (source, bits) when patterns are first raised
    cdef int64_t _counts[8]       # verdicts returned, by index; bumped with CG_COUNT

    def __init__(self, *, SourceTable tracker not None, BanTable bans, BucketTable limiter,
                 bint enforce, tuple verdicts not None, object on_limit, object on_flag):
        if len(verdicts) != 8:
            raise ValueError("verdicts must hold 8 entries")
        self._tracker = tracker
        self._bans = bans
        self._limiter = limiter
        self._enforce = enforce
        self._verdicts = verdicts
        self._on_limit = on_limit
        self._on_flag = on_flag

    @cython.binding(False)
    def accept(self, source, destination="", now=None):
        """Check and count an accepted connection; return its verdict."""
        cdef int code = self._decide(source, destination, now)
        CG_COUNT(&self._counts[code])
        return self._verdicts[code]

    cdef int _decide(self, object source, object destination, object now) except -1:
        cdef uint64_t hi, lo
        cdef Destination d
        cdef int reason = REASON_NONE, level = TAKE_ALLOWED, counted
        cdef uint32_t violations = 0
        cdef SourceTable tracker = self._tracker
        tracker._key(source, &hi, &lo)
        classify(destination, tracker._port_class, &d)
        cdef double t = tracker._now(now)
        if self._bans is not None and ban_active(self._bans, hi, lo, t):
            if self._enforce:
                return REASON_BANNED + VERDICT_REFUSED
            reason = REASON_BANNED
        if self._limiter is not None:
            level = limit_take(self._limiter, hi ^ _LIMIT_SALT, lo, t, &violations)
            if level != TAKE_ALLOWED:
                if self._on_limit is not None and (
                        (level == TAKE_VIOLATION and violations == self._limiter._cfg.warn_after + 1)
                        or (level == TAKE_ABUSE and violations == self._limiter._cfg.abuse_after)):
                    self._on_limit(source, level)   # no lock is held here
                if self._enforce:
                    return (reason or REASON_LIMIT) + VERDICT_REFUSED
                if reason == REASON_NONE:
                    reason = REASON_LIMIT
        counted = tracker_accept(tracker, hi, lo, &d, t)
        if counted == 0 and tracker._deny:
            return (reason or REASON_OVERFLOW) + VERDICT_REFUSED
        if counted >> 8 and self._on_flag is not None:
            self._on_flag(source, counted >> 8)      # no lock is held here
        return reason

    def verdict_counts(self):
        """Return how many times each verdict was returned, by verdict index."""
        return tuple([self._counts[i] for i in range(8)])

    @cython.binding(False)
    def close(self, source, now=None):
        """Count a closed connection; return False when there was none to close."""
        return tracker_close(self._tracker, source, now)


cdef inline bint ban_active(BanTable bans, uint64_t hi, uint64_t lo, double t) noexcept:
    cdef uint64_t h = key_hash(hi, lo, bans._seed)
    cdef Py_ssize_t i = h & bans._shard_mask
    cdef Header* e
    cdef bint banned
    if CG_SHARD_LOCKS:
        with bans._lock_of(i).lock:
            e = table_find(&bans._tables[i], hi, lo, h)
            banned = e != NULL and e.last_seen > t
    else:
        e = table_find(&bans._tables[i], hi, lo, h)
        banned = e != NULL and e.last_seen > t
    return banned


cdef inline int limit_take(BucketTable limiter, uint64_t hi, uint64_t lo, double t,
                           uint32_t* violations) noexcept:
    cdef uint64_t h = key_hash(hi, lo, limiter._seed)
    cdef Py_ssize_t i = h & limiter._shard_mask
    cdef int code
    if CG_SHARD_LOCKS:
        with limiter._lock_of(i).lock:
            code = bucket_take(&limiter._tables[i], hi, lo, h, t, &limiter._cfg, limiter._seed, violations)
    else:
        code = bucket_take(&limiter._tables[i], hi, lo, h, t, &limiter._cfg, limiter._seed, violations)
    return code


cdef inline bint tracker_close(SourceTable tracker, object source, object now) except -1:
    cdef uint64_t hi, lo
    tracker._key(source, &hi, &lo)
    cdef double t = tracker._now(now)
    cdef uint64_t h = key_hash(hi, lo, tracker._seed)
    cdef Py_ssize_t i = h & tracker._shard_mask
    cdef bint closed
    if CG_SHARD_LOCKS:
        with tracker._lock_of(i).lock:
            closed = table_close(&tracker._tables[i], hi, lo, h, t, &tracker._cfg)
    else:
        closed = table_close(&tracker._tables[i], hi, lo, h, t, &tracker._cfg)
    return closed


cdef inline int tracker_accept(SourceTable tracker, uint64_t hi, uint64_t lo, Destination* d,
                               double t) noexcept:
    cdef uint64_t h = key_hash(hi, lo, tracker._seed)
    cdef Py_ssize_t i = h & tracker._shard_mask
    cdef int result
    if CG_SHARD_LOCKS:
        with tracker._lock_of(i).lock:
            result = table_accept(&tracker._tables[i], hi, lo, h, d, t, &tracker._cfg, tracker._seed)
    else:
        result = table_accept(&tracker._tables[i], hi, lo, h, d, t, &tracker._cfg, tracker._seed)
    return result


cdef uint64_t _prefix_mask(int bits) noexcept:
    """Mask of the top ``bits`` bits of a 64-bit word (clamped to 0..64)."""
    if bits <= 0:
        return 0
    if bits >= 64:
        return 0xFFFFFFFFFFFFFFFFULL
    return ~((<uint64_t>1 << (64 - bits)) - 1)


cdef uint64_t table_bytes(Table* self) noexcept nogil:
    """Bytes held by one table's entry array and index."""
    if self.index == NULL:
        return 0
    return <uint64_t>self.allocated * self.esize + (self.index_mask + 1) * sizeof(uint32_t)


cdef void _add_counters(Table* s, int64_t* sums) noexcept nogil:
    sums[0] += s.active_connections
    sums[1] += s.active_sources
    sums[2] += s.n
    sums[3] += s.flagged_sources
    sums[4] += <int64_t>s.evictions
    sums[5] += <int64_t>s.overflows


cdef Py_ssize_t _rank_table(Table* s, Ranked* out, Py_ssize_t filled, int by,
                            double now, double window) noexcept nogil:
    cdef uint32_t j
    cdef Entry e
    cdef Entry* entry
    cdef double t
    for j in range(s.n):
        entry = <Entry*>table_at(s, j)
        if by == 3 and entry.hdr.patterns == 0:
            continue
        out[filled].key_hi = entry.hdr.key_hi
        out[filled].key_lo = entry.hdr.key_lo
        if by == 0:
            out[filled].score = entry.hdr.active
        elif by == 1:
            out[filled].score = <double>entry.total
        else:
            e = entry[0]                         # a copy: ranking never mutates
            t = now if now > e.hdr.last_seen else e.hdr.last_seen
            roll(&e, t, window)
            out[filled].score = accept_rate(&e, t, window)
        filled += 1
    return filled


cdef tuple _raw(Entry* e, double now, double window):
    """Pack a copied entry, advanced to ``now``, for the Python side."""
    if now < e.hdr.last_seen:
        now = e.hdr.last_seen
    roll(e, now, window)
    return (e.hdr.key_hi, e.hdr.key_lo, e.hdr.active, e.total, e.first_seen, e.hdr.last_seen,
            e.hdr.patterns, now,
            tuple([e.cls_cur[c] for c in range(_MAX_CLASSES)]),
            tuple([e.cls_prev[c] for c in range(_MAX_CLASSES)]),
            e.hosts_cur, e.hosts_prev, e.ports_cur, e.ports_prev)


# The memory bar (<= 128 bytes per tracked source) is budgeted on this size.
assert sizeof(Entry) == 112, sizeof(Entry)
