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
    bint rate_on              # rate_threshold is finite
    uint32_t concurrent_threshold
    bint deny                 # no room: refuse (else count open, untracked)
    uint32_t open_cap         # a Guard's max_open (_MAX_ACTIVE: none); set once, before use
    bint cap_refuses          # an accept at open_cap is refused (else counted, over the cap)
    PatternConfig lim         # the windowed patterns' thresholds


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


cdef double _first_time_in(double k, double window) noexcept nogil:
    """The least time t with fast_floor(t / window) >= k.

    k * window is within an ulp or two of it, on either side (the product
    and the quotient each round), so step down from there until the bucket
    is below k, then up until it is k. Correct because fast_floor(t /
    window) never decreases as t grows: rounded division by a positive
    number is monotonic, and so is floor.
    """
    cdef double t = k * window
    while fast_floor(t / window) >= k:
        t = nextafter(t, -INFINITY)
    while fast_floor(t / window) < k:
        t = nextafter(t, INFINITY)
    return t


cdef bint buckets_at(Buckets* b, double now, double window) noexcept nogil:
    """Set ``b`` to the buckets around ``now``; False (b unchanged) when now
    is so far out that whole buckets fall between neighbouring times.
    Three searches that divide and step: roll calls it once per bucket."""
    cdef double k = fast_floor(now / window)
    if not -4503599627370496.0 < k < 4503599627370496.0:        # 2**52: k - 1 and k + 1 exact
        return False
    b.prev_start = _first_time_in(k - 1, window)
    b.start = _first_time_in(k, window)
    b.end = _first_time_in(k + 1, window)
    return True


cdef inline void roll(Entry* e, double now, double window, Buckets* b) noexcept nogil:
    """Advance e's window buckets to ``now`` (now >= e.hdr.stamp).

    How many buckets lie between the source's last-seen time and now is
    floor(now / window) - floor(stamp / window), as _core_py computes it.
    With ``b`` (the table's Buckets, or NULL) it is found by comparing the
    two times with b's exact bucket bounds, which move forward only, when
    now passes them (or b is still empty): with a clock that runs forward
    the rolls of a table find the bounds once per window and never divide.
    Times before b's bucket divide as the twin does, so times given in any
    order cost what they did before the bounds: in random order a new
    latest time, the only kind that moves the bounds, comes seldom.
    """
    cdef double gap
    if now == e.hdr.stamp:         # common: the coarse clock ticks every few ms
        return
    if b != NULL and (b.start <= now < b.end
                      or (now >= b.end or b.start == b.end) and buckets_at(b, now, window)):
        if e.hdr.stamp >= b.start:                   # stamp <= now < end
            return
        gap = 1 if e.hdr.stamp >= b.prev_start else 2
    else:
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


cdef inline double advance(Entry* e, double now, double window, Buckets* b) noexcept nogil:
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
    roll(e, now, window, b)
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
    """Count one accepted connection; 0 when there was no room, _CAPPED when
    refused at the source's open_cap, else 1 | _CAPPED when counted at or
    past it | raised << 8 | first << 16: the pattern bits this accept
    raised, and those raised on this source for the first time."""
    cdef Entry* e = <Entry*>table_find(self, hi, lo, h)
    cdef uint8_t before
    cdef int over = 0
    # Counted here once for every accept, and taken back on the rare refusals.
    self.class_accepts[d.cls] += 1
    if e == NULL:
        e = <Entry*>table_insert(self, hi, lo, h, now, seed)
        if e == NULL:
            if cfg.deny:
                self.class_accepts[d.cls] -= 1
            else:
                table_open_untracked(self, hi, lo)
            return 0
        e.first_seen = now
    else:
        # open_cap <= _MAX_ACTIVE: one compare for the two rare cases.
        if e.hdr.active >= cfg.open_cap:
            over = _at_cap(self, e, hi, lo, d.cls, cfg)
            if over != _CAPPED or cfg.cap_refuses:
                return over
        now = advance(e, now, cfg.window, &self.buckets)
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
    if e.hdr.rare or accept_triggers(&cfg.lim, d.cls, e.cls_cur[d.cls],
                                     e.ports_cur | e.ports_prev, e.hdr.patterns):
        _accept_record_fn(self, e, d, before, now, cfg, seed)
    return _raised(self, e, before) | over


cdef int _at_cap(Table* self, Entry* e, uint64_t hi, uint64_t lo, int cls,
                 const Config* cfg) noexcept nogil:
    """An accept of a source holding open_cap connections or more: 0 when its
    entry is saturated (counted open untracked, or refused with deny), else
    _CAPPED (refused when cfg.cap_refuses, else counted over the cap)."""
    if e.hdr.active == _MAX_ACTIVE:              # saturated: counted open, untracked
        self.overflows += 1
        if cfg.deny:
            self.class_accepts[cls] -= 1
        else:
            table_open_untracked(self, hi, lo)
        return 0
    if cfg.cap_refuses:
        self.class_accepts[cls] -= 1
    return _CAPPED


cdef void _accept_record(Table* self, Entry* e, Destination* d, uint8_t before, double now,
                         const Config* cfg, uint64_t seed) noexcept nogil:
    """An accept's pattern-state work: kept out of table_accept, which most
    accepts leave without it, so that one stays small enough to inline."""
    cdef Record* r
    cdef int dirty = _ALL_GROUPS
    if e.hdr.rare:
        r = _record_at(self, e, now, cfg)
        dirty = count_accept(r, d.cls, d.host_bit, d.port_bit, &cfg.lim)
    else:
        r = _new_record(self, e, now, cfg, seed)
    if r != NULL:
        _judge(self, r, e, before, now, cfg, dirty)


