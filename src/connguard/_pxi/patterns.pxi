# Pattern state: windowed evidence for the patterns a source may show (pairs
# with _core_py/patterns.py, whose docstring tells when a source earns a
# record). Everything here runs under the owner's shard lock: noexcept nogil.

cdef struct Window:
    # One pattern's evidence; each field is [current bucket, previous bucket].
    uint32_t n[2]             # accepts of the pattern's classes (saturating)
    uint32_t aux[2]           # accepts counted beside them (PatternConfig.aux_masks)
    uint32_t closed[2]        # closes with byte counts that the pattern takes
    uint32_t empty[2]         # of those, closes that received nothing
    uint64_t nbytes[2]        # their bytes (saturating)
    uint64_t hosts[2]         # distinct-host sketches
    uint64_t ports[2]         # distinct-port sketches


cdef struct Record:
    # A source's pattern state; key_hi/key_lo name its owner entry.
    uint64_t key_hi
    uint64_t key_lo
    double stamp                      # fixes the bucket of every window's current counts
    double roll_at                    # no window's current bucket ends before this
    double since[_PATTERN_COUNT]      # by pattern bit: when raised
    double above[_PATTERN_COUNT]      # by pattern bit: when last at the threshold
    uint8_t patterns                  # the owner's pattern bits, mirrored
    uint16_t flag_prev                # the shard's list of flagged records (numbers; 0: none)
    uint16_t flag_next
    Window w[_GROUPS]


cdef struct PatternConfig:
    # _spec.PatternLimits, field for field.
    uint32_t enabled
    double windows[_GROUPS]
    uint8_t accept_masks[_GROUPS]
    uint8_t aux_masks[_GROUPS]
    uint8_t trigger_classes
    uint8_t volume_classes
    double spam_connections
    int spam_hosts_zeros
    double spam_min_closed
    double spam_empty_share
    int scan_ports_zeros
    int scan_vertical_hosts_zeros
    int scan_hosts_zeros
    int scan_horizontal_ports_zeros
    double scan_min_closed
    double scan_empty_share
    double cred_connections
    int cred_hosts_zeros
    double cred_min_closed
    double cred_mean_received
    double cred_login_connections
    double dns_connections
    double dns_bytes
    double dns_mean_bytes


cdef int pattern_config(PatternConfig* c, object lim) except -1:
    """Fill ``c`` from a _spec.PatternLimits."""
    cdef int g
    if not isinstance(lim, _spec.PatternLimits):
        raise TypeError("patterns must be a PatternLimits")
    c.enabled = lim.enabled
    for g in range(_GROUPS):
        c.windows[g] = lim.windows[g]
        c.accept_masks[g] = lim.accept_masks[g]
        c.aux_masks[g] = lim.aux_masks[g]
    c.trigger_classes = lim.trigger_classes
    c.volume_classes = lim.volume_classes
    c.spam_connections = lim.spam_connections
    c.spam_hosts_zeros = lim.spam_hosts_zeros
    c.spam_min_closed = lim.spam_min_closed
    c.spam_empty_share = lim.spam_empty_share
    c.scan_ports_zeros = lim.scan_ports_zeros
    c.scan_vertical_hosts_zeros = lim.scan_vertical_hosts_zeros
    c.scan_hosts_zeros = lim.scan_hosts_zeros
    c.scan_horizontal_ports_zeros = lim.scan_horizontal_ports_zeros
    c.scan_min_closed = lim.scan_min_closed
    c.scan_empty_share = lim.scan_empty_share
    c.cred_connections = lim.cred_connections
    c.cred_hosts_zeros = lim.cred_hosts_zeros
    c.cred_min_closed = lim.cred_min_closed
    c.cred_mean_received = lim.cred_mean_received
    c.cred_login_connections = lim.cred_login_connections
    c.dns_connections = lim.dns_connections
    c.dns_bytes = lim.dns_bytes
    c.dns_mean_bytes = lim.dns_mean_bytes
    return 0


cdef inline double pattern_weight(double now, double window) noexcept nogil:
    """Share of the previous bucket still inside the window."""
    return 1.0 - (now / window - fast_floor(now / window))


