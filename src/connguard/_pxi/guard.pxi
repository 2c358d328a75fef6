# One call per accepted connection (pairs with _core_py/guard.py). A verdict
# code is a _spec.Reason plus VERDICT_REFUSED when the connection was refused.

cdef class GuardTable:
    """One call per accepted connection: the ban table, the limiter, the tracker.

    The address is parsed once, with the tracker's prefixes (the Guard makes
    the ban table's match); each table's shard lock is taken in turn, never
    two at once. connguard.Guard is the public face.
    """

    # Written once in __init__, read-only afterwards.
    cdef SourceTable _sources
    cdef BanTable _ban_table      # may be None
    cdef BucketTable _buckets     # may be None
    cdef bint _enforce
    cdef tuple _verdicts          # indexed by reason + VERDICT_REFUSED if refused
    cdef object _on_limit         # called (source, level, now) when a source first reaches a level
    cdef object _on_flag          # called (source, bits) when patterns are first raised
    # Verdicts returned, by code, in CG_COUNT_STRIPES stripes after
    # CG_COUNT_PAD unused counters (summed when read); bumped with CG_COUNT
    # in the calling thread's stripe: _count_at(code).
    cdef int64_t _counts[CG_COUNT_PAD + CG_COUNT_STRIPES * CG_STRIPE_WORDS]
    # Each part answers in its own timebase: a part with a clock of its own
    # reads it (unless the caller passed now=, taken as every part's time);
    # parts sharing the tracker's clock share its reading.
    cdef bint _ban_clock
    cdef bint _limit_clock

    def __init__(self, *, SourceTable tracker not None, BanTable bans, BucketTable limiter,
                 bint enforce, tuple verdicts not None, object on_limit, object on_flag,
                 uint32_t max_open=0):
        if len(verdicts) != VERDICT_CODES:
            raise ValueError(f"verdicts must hold {VERDICT_CODES} entries")
        if max_open:
            tracker.set_open_cap(max_open, enforce)
        self._sources = tracker
        self._ban_table = bans
        self._buckets = limiter
        self._enforce = enforce
        self._verdicts = verdicts
        self._on_limit = on_limit
        self._on_flag = on_flag
        self._ban_clock = bans is not None and bans._clock is not tracker._clock
        self._limit_clock = limiter is not None and limiter._clock is not tracker._clock

    @cython.binding(False)
    def accept(self, source, destination="", now=None):
        """Check and count an accepted connection; return its verdict."""
        return guard_accept(self, source, destination, now)

    @cython.binding(False)
    def open(self, source, destination="", now=None):
        """Check and count an accepted connection as accept does; return its Connection."""
        return guard_open(self, source, destination, now)

    @cython.binding(False)
    def accept_many(self, sources, destination="", now=None):
        """Check and count an accepted connection from each source, in order,
        all to ``destination``; return their verdicts, as a list.

        As Tracker.accept_many: the tracker's clock is read once, every
        source is parsed before anything is counted or checked (an invalid
        one raises naming its position), and table lines load a few sources
        ahead. Each connection is checked against bans and the limiter as
        accept checks it, callbacks included; one that raises stops the batch
        there, the connections before it counted.
        """
        cdef SourceTable tracker = self._sources
        cdef list batch = batch_of(sources)
        cdef Py_ssize_t i, n = len(batch)
        cdef Keyed* keys = tracker._keyed(batch)
        cdef Destination d
        cdef double t
        cdef int code
        cdef list out
        try:
            if self._buckets is not None:               # the limiter's hashes, to prefetch
                for i in range(n):
                    keys[i].h2 = key_hash(keys[i].hi ^ _LIMIT_SALT, keys[i].lo,
                                          self._buckets._seed)
            classify(destination, &tracker._classes, &d)
            t = tracker._now(now)
            out = [None] * n
            for i in range(n):
                _prefetch_ahead(tracker, self._buckets, keys, i, n)
                code = self._judge(batch[i], keys[i].hi, keys[i].lo, keys[i].h, &d, now, t)
                CG_COUNT(self._count_at(code))
                out[i] = self._verdicts[code]
            return out
        finally:
            free(keys)

    @cython.binding(False)
    def close_many(self, sources, now=None, *, sent=None, received=None):
        """Count a closed connection from each source, as Tracker.close_many."""
        return self._sources._close_many(sources, now, sent, received, self)

    cdef inline int _decide(self, object source, object destination, object now,
                            uint64_t* key_hi, uint64_t* key_lo, Destination* dest) except -1:
        """Decide and count an accept; return its verdict code. The source's
        netblock key and the destination's class are left in the last three.
        Inline, so that accept and open make one call below them (_judge's)
        as they did when this held all of it."""
        cdef SourceTable tracker = self._sources
        tracker._key(source, key_hi, key_lo)
        cdef uint64_t h = _hash_ahead(tracker, key_hi[0], key_lo[0])
        classify(destination, &tracker._classes, dest)
        return self._judge(source, key_hi[0], key_lo[0], h, dest, now, tracker._now(now))

    cdef int _judge(self, object source, uint64_t hi, uint64_t lo, uint64_t h, Destination* dest,
                    object now, double t) except -1:
        """Check and count an accept of a parsed source (its key hashed ``h``
        in the tracker) at the tracker's time ``t`` (``now`` as the caller
        gave it); return its verdict code."""
        cdef int reason = REASON_NONE, level = TAKE_ALLOWED, counted
        cdef uint32_t violations = 0
        cdef SourceTable tracker = self._sources
        if self._ban_table is not None and ban_active(
                self._ban_table, hi, lo,
                self._ban_table._now(None) if self._ban_clock and now is None else t):
            if self._enforce:
                return REASON_BANNED + VERDICT_REFUSED
            reason = REASON_BANNED
        if self._buckets is not None:
            level = limit_take(
                self._buckets, hi ^ _LIMIT_SALT, lo,
                self._buckets._now(None) if self._limit_clock and now is None else t, &violations)
            if level != TAKE_ALLOWED:
                if self._on_limit is not None and (
                        (level == TAKE_VIOLATION and violations == self._buckets._cfg.warn_after + 1)
                        or (level == TAKE_ABUSE and violations == self._buckets._cfg.abuse_after)):
                    self._on_limit(source, level, now)   # no lock is held here
                if self._enforce:
                    return (reason or REASON_LIMIT) + VERDICT_REFUSED
                if reason == REASON_NONE:
                    reason = REASON_LIMIT
        counted = _accept_key(tracker, hi, lo, h, dest, t)
        if counted & 3 != 1:                     # rare: no room, or at max_open
            if counted & 1 == 0:
                if counted == _CAPPED:
                    return (reason or REASON_FLOOD) + VERDICT_REFUSED
                if tracker._cfg.deny:
                    return (reason or REASON_OVERFLOW) + VERDICT_REFUSED
            elif reason == REASON_NONE:
                reason = REASON_FLOOD
        if counted >> 8:
            self._announce(source, counted, t)
        return reason

    cdef int _announce(self, object source, int counted, double t) except -1:
        """Tell of patterns an accept or close raised; no lock is held here."""
        if counted >> 16 and self._on_flag is not None:
            self._on_flag(source, counted >> 16)
        hook = self._sources._on_finding
        if (counted >> 8) & 0xFF and hook is not None:
            hook(source, (counted >> 8) & 0xFF, t)
        return 0

    cdef inline int64_t* _count_at(self, int code) noexcept nogil:
        return &self._counts[CG_COUNT_PAD + CG_COUNT_STRIPE() * CG_STRIPE_WORDS + code]

    def verdict_counts(self):
        """Return how many times each verdict was returned, by verdict index."""
        cdef int64_t sums[VERDICT_CODES]
        cdef Py_ssize_t stripe, code
        memset(sums, 0, sizeof(sums))
        for stripe in range(CG_COUNT_STRIPES):
            for code in range(VERDICT_CODES):
                sums[code] += CG_LOAD(&self._counts[CG_COUNT_PAD + stripe * CG_STRIPE_WORDS + code])
        return tuple([sums[code] for code in range(VERDICT_CODES)])

    @cython.binding(False)
    def close(self, source, now=None, *, sent=None, received=None, destination=None):
        """Count a closed connection; return False when there was none to close."""
        return guard_close(self, source, now, sent, received, destination)


cdef inline object guard_accept(GuardTable self, object source, object destination, object now):
    """GuardTable.accept."""
    cdef uint64_t hi, lo
    cdef Destination d
    cdef int code = self._decide(source, destination, now, &hi, &lo, &d)
    CG_COUNT(self._count_at(code))
    return self._verdicts[code]


cdef inline object guard_open(GuardTable self, object source, object destination, object now):
    """GuardTable.open."""
    cdef Connection conn = Connection.__new__(Connection)
    cdef Destination d
    cdef int code = self._decide(source, destination, now, &conn._hi, &conn._lo, &d)
    CG_COUNT(self._count_at(code))
    conn.source = source
    conn._owner = self
    conn._tracker = <PyObject*>self._sources
    conn._cls = d.cls
    conn._code = code
    conn._open = code < VERDICT_REFUSED
    return conn


cdef inline object guard_close(GuardTable self, object source, object now, object sent,
                               object received, object destination):
    """GuardTable.close."""
    cdef double t
    cdef int counted = tracker_close(self._sources, source, now, sent, received,
                                     destination, &t)
    if counted >> 8:
        self._announce(source, counted, t)
    return counted != 0