cdef inline Record* _record_at(Table* self, Entry* e, double now, const Config* cfg) noexcept nogil:
    cdef Record* r = &self.pool[e.hdr.rare - 1]
    record_roll(r, now, &cfg.lim)
    return r


cdef Record* _new_record(Table* self, Entry* e, double now, const Config* cfg,
                         uint64_t seed) noexcept nogil:
    cdef Record* r = pool_take(self, &e.hdr, now, seed)
    if r != NULL:
        seed_record(r, e.cls_cur, e.cls_prev, e.hosts_cur | e.hosts_prev,
                    e.ports_cur | e.ports_prev, &cfg.lim)
    return r


cdef void _judge(Table* self, Record* r, Entry* e, uint8_t before, double now,
                 const Config* cfg, int dirty) noexcept nogil:
    """Raise or clear e's windowed patterns from its record; date every raised bit."""
    if r.patterns != before:                     # a new record: nothing dated yet
        before = 0
    e.hdr.patterns = evaluate(r, e.hdr.patterns, now, &cfg.lim, dirty)
    mark_timed(r, before, e.hdr.patterns, now)
    pool_mark(self, e.hdr.rare, e.hdr.patterns)


cdef inline int _raised(Table* self, Entry* e, uint8_t before) noexcept nogil:
    """Account for e's pattern change; return 1 | raised << 8 | first << 16."""
    if before == e.hdr.patterns:                 # nearly always: nothing changed
        return 1
    return _flags_changed(self, e, before)


cdef int _flags_changed(Table* self, Entry* e, uint8_t before) noexcept nogil:
    cdef uint8_t after = e.hdr.patterns, raised, first
    cdef int bit
    table_flags_changed(self, before, after)
    raised = after & ~before
    for bit in range(8):
        if (raised >> bit) & 1:
            self.raised_by[bit] += 1
    first = after & ~e.hdr.reported
    e.hdr.reported |= first
    return 1 | (raised << 8) | (first << 16)


# The pattern-state paths are called through pointers set at import: a
# compiler inlines a static function with one caller whatever its size, and
# these two would make table_accept and table_close, which most events
# leave without them, too big to be inlined into accept and close.
cdef void (*_accept_record_fn)(Table*, Entry*, Destination*, uint8_t, double, const Config*,
                               uint64_t) noexcept nogil
cdef void (*_close_record_fn)(Table*, Entry*, int, int64_t, int64_t, uint8_t, double,
                              const Config*, uint64_t) noexcept nogil
_accept_record_fn = _accept_record
_close_record_fn = _close_record


cdef int table_close(Table* self, uint64_t hi, uint64_t lo, uint64_t h, double now,
                     const Config* cfg, int cls, int64_t sent, int64_t received,
                     uint64_t seed) noexcept nogil:
    """Count one closed connection; 0 for an unknown or idle source, else as
    table_accept. ``cls`` is -1 when the destination is unknown, ``sent``
    and ``received`` -1 when unknown.

    A connection that was counted open untracked is closed first.
    """
    cdef Entry* e
    cdef uint8_t before
    if self.untracked_n and table_close_untracked(self, hi, lo):
        return 1
    e = <Entry*>table_find(self, hi, lo, h)
    if e == NULL or e.hdr.active == 0:
        return 0
    now = advance(e, now, cfg.window, &self.buckets)
    before = e.hdr.patterns
    e.hdr.active -= 1
    self.active_connections -= 1
    if e.hdr.active == 0:
        self.active_sources -= 1
        e.hdr.patterns &= ~_FLOOD
    update_rate_flag(e, now, cfg)
    if e.hdr.rare or received == 0 or e.hdr.patterns:
        _close_record_fn(self, e, cls, sent, received, before, now, cfg, seed)
    return _raised(self, e, before)


cdef void _close_record(Table* self, Entry* e, int cls, int64_t sent, int64_t received,
                        uint8_t before, double now, const Config* cfg, uint64_t seed) noexcept nogil:
    """A close's pattern-state work (see _accept_record)."""
    cdef Record* r
    cdef int dirty
    cdef bint fresh = e.hdr.rare == 0
    r = _new_record(self, e, now, cfg, seed) if fresh else _record_at(self, e, now, cfg)
    if r != NULL:
        dirty = count_close(r, cls, sent, received, now, &cfg.lim)
        _judge(self, r, e, before, now, cfg, _ALL_GROUPS if fresh else dirty)


cdef inline void update_rate_flag(Entry* e, double now, const Config* cfg) noexcept nogil:
    # Off (rate_threshold +inf): the bit is never set, so nothing to do.
    if cfg.rate_on:
        if accept_rate(e, now, cfg.window) > cfg.rate_threshold:
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


cdef Py_ssize_t _keep_arg(object keep) except -2:
    """-1 for None (end the replay), else the flows to hold back."""
    if keep is None:
        return -1
    if type(keep) is not int or not 0 <= keep < 2**62:
        raise ValueError(f"keep must be None or an int >= 0, got {keep!r}")
    return keep


cdef int64_t _bytes_arg(str name, object value) except -2:
    """-1 for None, else a byte count (an int >= 0; clamped to 2**63 - 1)."""
    if value is None:
        return -1
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return min(value, 0x7FFFFFFFFFFFFFFF)


