# The source table: per-source counts, windows and patterns (pairs with
# _core_py/sources.py).

cdef struct Entry:
    # A tracked source. 112 bytes; with the index (<= 10 bytes per entry) a
    # tracked source costs <= 122 bytes at full capacity.
    Header hdr                # hdr.stamp: last seen; also fixes the window bucket of cls_cur
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
    bint deny                 # no room: refuse (else count open, untracked)


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
    """Advance e's window buckets to ``now`` (now >= e.hdr.stamp)."""
    cdef double gap
    if now == e.hdr.stamp:         # common: the coarse clock ticks every few ms
        return
    gap = fast_floor(now / window) - fast_floor(e.hdr.stamp / window)
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


cdef inline double advance(Entry* e, double now, double window) noexcept nogil:
    """Move e to ``now``; return the time its update counts at.

    Time never runs back for a source: a step back of up to one window
    (events out of order) counts at the source's last-seen time. A longer
    step back means the clock was reset, or an earlier timestamp was far in
    the future: the source's window starts again at ``now``, so one bad
    timestamp cannot freeze it.
    """
    if now < e.hdr.stamp:
        if e.hdr.stamp - now <= window:
            return e.hdr.stamp
        memset(e.cls_prev, 0, sizeof(e.cls_prev))
        memset(e.cls_cur, 0, sizeof(e.cls_cur))
        e.hosts_cur = e.hosts_prev = e.ports_cur = e.ports_prev = 0
        e.hdr.stamp = now
        return now
    roll(e, now, window)
    e.hdr.stamp = now
    return now


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
            if not cfg.deny:
                table_open_untracked(self, hi, lo)
            return 0
        e.first_seen = now
    elif e.hdr.active == _MAX_ACTIVE:            # saturated: counted open, untracked
        self.overflows += 1
        if not cfg.deny:
            table_open_untracked(self, hi, lo)
        return 0
    else:
        now = advance(e, now, cfg.window)
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
    """Count one closed connection; an unknown or idle source is a no-op.

    A connection that was counted open untracked is closed first.
    """
    cdef Entry* e
    cdef uint8_t before
    if self.untracked_n and table_close_untracked(self, hi, lo):
        return True
    e = <Entry*>table_find(self, hi, lo, h)
    if e == NULL or e.hdr.active == 0:
        return False
    now = advance(e, now, cfg.window)
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


cdef inline bint tracker_close(SourceTable tracker, object source, object now) except -1:
    cdef uint64_t hi, lo
    tracker._key(source, &hi, &lo)
    cdef double t = tracker._now(now)
    cdef uint64_t h = key_hash(hi, lo, tracker._seed)
    cdef Py_ssize_t i = h & tracker._shard_mask
    cdef bint closed
    shard_lock(tracker, i)
    closed = table_close(&tracker._tables[i], hi, lo, h, t, &tracker._cfg)
    shard_unlock(tracker, i)
    return closed


cdef inline int tracker_accept(SourceTable tracker, uint64_t hi, uint64_t lo, Destination* d,
                               double t) noexcept:
    cdef uint64_t h = key_hash(hi, lo, tracker._seed)
    cdef Py_ssize_t i = h & tracker._shard_mask
    cdef int result
    shard_lock(tracker, i)
    result = table_accept(&tracker._tables[i], hi, lo, h, d, t, &tracker._cfg, tracker._seed)
    shard_unlock(tracker, i)
    return result


cdef Py_ssize_t _rank_table(Table* s, Ranked* heap, Py_ssize_t filled, Py_ssize_t n, int by,
                            double now, double window) noexcept nogil:
    """Keep the n best-ranked entries seen so far in ``heap`` (filled of them); return filled."""
    cdef uint32_t j
    cdef Entry e
    cdef Entry* entry
    cdef double t
    cdef Ranked r
    for j in range(s.n):
        entry = <Entry*>table_at(s, j)
        if by == TOP_FLAGGED and entry.hdr.patterns == 0:
            continue
        r.key_hi = entry.hdr.key_hi
        r.key_lo = entry.hdr.key_lo
        if by == TOP_ACTIVE:
            r.score = entry.hdr.active
        elif by == TOP_TOTAL:
            r.score = <double>entry.total
        else:
            e = entry[0]                         # a copy: ranking never mutates
            t = now if now > e.hdr.stamp else e.hdr.stamp
            roll(&e, t, window)
            r.score = accept_rate(&e, t, window)
        if filled < n:
            _heap_push(heap, filled, &r)
            filled += 1
        elif _compare_ranked(&r, &heap[0]) < 0:
            _heap_replace_top(heap, filled, &r)
    return filled


# A heap of the best-ranked entries kept so far: heap[0] is the one ranking
# last, and every parent ranks after its children (_compare_ranked > 0), so a
# newcomer only has to beat heap[0] to be kept. Ranks are a total order (keys
# are unique), so the n kept are exactly the first n of a full sort.

cdef void _heap_push(Ranked* heap, Py_ssize_t filled, Ranked* r) noexcept nogil:
    cdef Py_ssize_t i = filled, parent
    while i > 0:
        parent = (i - 1) >> 1
        if _compare_ranked(r, &heap[parent]) <= 0:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = r[0]


cdef void _heap_replace_top(Ranked* heap, Py_ssize_t filled, Ranked* r) noexcept nogil:
    cdef Py_ssize_t i = 0, child
    while True:
        child = 2 * i + 1
        if child >= filled:
            break
        if child + 1 < filled and _compare_ranked(&heap[child + 1], &heap[child]) > 0:
            child += 1
        if _compare_ranked(&heap[child], r) <= 0:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = r[0]


cdef object _raw(Entry* e, double now, double window):
    """Pack a copied entry, advanced to ``now``, for the Python side."""
    if now < e.hdr.stamp:
        now = e.hdr.stamp
    roll(e, now, window)
    return RawStats(e.hdr.key_hi, e.hdr.key_lo, e.hdr.active, e.total, e.first_seen,
                    e.hdr.stamp, e.hdr.patterns, window_weight(now, window),
                    tuple([e.cls_cur[c] for c in range(_MAX_CLASSES)]),
                    tuple([e.cls_prev[c] for c in range(_MAX_CLASSES)]),
                    e.hosts_cur, e.hosts_prev, e.ports_cur, e.ports_prev)


# The memory bar (<= 128 bytes per tracked source) is budgeted on this size.
assert sizeof(Entry) == 112, sizeof(Entry)


cdef class SourceTable(ShardedTable):
    """Per-source connection counts in sharded, bounded hash tables.

    The public face is connguard.Tracker, which validates arguments and
    turns the raw tuples returned here into SourceStats.
    """

    # Written once in __init__, read-only afterwards.
    cdef Config _cfg
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
        self._cfg.deny = deny

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
        return result != 0 or not self._cfg.deny

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
        cdef Ranked* ranked
        n = min(n, self.counters()[2])           # room for the entries there are, no more
        if n <= 0:
            return []
        ranked = <Ranked*>malloc(n * sizeof(Ranked))
        if ranked == NULL:
            raise MemoryError()
        try:
            for i in range(self._shard_mask + 1):
                shard_lock(self, i)
                filled = _rank_table(&self._tables[i], ranked, filled, n, by, t, self._cfg.window)
                shard_unlock(self, i)
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