cdef void record_roll(Record* r, double now, const PatternConfig* lim) noexcept nogil:
    """Move every window of r to ``now``; a clock that ran back starts them again.

    ``roll_at`` caches the earliest end of a current bucket, so most calls
    compare two times instead of dividing by every window.
    """
    cdef int g, bit
    cdef double gap, end
    if r.stamp <= now < r.roll_at:
        r.stamp = now
        return
    if now < r.stamp:
        memset(r.w, 0, sizeof(r.w))
        for bit in range(_PATTERN_COUNT):
            if r.above[bit] > now:
                r.above[bit] = now
    else:
        for g in range(_GROUPS):
            gap = fast_floor(now / lim.windows[g]) - fast_floor(r.stamp / lim.windows[g])
            if gap == 1:
                r.w[g].n[1] = r.w[g].n[0]
                r.w[g].aux[1] = r.w[g].aux[0]
                r.w[g].closed[1] = r.w[g].closed[0]
                r.w[g].empty[1] = r.w[g].empty[0]
                r.w[g].nbytes[1] = r.w[g].nbytes[0]
                r.w[g].hosts[1] = r.w[g].hosts[0]
                r.w[g].ports[1] = r.w[g].ports[0]
                r.w[g].n[0] = r.w[g].aux[0] = r.w[g].closed[0] = r.w[g].empty[0] = 0
                r.w[g].nbytes[0] = r.w[g].hosts[0] = r.w[g].ports[0] = 0
            elif gap > 1:
                memset(&r.w[g], 0, sizeof(Window))
    r.stamp = now
    for g in range(_GROUPS):
        end = (fast_floor(now / lim.windows[g]) + 1) * lim.windows[g]
        if g == 0 or end < r.roll_at:
            r.roll_at = end


cdef inline int _zeros(uint64_t x) noexcept nogil:
    """Zero bits of a 64-bit sketch (a portable popcount: only pattern state pays for it)."""
    x = x - ((x >> 1) & 0x5555555555555555ULL)
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL
    return _SKETCH_BITS - <int>((x * 0x0101010101010101ULL) >> 56)


cdef inline double _weighted(const uint32_t* pair, double wt) noexcept nogil:
    return <double>pair[0] + <double>pair[1] * wt


cdef inline double _weighted64(const uint64_t* pair, double wt) noexcept nogil:
    return <double>pair[0] + <double>pair[1] * wt


cdef bint group_hits(Record* r, int g, double now, const PatternConfig* lim) noexcept nogil:
    """True when group g's evidence is at its threshold at ``now`` (r rolled to now)."""
    cdef Window* w = &r.w[g]
    cdef double wt
    cdef int hosts, ports
    cdef double closed, nbytes
    cdef bint known, failing
    # Each weighted count is at most its two buckets' sum: these sums fail
    # first and cheaply for nearly every source.
    if g == GROUP_SPAM and <double>w.n[0] + w.n[1] < lim.spam_connections:
        return False
    if (g == GROUP_CRED and <double>w.n[0] + w.n[1] < lim.cred_connections
            and <double>w.aux[0] + w.aux[1] < lim.cred_login_connections):
        return False
    if g == GROUP_DNS and <double>w.nbytes[0] + <double>w.nbytes[1] < lim.dns_bytes:
        return False
    wt = pattern_weight(now, lim.windows[g])
    if g == GROUP_SPAM:
        closed = _weighted(w.closed, wt)
        return (_weighted(w.n, wt) >= lim.spam_connections
                and _zeros(w.hosts[0] | w.hosts[1]) <= lim.spam_hosts_zeros
                and (closed < lim.spam_min_closed
                     or _weighted(w.empty, wt) < lim.spam_empty_share * closed))
    if g == GROUP_SCAN:
        hosts = _zeros(w.hosts[0] | w.hosts[1])
        ports = _zeros(w.ports[0] | w.ports[1])
        closed = _weighted(w.closed, wt)
        known = closed >= lim.scan_min_closed
        failing = _weighted(w.empty, wt) >= lim.scan_empty_share * closed
        # Vertical: many ports, on few hosts when there are no bytes to tell
        # failures by; mostly failing (on any number of hosts) when there are.
        if ports <= lim.scan_ports_zeros and (
                failing if known else hosts >= lim.scan_vertical_hosts_zeros):
            return True
        return (hosts <= lim.scan_hosts_zeros and ports >= lim.scan_horizontal_ports_zeros
                and known and failing)
    if g == GROUP_CRED:
        if _weighted(w.aux, wt) >= lim.cred_login_connections:
            return True
        closed = _weighted(w.closed, wt)
        return (_weighted(w.n, wt) >= lim.cred_connections
                and _zeros(w.hosts[0] | w.hosts[1]) >= lim.cred_hosts_zeros
                and (closed < lim.cred_min_closed
                     or _weighted64(w.nbytes, wt) <= lim.cred_mean_received * closed))
    nbytes = _weighted64(w.nbytes, wt)
    return (_weighted(w.n, wt) >= lim.dns_connections and nbytes >= lim.dns_bytes
            and nbytes >= lim.dns_mean_bytes * _weighted(w.closed, wt))