cdef inline int tracker_close(SourceTable tracker, object source, object now, object sent,
                              object received, object destination, double* t) except -1:
    """Close one connection of ``source``; return table_close's result, the time used in t."""
    cdef uint64_t hi, lo
    cdef int64_t n_sent = -1, n_received = -1
    cdef int cls = -1
    cdef Destination d
    tracker._key(source, &hi, &lo)
    if sent is not None:
        n_sent = _bytes_arg("sent", sent)
    if received is not None:
        n_received = _bytes_arg("received", received)
    if destination is not None:
        classify(destination, &tracker._classes, &d)
        cls = d.cls
    t[0] = tracker._now(now)
    return tracker_close_key(tracker, hi, lo, t[0], cls, n_sent, n_received)


cdef inline int tracker_close_key(SourceTable tracker, uint64_t hi, uint64_t lo, double t,
                                  int cls, int64_t sent, int64_t received) noexcept:
    cdef uint64_t h = key_hash(hi, lo, tracker._seed)
    cdef Py_ssize_t i = h & tracker._shard_mask
    cdef int result
    shard_lock(tracker, i)
    result = table_close(&tracker._tables[i], hi, lo, h, t, &tracker._cfg, cls, sent, received,
                         tracker._seed)
    shard_unlock(tracker, i)
    return result


# The batch replay and connection handles close through this pointer, never
# by a direct call, so tracker_close_key keeps the one direct caller GCC
# inlines it into (callgrind: a replay calling the per-call path's helpers
# directly cost +25 instructions per accept+close pair on every scenario).
cdef int (*_close_key)(SourceTable, uint64_t, uint64_t, double, int, int64_t,
                       int64_t) noexcept
_close_key = tracker_close_key


cdef int tracker_accept(SourceTable tracker, uint64_t hi, uint64_t lo, uint64_t h,
                        Destination* d, double t) noexcept:
    """Count an accept of the key hi/lo, hashed ``h`` by key_hash with the tracker's seed."""
    cdef Py_ssize_t i = h & tracker._shard_mask
    cdef int result
    shard_lock(tracker, i)
    result = table_accept(&tracker._tables[i], hi, lo, h, d, t, &tracker._cfg, tracker._seed)
    shard_unlock(tracker, i)
    return result


# Every accept calls tracker_accept through this pointer. Called directly,
# GCC inlines it (a lock and a call) into each caller and leaves table_accept
# out of line: 8 instructions more a pair, Tracker and Guard alike (callgrind).
# Through the pointer, table_accept stays inlined in its one caller.
cdef int (*_accept_key)(SourceTable, uint64_t, uint64_t, uint64_t, Destination*, double) noexcept
_accept_key = tracker_accept


cdef struct Keyed:
    uint64_t hi                   # a source's netblock key
    uint64_t lo
    uint64_t h                    # its hash in the tracker
    uint64_t h2                   # in a Guard's batch, its hash in the limiter
    int64_t sent                  # a close's bytes; -1: unknown
    int64_t received


cdef enum:
    _AHEAD = 8                    # batches: how many sources ahead index slots are loaded


cdef list batch_of(object values, str name="sources", str items="sources"):
    """A batch's ``name`` (its ``items``) as a list; one str or bytes is a
    TypeError, not a batch of characters, and so is what is not iterable."""
    if isinstance(values, (str, bytes, bytearray)):
        raise TypeError(f"{name} must be an iterable of {items}, not one {type(values).__name__}")
    try:
        iterator = iter(values)
    except TypeError:
        raise TypeError(f"{name} must be an iterable of {items}, "
                        f"not {type(values).__name__}") from None
    return list(iterator)


cdef int _bytes_column(Keyed* keys, Py_ssize_t n, str name, object column) except -1:
    """Set a batch's ``name`` ("sent" or "received") bytes from ``column``:
    None (unknown) or one count (int >= 0, or None) per source."""
    cdef Py_ssize_t i
    cdef int64_t value
    cdef bint is_sent = name == "sent"
    if column is None:
        return 0
    counts = batch_of(column, name, "byte counts")
    if len(counts) != n:
        raise ValueError(f"{name} has {len(counts)} entries for {n} sources")
    for i in range(n):
        value = _bytes_arg(f"{name}[{i}]", counts[i])
        if is_sent:
            keys[i].sent = value
        else:
            keys[i].received = value
    return 0


cdef inline void _prefetch_slot(ShardedTable table, uint64_t h) noexcept:
    """Start loading the index slot of the key hashed ``h``.

    Only under the GIL: there nothing replaces the table's index while this
    reads where it is, outside the shard lock (free-threaded builds skip it).
    """
    cdef Table* t
    if not CG_SHARD_LOCKS:
        t = &table._tables[h & table._shard_mask]
        if t.index != NULL:
            CG_PREFETCH(t.index + home_slot(t, h))


cdef inline void _prefetch_entry(ShardedTable table, uint64_t h) noexcept:
    """Start loading the entry the key hashed ``h`` finds at its index slot
    (its first probe), every cache line of it (entries are not line-aligned:
    a tracker's spans two or three); under the GIL only, as _prefetch_slot."""
    cdef Table* t
    cdef uint32_t ix
    cdef const char* e
    if not CG_SHARD_LOCKS:
        t = &table._tables[h & table._shard_mask]
        if t.index != NULL:
            ix = t.index[home_slot(t, h)]
            if ix and (ix ^ table_tag(t, h)) <= t.pos_mask:     # the home slot is this key's
                e = <const char*>table_at(t, slot_pos(t, ix))
                CG_PREFETCH(e)
                if t.esize > 64:
                    CG_PREFETCH(e + 64)
                CG_PREFETCH(e + t.esize - 1)


