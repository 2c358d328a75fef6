"""Pattern state: windowed evidence for the patterns a source may show (pairs with _pxi/patterns.pxi).

Most sources never need it: a source earns a record in its shard's small
pool (about 1 in PATTERN_STATE_RATIO of the shard's capacity) when it does
something a pattern looks at: an accept of a trigger class (smtp, dns, dot,
the login watch-list), TRIGGER_COUNT accepts of a volume class (https) in
its window, a third distinct port in its window, a close that received
nothing, or a raised pattern. The record is seeded from the source's
window counts, so evidence from before it was earned is not lost.

A record keeps, per windowed pattern (``Group``), a current and a previous
bucket of that pattern's own window, and per pattern bit when it was raised
and when its evidence was last at the threshold. A raised pattern clears
once its evidence has stayed below the threshold for a full window of its
own. All of it runs under the owner's shard lock and cannot raise.
"""

from __future__ import annotations

import math

from .._spec import (
    GROUP_SHIFT,
    PATTERN_COUNT,
    SKETCH_BITS,
    TRIGGER_COUNT,
    Group,
    Pattern,
    PatternLimits,
    RawRecord,
)

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_GROUPS = len(Group)
_SPAM, _SCAN, _CRED, _DNS = (int(g) for g in Group)
_TIMED = int(Pattern.CONN_FLOOD | Pattern.CONN_RATE)   # bits without a window of their own


class Window:
    """One pattern's evidence: each field is [current bucket, previous bucket]."""

    __slots__ = ("n", "aux", "closed", "empty", "nbytes", "hosts", "ports")

    def __init__(self) -> None:
        self.n = [0, 0]           # accepts of the pattern's classes
        self.aux = [0, 0]         # accepts counted beside them (PatternLimits.aux_masks)
        self.closed = [0, 0]      # closes with byte counts that the pattern takes
        self.empty = [0, 0]       # of those, closes that received nothing
        self.nbytes = [0, 0]      # their bytes
        self.hosts = [0, 0]       # distinct-host sketches
        self.ports = [0, 0]       # distinct-port sketches

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def shift(self) -> None:
        for name in self.__slots__:
            pair = getattr(self, name)
            pair[1] = pair[0]
            pair[0] = 0

    def copy(self) -> Window:
        other = Window()
        for name in self.__slots__:
            setattr(other, name, list(getattr(self, name)))
        return other


class Record:
    """A source's pattern state; ``key_hi``/``key_lo`` name its owner entry."""

    __slots__ = ("key_hi", "key_lo", "stamp", "roll_at", "patterns", "since", "above", "windows")

    def __init__(self) -> None:
        self.reset(0, 0, 0.0)

    def reset(self, hi: int, lo: int, now: float) -> None:
        self.key_hi = hi
        self.key_lo = lo
        self.stamp = now                      # fixes the bucket of every window's current counts
        self.roll_at = now                    # no window's current bucket ends before this
        self.patterns = 0                     # the owner's pattern bits, mirrored
        self.since = [0.0] * PATTERN_COUNT    # by bit: when raised
        self.above = [0.0] * PATTERN_COUNT    # by bit: when last at the threshold
        self.windows = [Window() for _ in range(_GROUPS)]

    def copy(self) -> Record:
        other = Record.__new__(Record)
        other.key_hi, other.key_lo, other.stamp = self.key_hi, self.key_lo, self.stamp
        other.roll_at = self.roll_at
        other.patterns = self.patterns
        other.since, other.above = list(self.since), list(self.above)
        other.windows = [w.copy() for w in self.windows]
        return other


def _bucket(now: float, window: float) -> float:
    return math.floor(now / window)


def pattern_weight(now: float, window: float) -> float:
    """Share of the previous bucket still inside the window."""
    return 1.0 - (now / window - math.floor(now / window))


def record_roll(r: Record, now: float, lim: PatternLimits) -> None:
    """Move every window of r to ``now``; a clock that ran back starts them again.

    ``roll_at`` caches the earliest end of a current bucket, so most calls
    compare two times instead of dividing by every window.
    """
    if r.stamp <= now < r.roll_at:
        r.stamp = now
        return
    if now < r.stamp:
        for w in r.windows:
            w.clear()
        for bit in range(PATTERN_COUNT):
            r.above[bit] = min(r.above[bit], now)
    else:
        for g, w in enumerate(r.windows):
            gap = _bucket(now, lim.windows[g]) - _bucket(r.stamp, lim.windows[g])
            if gap == 1:
                w.shift()
            elif gap > 1:
                w.clear()
    r.stamp = now
    r.roll_at = min((_bucket(now, window) + 1) * window for window in lim.windows)