cdef uint8_t evaluate(Record* r, uint8_t patterns, double now, const PatternConfig* lim,
                      int dirty) noexcept nogil:
    """Return ``patterns`` with each windowed pattern raised or cleared at ``now``.

    Raised when its evidence is at the threshold; cleared once the evidence
    has stayed below it for a full window of its own. Only the groups in
    ``dirty`` (whose evidence grew) and the raised ones are judged: evidence
    that did not grow cannot newly reach a threshold.
    """
    cdef int g, bit
    for g in range(_GROUPS):
        bit = g + _GROUP_SHIFT
        if not ((lim.enabled & (dirty | (patterns >> _GROUP_SHIFT))) >> g) & 1:
            continue
        if group_hits(r, g, now, lim):
            r.above[bit] = now
            if not (patterns >> bit) & 1:
                r.since[bit] = now
                patterns |= 1 << bit
        elif (patterns >> bit) & 1 and now - r.above[bit] >= lim.windows[g]:
            patterns &= ~(1 << bit)
    return patterns


cdef uint8_t live_patterns(Record* r, uint8_t patterns, double now, const PatternConfig* lim) noexcept nogil:
    """The pattern bits still live at ``now`` on a copied record (r rolled to now)."""
    cdef int g, bit
    for g in range(_GROUPS):
        bit = g + _GROUP_SHIFT
        if ((patterns >> bit) & 1 and not group_hits(r, g, now, lim)
                and now - r.above[bit] >= lim.windows[g]):
            patterns &= ~(1 << bit)
    return patterns


cdef inline void mark_timed(Record* r, uint8_t before, uint8_t after, double now) noexcept nogil:
    """Date conn_flood and conn_rate, which are live exactly while their bit is set."""
    cdef int bit
    for bit in range(_GROUP_SHIFT):
        if (after >> bit) & 1:
            r.above[bit] = now
            if not (before >> bit) & 1:
                r.since[bit] = now


cdef inline void _inc32(uint32_t* x) noexcept nogil:
    if x[0] < 0xFFFFFFFFU:
        x[0] += 1


cdef int count_accept(Record* r, uint8_t cls, uint64_t host_bit, uint64_t port_bit,
                      const PatternConfig* lim) noexcept nogil:
    """Count an accept; return the groups whose evidence grew (port_scan: only
    when a sketch gained a bit, as its counts are not thresholds)."""
    cdef int g, dirty = 0
    cdef Window* w
    for g in range(_GROUPS):
        w = &r.w[g]
        if (lim.accept_masks[g] >> cls) & 1:
            _inc32(&w.n[0])
            if (g != GROUP_SCAN or (w.hosts[0] | host_bit) != w.hosts[0]
                    or (w.ports[0] | port_bit) != w.ports[0]):
                dirty |= 1 << g
            w.hosts[0] |= host_bit
            w.ports[0] |= port_bit
        if (lim.aux_masks[g] >> cls) & 1:
            _inc32(&w.aux[0])
            dirty |= 1 << g
    return dirty


cdef void _add_close(Window* w, uint64_t nbytes, bint empty) noexcept nogil:
    _inc32(&w.closed[0])
    if empty:
        _inc32(&w.empty[0])
    if nbytes > 0xFFFFFFFFFFFFFFFFULL - w.nbytes[0]:
        w.nbytes[0] = 0xFFFFFFFFFFFFFFFFULL
    else:
        w.nbytes[0] += nbytes


