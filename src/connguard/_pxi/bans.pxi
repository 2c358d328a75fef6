# Ban expiry per netblock (pairs with _core_py/bans.py). A ban is a bare
# Header: hdr.stamp holds the time the ban ends. connguard.BanManager sizes
# every shard to hold all its bans, so this table never evicts one: which
# ban makes room is the manager's decision alone.

cdef class BanTable(ShardedTable):
    """Ban expiry per netblock: the hot-path half of connguard.BanManager."""

    def __init__(self, *, uint64_t capacity, uint32_t shards, int ipv4_prefix,
                 int ipv6_prefix, object clock, uint64_t seed):
        self._setup(capacity, shards, sizeof(Header), ipv4_prefix, ipv6_prefix, clock, seed)

    @cython.binding(False)
    def is_banned(self, source, now=None):
        """Return True while the source's netblock is banned.

        ``source`` is an address, or netblock text as connguard writes it
        ("2001:db8::/64"), whose address part is keyed.
        """
        cdef uint64_t hi, lo
        netblock_key(self, source, &hi, &lo)
        return ban_active(self, hi, lo, self._now(now))

    def set_until(self, uint64_t hi, uint64_t lo, double until):
        """Ban a key until ``until``; False when the table had no room."""
        cdef uint64_t h = key_hash(hi, lo, self._seed)
        cdef Py_ssize_t i = h & self._shard_mask
        cdef bint stored
        shard_lock(self, i)
        stored = ban_set(&self._tables[i], hi, lo, h, until, self._seed)
        shard_unlock(self, i)
        return stored

    def clear(self, uint64_t hi, uint64_t lo):
        """Lift a key's ban; False when it had none."""
        cdef uint64_t h = key_hash(hi, lo, self._seed)
        cdef Py_ssize_t i = h & self._shard_mask
        cdef bint cleared
        shard_lock(self, i)
        cleared = table_delete(&self._tables[i], hi, lo, h, self._seed)
        shard_unlock(self, i)
        return cleared

    def until(self, uint64_t hi, uint64_t lo):
        """Return when a key's ban ends, or None when it has none."""
        cdef Header e
        return e.stamp if self._copy_entry(hi, lo, &e) else None

    def active(self, now=None):
        """Count the bans in force at ``now``."""
        cdef double t = self._now(now)
        cdef Py_ssize_t i, count = 0
        for i in range(self._shard_mask + 1):
            shard_lock(self, i)
            count += ban_count(&self._tables[i], t)
            shard_unlock(self, i)
        return count


cdef inline int netblock_key(BanTable bans, object source, uint64_t* hi, uint64_t* lo) except 0:
    """Key an address, or netblock text "addr/len" (only looked for when the text is
    not an address, so the hot path is source_key's); raise as source_key does."""
    cdef Py_ssize_t n, i
    cdef const uint8_t* p
    cdef const uint8_t* slash
    cdef int family = 0
    if not PyUnicode_Check(source):
        source = peer_host(source, "source")
    n = PyUnicode_GET_LENGTH(source)
    if 0 < n <= _MAX_SOURCE and PyUnicode_IS_ASCII(source):
        p = <const uint8_t*>PyUnicode_DATA(source)
        family = parse_source_bytes(p, n, hi, lo)
        if family == 0:
            slash = <const uint8_t*>memchr(p, 47, n)
            if slash != NULL and 1 <= n - (slash - p) - 1 <= 3:
                for i in range(slash - p + 1, n):
                    if not _is_digit(p[i]):
                        break
                else:
                    family = parse_source_bytes(p, slash - p, hi, lo)
    if family == 0:
        raise _bad_source(source)
    return netblock_mask(bans, family, hi, lo)


cdef bint ban_set(Table* self, uint64_t hi, uint64_t lo, uint64_t h, double until,
                  uint64_t seed) noexcept nogil:
    cdef Header* e = table_find(self, hi, lo, h)
    if e == NULL:
        e = table_insert(self, hi, lo, h, until, seed)
        if e == NULL:
            return False
    e.stamp = until
    return True


cdef Py_ssize_t ban_count(Table* self, double now) noexcept nogil:
    cdef uint32_t j
    cdef Py_ssize_t count = 0
    for j in range(self.n):
        if table_at(self, j).stamp > now:
            count += 1
    return count


cdef inline bint ban_active(BanTable bans, uint64_t hi, uint64_t lo, double t) noexcept:
    cdef uint64_t h = key_hash(hi, lo, bans._seed)
    cdef Py_ssize_t i = h & bans._shard_mask
    cdef Header* e
    cdef bint banned
    shard_lock(bans, i)
    e = table_find(&bans._tables[i], hi, lo, h)
    banned = e != NULL and e.stamp > t
    shard_unlock(bans, i)
    return banned