def _zeros(sketch: int) -> int:
    return SKETCH_BITS - sketch.bit_count()


def _weighted(pair: list[int], wt: float) -> float:
    return pair[0] + pair[1] * wt


def group_hits(r: Record, g: int, now: float, lim: PatternLimits) -> bool:
    """True when group g's evidence is at its threshold at ``now`` (r rolled to now)."""
    w = r.windows[g]
    # Each weighted count is at most its two buckets' sum: these sums fail
    # first and cheaply for nearly every source.
    if g == _SPAM and w.n[0] + w.n[1] < lim.spam_connections:
        return False
    if g == _CRED and w.n[0] + w.n[1] < lim.cred_connections \
            and w.aux[0] + w.aux[1] < lim.cred_login_connections:
        return False
    if g == _DNS and w.nbytes[0] + w.nbytes[1] < lim.dns_bytes:
        return False
    wt = pattern_weight(now, lim.windows[g])
    if g == _SPAM:
        closed = _weighted(w.closed, wt)
        return (_weighted(w.n, wt) >= lim.spam_connections
                and _zeros(w.hosts[0] | w.hosts[1]) <= lim.spam_hosts_zeros
                and (closed < lim.spam_min_closed
                     or _weighted(w.empty, wt) < lim.spam_empty_share * closed))
    if g == _SCAN:
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
    if g == _CRED:
        if _weighted(w.aux, wt) >= lim.cred_login_connections:
            return True
        closed = _weighted(w.closed, wt)
        return (_weighted(w.n, wt) >= lim.cred_connections
                and _zeros(w.hosts[0] | w.hosts[1]) >= lim.cred_hosts_zeros
                and (closed < lim.cred_min_closed
                     or _weighted(w.nbytes, wt) <= lim.cred_mean_received * closed))
    nbytes = _weighted(w.nbytes, wt)
    return (_weighted(w.n, wt) >= lim.dns_connections and nbytes >= lim.dns_bytes
            and nbytes >= lim.dns_mean_bytes * _weighted(w.closed, wt))


def evaluate(r: Record, patterns: int, now: float, lim: PatternLimits, dirty: int) -> int:
    """Return ``patterns`` with each windowed pattern raised or cleared at ``now``.

    Raised when its evidence is at the threshold; cleared once the evidence
    has stayed below it for a full window of its own. Only the groups in
    ``dirty`` (whose evidence grew) and the raised ones are judged: evidence
    that did not grow cannot newly reach a threshold.
    """
    for g in range(_GROUPS):
        bit = g + GROUP_SHIFT
        if not (lim.enabled & (dirty | patterns >> GROUP_SHIFT)) >> g & 1:
            continue
        if group_hits(r, g, now, lim):
            r.above[bit] = now
            if not patterns >> bit & 1:
                r.since[bit] = now
                patterns |= 1 << bit
        elif patterns >> bit & 1 and now - r.above[bit] >= lim.windows[g]:
            patterns &= ~(1 << bit)
    return patterns


def live_patterns(r: Record, patterns: int, now: float, lim: PatternLimits) -> int:
    """The pattern bits still live at ``now`` on a copied record (r rolled to now)."""
    for g in range(_GROUPS):
        bit = g + GROUP_SHIFT
        if patterns >> bit & 1 and not group_hits(r, g, now, lim) \
                and now - r.above[bit] >= lim.windows[g]:
            patterns &= ~(1 << bit)
    return patterns


def mark_timed(r: Record, before: int, after: int, now: float) -> None:
    """Date conn_flood and conn_rate, which are live exactly while their bit is set."""
    for bit in range(GROUP_SHIFT):
        if after >> bit & 1:
            r.above[bit] = now
            if not before >> bit & 1:
                r.since[bit] = now


def count_accept(r: Record, cls: int, host_bit: int, port_bit: int, lim: PatternLimits) -> int:
    """Count an accept; return the groups whose evidence grew (port_scan: only
    when a sketch gained a bit, as its counts are not thresholds)."""
    dirty = 0
    for g, w in enumerate(r.windows):
        if lim.accept_masks[g] >> cls & 1:
            if w.n[0] < _U32:
                w.n[0] += 1
            if g != _SCAN or (w.hosts[0] | host_bit) != w.hosts[0] \
                    or (w.ports[0] | port_bit) != w.ports[0]:
                dirty |= 1 << g
            w.hosts[0] |= host_bit
            w.ports[0] |= port_bit
        if lim.aux_masks[g] >> cls & 1:
            if w.aux[0] < _U32:
                w.aux[0] += 1
            dirty |= 1 << g
    return dirty