cdef int count_close(Record* r, int cls, int64_t sent, int64_t received, double now,
                     const PatternConfig* lim) noexcept nogil:
    """Count a close's bytes (-1: unknown; cls -1: the destination is unknown).

    See _core_py/patterns.py count_close for which pattern takes which
    close. Returns the groups that took it.
    """
    cdef Window* w
    cdef double wt, dns
    cdef bint takes
    cdef int dirty = 0
    if received >= 0 and cls >= 0 and (lim.accept_masks[GROUP_SPAM] >> cls) & 1:
        _add_close(&r.w[GROUP_SPAM], 0, received == 0)
        dirty |= 1 << GROUP_SPAM
    if received >= 0:
        _add_close(&r.w[GROUP_SCAN], 0, received == 0)
        dirty |= 1 << GROUP_SCAN
        if cls < 0 or (lim.accept_masks[GROUP_CRED] >> cls) & 1:
            _add_close(&r.w[GROUP_CRED], <uint64_t>received, received == 0)
            dirty |= 1 << GROUP_CRED
    if sent >= 0 or received >= 0:
        w = &r.w[GROUP_DNS]
        if cls >= 0:
            takes = (lim.accept_masks[GROUP_DNS] >> cls) & 1
        else:
            wt = pattern_weight(now, lim.windows[GROUP_DNS])
            dns = _weighted(w.n, wt)
            takes = dns > 0 and dns >= 9.0 * _weighted(w.aux, wt)
        if takes:
            # Each is below 2**63, so the sum fits an unsigned 64-bit word.
            _add_close(w, <uint64_t>(sent if sent > 0 else 0)
                       + <uint64_t>(received if received > 0 else 0), received == 0)
            dirty |= 1 << GROUP_DNS
    return dirty


cdef void seed_record(Record* r, const uint16_t* cls_cur, const uint16_t* cls_prev, uint64_t hosts,
                      uint64_t ports, const PatternConfig* lim) noexcept nogil:
    """Start a new record's current buckets from the owner's window counts (see _core_py)."""
    cdef int g, c
    cdef uint32_t count
    for g in range(_GROUPS):
        for c in range(_MAX_CLASSES):
            count = <uint32_t>cls_cur[c] + cls_prev[c]
            if (lim.accept_masks[g] >> c) & 1:
                r.w[g].n[0] += count
            if (lim.aux_masks[g] >> c) & 1:
                r.w[g].aux[0] += count
    r.w[GROUP_SCAN].hosts[0] = hosts
    r.w[GROUP_SCAN].ports[0] = ports
    r.w[GROUP_CRED].hosts[0] = hosts


cdef inline bint accept_triggers(const PatternConfig* lim, uint8_t cls, uint16_t cls_count,
                                 uint64_t ports, uint8_t patterns) noexcept nogil:
    """Whether an accept earns its source a record (see _core_py/patterns.py)."""
    if (lim.trigger_classes >> cls) & 1 or patterns:
        return True
    if (lim.volume_classes >> cls) & 1 and cls_count >= _TRIGGER_COUNT:
        return True
    ports &= ports - 1                   # drop the lowest set bit twice:
    return (ports & (ports - 1)) != 0    # anything left means a third port


cdef object raw_record(Record* r, double now, const PatternConfig* lim):
    """Pack a copied record, rolled to ``now``, for the Python side."""
    cdef int g
    cdef Window* w
    if now < r.stamp:
        now = r.stamp
    record_roll(r, now, lim)
    windows = []
    for g in range(_GROUPS):
        w = &r.w[g]
        windows.append((w.n[0], w.n[1], w.aux[0], w.aux[1], w.closed[0], w.closed[1],
                        w.empty[0], w.empty[1], w.nbytes[0], w.nbytes[1], w.hosts[0], w.hosts[1],
                        w.ports[0], w.ports[1]))
    return RawRecord(r.stamp, tuple([r.since[g] for g in range(_PATTERN_COUNT)]),
                     tuple([r.above[g] for g in range(_PATTERN_COUNT)]),
                     tuple([pattern_weight(now, lim.windows[g]) for g in range(_GROUPS)]),
                     tuple(windows))