cdef inline uint64_t _hash_ahead(ShardedTable table, uint64_t hi, uint64_t lo) noexcept:
    """The key's hash in ``table``, its index slot already loading.

    A single accept reads that slot only after classifying the destination
    and reading the clock: in a table too large for the caches the load now
    overlaps that work instead of following it. Under the GIL only, as
    _prefetch_slot (elsewhere this is key_hash).
    """
    cdef uint64_t h = key_hash(hi, lo, table._seed)
    _prefetch_slot(table, h)
    return h


cdef inline void _prefetch_ahead(SourceTable tracker, ShardedTable limiter, const Keyed* keys,
                                 Py_ssize_t i, Py_ssize_t n) noexcept:
    """Before a batch handles source ``i`` of ``n``: start loading the index
    slot of the source _AHEAD on and the entry of the one _AHEAD // 2 on
    (its slot loaded by then); before the first, the first _AHEAD slots. The
    same in a Guard's ``limiter`` (None: none), by the keys' second hash."""
    cdef Py_ssize_t j
    if i == 0:
        for j in range(min(n, _AHEAD)):
            _prefetch_slot(tracker, keys[j].h)
            if limiter is not None:
                _prefetch_slot(limiter, keys[j].h2)
    if i + _AHEAD < n:
        _prefetch_slot(tracker, keys[i + _AHEAD].h)
        if limiter is not None:
            _prefetch_slot(limiter, keys[i + _AHEAD].h2)
    if i + _AHEAD // 2 < n:
        _prefetch_entry(tracker, keys[i + _AHEAD // 2].h)
        if limiter is not None:
            _prefetch_entry(limiter, keys[i + _AHEAD // 2].h2)


_REASON_NAMES = tuple([None] + [reason.name.lower() for reason in list(_spec.Reason)[1:]])


@cython.final
@cython.no_gc
@cython.freelist(64)
@cython.auto_pickle(False)
cdef class Connection:
    """One accepted connection, from ``Guard.open`` or ``Tracker.open``.

    Truthy when the connection may proceed; ``reason`` names why it was
    refused, or with ``enforce=False`` why it would have been (None, "banned",
    "limit", "overflow" or "flood"). It holds the parsed netblock and the
    destination's class, so its close neither parses nor classifies again.

    Important:
    1. ``close(sent=None, received=None, now=None)`` counts the close once:
       a second call, or a close of a refused connection, does nothing and
       returns False. Bytes are ints >= 0, None when unknown; ``now`` (event
       time) only when the connection was opened with ``now``.
    2. As a context manager it closes on exit, also on an exception, without
       byte counts; call ``close(sent, received)`` inside to give them.
    3. It keeps no lock and is not tied to a thread: any thread may close it.
    """

    cdef readonly object source   # the source as given: text or a peername tuple
    cdef object _owner            # the GuardTable or SourceTable that opened it
    # The owner's SourceTable, borrowed: the owner holds it for its lifetime
    # (a GuardTable's _sources is written once), and the handle holds the owner.
    cdef PyObject* _tracker
    cdef uint64_t _hi, _lo        # the netblock key
    cdef int _cls                 # the destination's class
    cdef int _code                # the verdict code
    cdef int _open                # counted and not closed yet; cleared by cg_take

    def __bool__(self):
        return self._code < VERDICT_REFUSED

    @property
    def allowed(self):
        """True when the connection may proceed."""
        return self._code < VERDICT_REFUSED

    @property
    def reason(self):
        """None, or why the connection was (or would have been) refused."""
        return _REASON_NAMES[self._code % VERDICT_REFUSED]

    @property
    def closed(self):
        """True once closed, and for a refused connection."""
        return not self._open

    @cython.binding(False)
    def close(self, sent=None, received=None, now=None):
        """Count the close once; False when closed already or refused."""
        return connection_close(self, sent, received, now)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        state = "closed" if not self._open else "open"
        return f"<Connection allowed={self.allowed} reason={self.reason!r} {state}>"


cdef Py_ssize_t _rank_table(Table* s, Ranked* heap, Py_ssize_t filled, Py_ssize_t n, int by,
                            double now, double window, const Ranked* after) noexcept nogil:
    """Keep the n best-ranked entries seen so far in ``heap`` (filled of them); return filled.

    With ``after``, only entries ranking before it are kept.
    """
    cdef uint32_t j
    cdef Entry e
    cdef Entry* entry
    cdef double t
    cdef Ranked r
    cdef Buckets buckets
    buckets.start = buckets.end = 0.0             # empty: set by the first roll
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
            roll(&e, t, window, &buckets)
            r.score = accept_rate(&e, t, window)
        if after != NULL and _compare_ranked(&r, after) >= 0:
            continue
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


cdef object _raw(Entry* e, Record* r, double now, const Config* cfg):
    """Pack a copied entry (and its copied record, if any), advanced to ``now``."""
    cdef uint8_t patterns
    if now < e.hdr.stamp:
        now = e.hdr.stamp
    roll(e, now, cfg.window, NULL)
    patterns = e.hdr.patterns
    if r != NULL:
        record_roll(r, now if now > r.stamp else r.stamp, &cfg.lim)
        patterns = live_patterns(r, patterns, now if now > r.stamp else r.stamp, &cfg.lim)
    return RawStats(e.hdr.key_hi, e.hdr.key_lo, e.hdr.active, e.total, e.first_seen,
                    e.hdr.stamp, patterns, window_weight(now, cfg.window),
                    tuple([e.cls_cur[c] for c in range(_MAX_CLASSES)]),
                    tuple([e.cls_prev[c] for c in range(_MAX_CLASSES)]),
                    e.hosts_cur, e.hosts_prev, e.ports_cur, e.ports_prev)


cdef inline object connection_close(Connection self, object sent, object received, object now):
    """Connection.close."""
    cdef int64_t n_sent = -1, n_received = -1
    cdef int counted
    if sent is not None:
        n_sent = _bytes_arg("sent", sent)
    if received is not None:
        n_received = _bytes_arg("received", received)
    cdef SourceTable tracker = <SourceTable>self._tracker
    cdef double t = tracker._now(now)         # may raise: read before the flag
    if not cg_take(&self._open):
        return False
    counted = _close_key(tracker, self._hi, self._lo, t, self._cls, n_sent, n_received)
    if counted >> 8:                          # no lock is held here
        tell_raised(tracker, self._owner if isinstance(self._owner, GuardTable) else None,
                    self.source, counted, t)
    return True


cdef int tell_raised(SourceTable tracker, GuardTable guard, object source, int result,
                     double t) except -1:
    """Tell of the patterns a close raised (``result`` > 0xFF, no lock held):
    the ``guard`` the connection went through, if any (it logs and calls its
    own hooks), else the tracker's finding hook."""
    if guard is not None:
        guard._announce(source, result, t)
    elif tracker._on_finding is not None:
        tracker._on_finding(source, (result >> 8) & 0xFF, t)
    return 0


cdef inline object source_accept(SourceTable self, object source, object destination, object now):
    """SourceTable.accept."""
    cdef uint64_t hi, lo
    cdef Destination d
    cdef int result
    self._key(source, &hi, &lo)
    cdef uint64_t h = _hash_ahead(self, hi, lo)
    classify(destination, &self._classes, &d)
    cdef double t = self._now(now)
    result = _accept_key(self, hi, lo, h, &d, t)
    # Bits above the first byte mean a pattern was raised ("first" bits
    # are always raised ones too).
    if result > 0xFF and self._on_finding is not None:
        self._on_finding(source, (result >> 8) & 0xFF, t)     # no lock is held here
    return (result & 1) != 0 or (result == 0 and not self._cfg.deny)


cdef inline object source_open(SourceTable self, object source, object destination, object now):
    """SourceTable.open."""
    cdef Connection conn = Connection.__new__(Connection)
    cdef Destination d
    cdef int result
    self._key(source, &conn._hi, &conn._lo)
    cdef uint64_t h = _hash_ahead(self, conn._hi, conn._lo)
    classify(destination, &self._classes, &d)
    cdef double t = self._now(now)
    result = _accept_key(self, conn._hi, conn._lo, h, &d, t)
    conn.source = source
    conn._owner = self
    conn._tracker = <PyObject*>self
    conn._cls = d.cls
    if result & 1 or (result == 0 and not self._cfg.deny):
        conn._open = 1
        conn._code = REASON_FLOOD if result & _CAPPED else REASON_NONE
    else:
        conn._code = (REASON_FLOOD if result else REASON_OVERFLOW) + VERDICT_REFUSED
    if result > 0xFF and self._on_finding is not None:
        self._on_finding(source, (result >> 8) & 0xFF, t)     # no lock is held here
    return conn


cdef inline object source_close(SourceTable self, object source, object now, object sent,
                                object received, object destination):
    """SourceTable.close."""
    cdef double t
    cdef int result = tracker_close(self, source, now, sent, received, destination, &t)
    if result > 0xFF and self._on_finding is not None:
        self._on_finding(source, (result >> 8) & 0xFF, t)     # no lock is held here
    return result != 0


# The memory bar (<= 128 bytes per tracked source) is budgeted on this size.
assert sizeof(Entry) == 112, sizeof(Entry)


cdef class SourceTable(ShardedTable):
    """Per-source connection counts in sharded, bounded hash tables.

    The public face is connguard.Tracker, which validates arguments and
    turns the raw tuples returned here into SourceStats and Findings.
    ``_on_finding``, when set, is called as ``(source, bits, now)`` after the
    shard lock is released, with the pattern bits an accept or close raised.
    """

    # Written once in __init__, read-only afterwards (but _on_finding: one
    # reference swapped whole by set_finding_hook).
    cdef Config _cfg
    cdef Classes _classes
    cdef uint16_t* _ports
    cdef uint64_t* _watch
    cdef object _on_finding
    cdef _Replay _replay          # its state is guarded by _replay.busy

    def __init__(self, *, uint64_t capacity, uint32_t shards, double window,
                 uint32_t concurrent_threshold, double rate_threshold,
                 int ipv4_prefix, int ipv6_prefix, bint deny,
                 bytes port_classes not None, object clock, uint64_t seed, object patterns,
                 tuple watch=(), int watch_class=0):
        cdef Py_ssize_t i
        cdef const uint8_t* by_port
        if len(port_classes) != 65536 or max(port_classes) >= _MAX_CLASSES:
            raise ValueError("port_classes must map all 65536 ports to a class id")
        pattern_config(&self._cfg.lim, patterns)
        if not 0 <= watch_class < _MAX_CLASSES:
            raise ValueError("watch_class must be a class id")
        hashes = sorted(set(watch))
        self._setup(capacity, shards, sizeof(Entry), ipv4_prefix, ipv6_prefix, clock, seed)
        for i in range(self._shard_mask + 1):
            self._tables[i].pool_capacity = min(max(
                (self._tables[i].capacity + _PATTERN_STATE_RATIO - 1) // _PATTERN_STATE_RATIO,
                _PATTERN_STATE_MIN), _PATTERN_STATE_MAX)
        self._ports = <uint16_t*>malloc(65536 * sizeof(uint16_t))
        self._watch = <uint64_t*>malloc(max(len(hashes), 1) * sizeof(uint64_t))
        if self._ports == NULL or self._watch == NULL:
            raise MemoryError()
        by_port = <const uint8_t*><const char*>port_classes
        for i in range(65536):
            self._ports[i] = port_entry(<int>i, by_port[i])
        for i in range(len(hashes)):
            self._watch[i] = hashes[i]
        self._classes.ports = self._ports
        self._classes.watch = self._watch
        self._classes.watch_n = len(hashes)
        self._classes.watch_class = watch_class
        self._cfg.window = window
        self._cfg.rate_threshold = rate_threshold
        self._cfg.rate_on = isfinite(rate_threshold)
        self._cfg.concurrent_threshold = concurrent_threshold
        self._cfg.deny = deny
        self._cfg.open_cap = _MAX_ACTIVE
        self._cfg.cap_refuses = False
        self._replay = _Replay()

    def __dealloc__(self):
        free(self._ports)
        free(self._watch)

    def set_finding_hook(self, hook):
        """Set (or clear, with None) the callable told of raised patterns."""
        self._on_finding = hook

    def set_open_cap(self, uint32_t cap, bint refuses):
        """Cap each source's open connections at ``cap`` (0: no cap); past it an
        accept is refused (``refuses``) or counted and marked over the cap.

        Set once, before the table is used: a Guard sets it as it is made.
        Raises RuntimeError when a cap is already set.
        """
        if self._cfg.open_cap != _MAX_ACTIVE:
            raise RuntimeError("this tracker's open-connection cap is set already "
                               "(one Guard per tracker may set max_open)")
        if cap:
            self._cfg.open_cap = min(cap, _MAX_ACTIVE)
            self._cfg.cap_refuses = refuses

    # binding=False: a plain method descriptor, called through CPython's own
    # vectorcall, skips the CyFunction dispatch layer on the hot path.
    @cython.binding(False)
    def accept(self, source, destination="", now=None):
        """Count an accepted connection; False only when it is refused: by
        overflow="deny", or at a Guard's max_open cap with enforce=True."""
        return source_accept(self, source, destination, now)

    @cython.binding(False)
    def open(self, source, destination="", now=None):
        """Count an accepted connection as accept does; return its Connection."""
        return source_open(self, source, destination, now)

    @cython.binding(False)
    def close(self, source, now=None, *, sent=None, received=None, destination=None):
        """Count a closed connection; return False when there was none to close.

        ``sent`` and ``received`` are the connection's bytes (None: unknown);
        with ``destination`` its bytes count for that destination's class.
        """
        return source_close(self, source, now, sent, received, destination)

    @cython.binding(False)
    def accept_many(self, sources, destination="", now=None):
        """Count an accepted connection from each source, in order, all to
        ``destination`` at one time (the clock is read once); return what
        accept would have returned for each, as a list.

        Every source is parsed before any is counted: an invalid one raises
        ValueError or TypeError naming its position, and nothing is counted.
        The finding hook runs as accept runs it; one that raises stops the
        batch there, the connections before it counted. In a big table this is
        quicker per connection than accept: each source's index slot and
        entry start loading a few sources ahead, so their cache misses
        overlap.
        """
        cdef list batch = batch_of(sources)
        cdef Py_ssize_t i, n = len(batch)
        cdef Keyed* keys = self._keyed(batch)
        cdef Destination d
        cdef double t
        cdef int result
        cdef list out
        try:
            classify(destination, &self._classes, &d)
            t = self._now(now)
            out = [False] * n
            for i in range(n):
                _prefetch_ahead(self, None, keys, i, n)
                result = _accept_key(self, keys[i].hi, keys[i].lo, keys[i].h, &d, t)
                if (result & 1) != 0 or (result == 0 and not self._cfg.deny):
                    out[i] = True
                if result > 0xFF and self._on_finding is not None:
                    self._on_finding(batch[i], (result >> 8) & 0xFF, t)   # no lock is held here
            return out
        finally:
            free(keys)

    @cython.binding(False)
    def close_many(self, sources, now=None, *, sent=None, received=None):
        """Count a closed connection from each source, in order, at one time;
        return what close would have returned for each.

        ``sent`` and ``received`` are None (unknown) or one byte count per
        source (an int >= 0, or None). Everything is checked before anything
        is counted, as in accept_many: a bad count raises naming its
        position (``sent[3]``).
        """
        return self._close_many(sources, now, sent, received, None)

    cdef list _close_many(self, object sources, object now, object sent, object received,
                          GuardTable guard):
        """close_many; a Guard's batch tells its ``guard`` of raised patterns."""
        cdef list batch = batch_of(sources)
        cdef Py_ssize_t i, n = len(batch)
        cdef Keyed* keys = self._keyed(batch)
        cdef double t
        cdef int result
        cdef list out
        try:
            _bytes_column(keys, n, "sent", sent)
            _bytes_column(keys, n, "received", received)
            t = self._now(now)
            out = [False] * n
            for i in range(n):
                _prefetch_ahead(self, None, keys, i, n)
                result = _close_key(self, keys[i].hi, keys[i].lo, t, -1, keys[i].sent,
                                    keys[i].received)
                if result != 0:
                    out[i] = True
                if result > 0xFF:                        # no lock is held here
                    tell_raised(self, guard, batch[i], result, t)
            return out
        finally:
            free(keys)

    cdef Keyed* _keyed(self, list batch) except NULL:
        """Parse every source of a batch; raise naming the first invalid one."""
        cdef Py_ssize_t i, n = len(batch)
        cdef Keyed* keys = <Keyed*>malloc(max(n, 1) * sizeof(Keyed))
        if keys == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                self._key(batch[i], &keys[i].hi, &keys[i].lo)
                keys[i].h = key_hash(keys[i].hi, keys[i].lo, self._seed)
                keys[i].sent = keys[i].received = -1
        except (TypeError, ValueError) as exc:
            free(keys)
            raise type(exc)(f"sources[{i}]: {exc}") from None
        except BaseException:
            free(keys)
            raise
        return keys

    def replay(self, starts, durations, sources, destinations, sent=None, received=None,
               *, keep=None):
        """Replay a batch of flows in event-time order; return (played, late, skipped).

        Flow ``i`` starts at ``starts[i]`` (seconds) and lasts
        ``durations[i]`` (None: 0) from ``sources[i]`` to
        ``destinations[i]`` (a str, "" for none), with ``sent[i]`` and
        ``received[i]`` bytes (None, or the whole column None: unknown).
        The flows join those pending from earlier calls; accepts then play
        in start order, closes (at start + duration, with the bytes and the
        destination) in end order, until at most ``keep`` flows wait for
        their accept (and closes wait for a later accept); ``keep=None`` (the
        default) ends the replay: every pending event plays.
        The clock is the flows' own. ``played`` counts the accepts played,
        ``late`` the flows that started before the replay clock (played at
        the clock), ``skipped`` lists ``(index, reason)`` for flows refused
        as malformed; they change nothing. Raises ValueError when columns
        differ in length, RuntimeError when a replay is already running.
        """
        cdef _Replay state = self._replay
        cdef Py_ssize_t n_keep = _keep_arg(keep), played = 0
        cdef Due due
        cdef Flow* f
        cdef double start
        if not state.busy.acquire(False):
            raise RuntimeError("a replay is already running on this table")
        try:
            late, skipped = state.push(self, &self._classes, starts, durations, sources,
                                       destinations, sent, received)
            accept = self.accept
            while state.accepts.n > max(n_keep, 0):
                start = state.accepts.items[0].t
                while state.closes.n and state.closes.items[0].t < start:
                    self._play_close(state)
                due = heap_pop(&state.accepts)
                f = &state.flows[due.slot]
                state.clock = start
                source = <object>f.source
                # Through the method a caller uses: table_accept keeps its one
                # direct caller, which GCC inlines it into (a third caller cost
                # +25 instructions per accept+close pair on the per-call path).
                # The method calls the finding hook itself.
                try:
                    accepted = accept(source, <object>f.destination, start)
                except BaseException:
                    state.release(due.slot)
                    raise
                if accepted:
                    due.t = f.end
                    try:
                        heap_push(&state.closes, due)
                    except MemoryError:
                        state.release(due.slot)
                        raise
                else:                                    # refused: it never closes
                    state.release(due.slot)
                played += 1
            if n_keep < 0:
                while state.closes.n:
                    self._play_close(state)
            return played, late, skipped
        finally:
            state.busy.release()

    @property
    def replay_clock(self):
        """The time of the last event a replay played (-inf before any)."""
        return self._replay.clock

    def destination_classes(self, destinations):
        """Return the class id of each destination (str, or None for none) as bytes."""
        cdef Destination d
        cdef Py_ssize_t i, n = len(destinations)
        out = bytearray(n)
        for i in range(n):
            classify(destinations[i], &self._classes, &d)
            out[i] = d.cls
        return bytes(out)

    cdef int _play_close(self, _Replay state) except -1:
        cdef Due due = heap_pop(&state.closes)
        cdef Flow* f = &state.flows[due.slot]
        cdef int result
        state.clock = due.t
        result = _close_key(self, f.hi, f.lo, due.t, f.d.cls, f.sent, f.received)
        source = state.release(due.slot)
        if result > 0xFF and self._on_finding is not None:
            self._on_finding(source, (result >> 8) & 0xFF, due.t)
        return 0

    cdef bint _copy_pair(self, uint64_t hi, uint64_t lo, Entry* e, Record* r,
                         bint* has_record) noexcept:
        """Copy a key's entry, and its record if it has one; False when absent."""
        cdef uint64_t h = key_hash(hi, lo, self._seed)
        cdef Py_ssize_t i = h & self._shard_mask
        cdef bint found
        shard_lock(self, i)
        found = table_copy(&self._tables[i], hi, lo, h, e)
        has_record[0] = found and e.hdr.rare != 0
        if has_record[0]:
            r[0] = self._tables[i].pool[e.hdr.rare - 1]
        shard_unlock(self, i)
        return found

    def stats_raw(self, uint64_t hi, uint64_t lo, now=None):
        """Return one source's raw counters, windows advanced to ``now``, or None."""
        cdef double t = self._now(now)
        cdef Entry e
        cdef Record r
        cdef bint has_record
        if not self._copy_pair(hi, lo, &e, &r, &has_record):
            return None
        return _raw(&e, &r if has_record else NULL, t, &self._cfg)

    def record_raw(self, uint64_t hi, uint64_t lo, now=None):
        """Return one source's raw counters and pattern-state record, or None when it has none."""
        cdef double t = self._now(now)
        cdef Entry e
        cdef Record r
        cdef bint has_record
        if not self._copy_pair(hi, lo, &e, &r, &has_record) or not has_record:
            return None
        raw = _raw(&e, &r, t, &self._cfg)
        return raw, raw_record(&r, t if t > r.stamp else r.stamp, &self._cfg.lim)

    def findings_raw(self, now=None):
        """Return the sources with a pattern live at ``now``, with their records.

        Reads only the flagged records (every source with a pattern raised
        has one, on its shard's flagged list): O(flagged sources), never
        O(sources). Nothing is changed: a
        pattern whose evidence has been below its threshold for a full
        window is left out here, and cleared at the source's next event.
        """
        cdef double t = self._now(now)
        cdef Py_ssize_t i, count
        cdef uint32_t k
        cdef Table* table
        cdef Record* r
        cdef Entry* e
        cdef uint32_t most = 0
        cdef uint16_t number
        cdef Entry* entries
        cdef Record* records
        for i in range(self._shard_mask + 1):
            most = max(most, self._tables[i].pool_capacity)   # written once in __init__
        entries = <Entry*>malloc(most * sizeof(Entry))
        records = <Record*>malloc(most * sizeof(Record))
        result = []
        try:
            if entries == NULL or records == NULL:
                raise MemoryError()
            for i in range(self._shard_mask + 1):
                table = &self._tables[i]
                count = 0
                shard_lock(self, i)
                number = table.pool_flagged
                while number:
                    r = &table.pool[number - 1]
                    e = <Entry*>table_find(table, r.key_hi, r.key_lo,
                                           key_hash(r.key_hi, r.key_lo, self._seed))
                    entries[count] = e[0]
                    records[count] = r[0]
                    count += 1
                    number = r.flag_next
                shard_unlock(self, i)
                for k in range(count):
                    raw = _raw(&entries[k], &records[k], t, &self._cfg)
                    if raw.patterns:
                        result.append((raw, raw_record(
                            &records[k], t if t > records[k].stamp else records[k].stamp,
                            &self._cfg.lim)))
            return result
        finally:
            free(entries)
            free(records)

    def rank(self, Py_ssize_t n, int by, now=None, shard=None, after=None):
        """Return (score, key_hi, key_lo) of the n highest-ranked sources, best first.

        Ranked by score, highest first, then by key. With ``shard``, only
        that shard's sources; with ``after``, a (score, key_hi, key_lo)
        tuple, only those ranking before it (a caller merging shards passes
        its n-th best). Holds n entries at most, never the table.
        """
        cdef double t = self._now(now)
        cdef Py_ssize_t filled = 0, i, first = 0, last = self._shard_mask + 1
        cdef Ranked* ranked
        cdef Ranked bound
        if after is not None:
            bound.score, bound.key_hi, bound.key_lo = after
        if shard is not None:
            if not isinstance(shard, int) or not 0 <= shard <= self._shard_mask:
                raise ValueError(f"shard must be an int in [0, {self._shard_mask + 1}), "
                                 f"got {shard!r}")
            first, last = shard, shard + 1
            n = min(n, self._tables[first].n)
        else:
            n = min(n, self.counters()[2])       # room for the entries there are, no more
        if n <= 0:
            return []
        ranked = <Ranked*>malloc(n * sizeof(Ranked))
        if ranked == NULL:
            raise MemoryError()
        try:
            for i in range(first, last):
                shard_lock(self, i)
                filled = _rank_table(&self._tables[i], ranked, filled, n, by, t, self._cfg.window,
                                     NULL if after is None else &bound)
                shard_unlock(self, i)
            qsort(ranked, filled, sizeof(Ranked), _compare_ranked)
            return [(ranked[i].score, ranked[i].key_hi, ranked[i].key_lo) for i in range(filled)]
        finally:
            free(ranked)

    def top_raw(self, Py_ssize_t n, int by, now=None):
        """Return the raw counters of the n highest-ranked sources (see rank)."""
        cdef double t = self._now(now)
        result = []
        for _, hi, lo in self.rank(n, by, t):
            raw = self.stats_raw(hi, lo, t)
            if raw is not None:                  # evicted between the two passes
                result.append(raw)
        return result

    def class_accepts(self):
        """Return the accepts counted so far, by destination class id."""
        return self._sum_counters(0)

    def raised_by(self):
        """Return how many times each pattern was raised (Pattern bit order)."""
        return self._sum_counters(1)[:_PATTERN_COUNT]

    cdef tuple _sum_counters(self, int which):
        cdef uint64_t sums[8]
        cdef Py_ssize_t i
        cdef int c
        memset(sums, 0, sizeof(sums))
        for i in range(self._shard_mask + 1):
            shard_lock(self, i)
            for c in range(8):
                sums[c] += self._tables[i].class_accepts[c] if which == 0 \
                    else self._tables[i].raised_by[c]
            shard_unlock(self, i)
        return tuple([sums[c] for c in range(8)])

    def pattern_state(self):
        """Return (records in use, records the pools may hold, records wanted when
        a pool had none to spare), summed over the shards."""
        cdef uint64_t used = 0, capacity = 0, full = 0
        cdef Py_ssize_t i
        for i in range(self._shard_mask + 1):
            shard_lock(self, i)
            used += self._tables[i].pool_used
            capacity += self._tables[i].pool_capacity
            full += self._tables[i].pool_full
            shard_unlock(self, i)
        return used, capacity, full

    def memory_bytes(self):
        """Return the bytes this table holds: C tables, pools, port classes, shard objects."""
        return ShardedTable.memory_bytes(self) + 65536 + self._classes.watch_n * sizeof(uint64_t)