def _add_close(w: Window, nbytes: int, empty: bool) -> None:
    if w.closed[0] < _U32:
        w.closed[0] += 1
    if empty and w.empty[0] < _U32:
        w.empty[0] += 1
    w.nbytes[0] = min(w.nbytes[0] + nbytes, _U64)


def count_close(r: Record, cls: int, sent: int, received: int, now: float,
                lim: PatternLimits) -> int:
    """Count a close's bytes (-1: unknown; cls -1: the destination is unknown).

    spam_relay takes the closes of its classes whose received bytes are
    known; port_scan every close whose received bytes are known;
    credential_stuffing those of its classes, or of unknown class (a keyed
    close's bytes are the source's as a whole); dns_tunnel those of its
    classes, or of unknown class while DNS makes up at least 90% of the
    source's accepts in its window (then the bytes are DNS bytes). Returns
    the groups that took it.
    """
    dirty = 0
    if received >= 0 and cls >= 0 and lim.accept_masks[_SPAM] >> cls & 1:
        _add_close(r.windows[_SPAM], 0, received == 0)
        dirty |= 1 << _SPAM
    if received >= 0:
        _add_close(r.windows[_SCAN], 0, received == 0)
        dirty |= 1 << _SCAN
        if cls < 0 or lim.accept_masks[_CRED] >> cls & 1:
            _add_close(r.windows[_CRED], received, received == 0)
            dirty |= 1 << _CRED
    if sent >= 0 or received >= 0:
        w = r.windows[_DNS]
        if cls >= 0:
            takes = bool(lim.accept_masks[_DNS] >> cls & 1)
        else:
            wt = pattern_weight(now, lim.windows[_DNS])
            dns = _weighted(w.n, wt)
            takes = dns > 0 and dns >= 9.0 * _weighted(w.aux, wt)
        if takes:
            _add_close(w, max(sent, 0) + max(received, 0), received == 0)
            dirty |= 1 << _DNS
    return dirty


def seed_record(r: Record, cls_cur: list[int], cls_prev: list[int], hosts: int, ports: int,
         lim: PatternLimits) -> None:
    """Start a new record's current buckets from the owner's window counts.

    Host and port sketches count every class, so only the patterns that
    look at every class (port_scan), or for which more hosts only makes a
    finding harder (credential_stuffing), take them.
    """
    for g, w in enumerate(r.windows):
        for c in range(len(cls_cur)):
            count = cls_cur[c] + cls_prev[c]
            if lim.accept_masks[g] >> c & 1:
                w.n[0] += count
            if lim.aux_masks[g] >> c & 1:
                w.aux[0] += count
    r.windows[_SCAN].hosts[0] = hosts
    r.windows[_SCAN].ports[0] = ports
    r.windows[_CRED].hosts[0] = hosts


def accept_triggers(lim: PatternLimits, cls: int, cls_count: int, ports: int, patterns: int) -> bool:
    """Whether an accept earns its source a record (see the module docstring)."""
    if lim.trigger_classes >> cls & 1 or patterns:
        return True
    if lim.volume_classes >> cls & 1 and cls_count >= TRIGGER_COUNT:
        return True
    ports &= ports - 1                        # drop the lowest set bit twice:
    return ports & (ports - 1) != 0           # anything left means a third port


def raw_record(r: Record, now: float, lim: PatternLimits) -> RawRecord:
    """Pack a copied record, rolled to ``now``, for the Python side."""
    if now < r.stamp:
        now = r.stamp
    record_roll(r, now, lim)
    return RawRecord(
        r.stamp, tuple(r.since), tuple(r.above),
        tuple(pattern_weight(now, lim.windows[g]) for g in range(_GROUPS)),
        tuple((*w.n, *w.aux, *w.closed, *w.empty, *w.nbytes, *w.hosts, *w.ports)
              for w in r.windows))


class Pool:
    """One shard's pattern-state records, guarded by the shard's lock.

    Records are numbered 1..capacity (an entry's ``rare`` is 0 for none).
    Freed numbers are reused last-freed first; a full pool recycles the
    sampled record whose owner has no pattern raised and was updated
    longest ago, or refuses (counted in ``full``).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[Record] = []      # allocated on first use, up to capacity
        self.free: list[int] = []            # numbers of freed records, a stack
        self.flagged: set[int] = set()       # numbers of records whose owner is flagged
        self.used = 0
        self.full = 0                        # records wanted when none could be had
