"""The source table: per-source counts, windows and patterns (pairs with _pxi/sources.pxi)."""

from __future__ import annotations

import heapq
import math
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._spec import (
    CAPPED,
    COUNT_MAX,
    MAX_ACTIVE,
    MAX_CLASSES,
    PATTERN_STATE_MAX,
    PATTERN_STATE_MIN,
    PATTERN_STATE_RATIO,
    REFUSED,
    Group,
    Pattern,
    PatternLimits,
    RawRecord,
    RawStats,
    Reason,
    Source,
    TopBy,
)
from .destinations import classify
from .patterns import (
    Pool,
    Record,
    accept_triggers,
    count_accept,
    count_close,
    evaluate,
    live_patterns,
    mark_timed,
    raw_record,
    record_roll,
    seed_record,
)
from .replay import _Replay
from .table import Header, ShardedTable, Table, table_flags_changed

if TYPE_CHECKING:
    from .guard import GuardTable


def batch_of(values: Iterable[Any], name: str = "sources", items: str = "sources") -> list[Any]:
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


def tell_raised(tracker: SourceTable, guard: GuardTable | None, source: Any, result: int,
                t: float) -> None:
    """Tell of the patterns a close raised (``result`` > 0xFF, no lock held):
    the ``guard`` the connection went through, if any (it logs and calls its
    own hooks), else the tracker's finding hook."""
    if guard is not None:
        guard._announce(source, result, t)
    elif tracker._on_finding is not None:
        tracker._on_finding(source, result >> 8 & 0xFF, t)


def _bytes_column(n: int, name: str, column: Iterable[int | None] | None) -> list[int]:
    """A batch's ``name`` bytes (-1: unknown) from ``column``: None (unknown)
    or one count (int >= 0, or None) per source."""
    if column is None:
        return [-1] * n
    counts = batch_of(column, name, "byte counts")
    if len(counts) != n:
        raise ValueError(f"{name} has {len(counts)} entries for {n} sources")
    return [_bytes_arg(f"{name}[{i}]", value) for i, value in enumerate(counts)]


# Plain ints: IntFlag arithmetic would cost on every accept.
_FLOOD = int(Pattern.CONN_FLOOD)
_RATE = int(Pattern.CONN_RATE)
_ALL_GROUPS = (1 << len(Group)) - 1          # a new record: every pattern is judged


class Entry(Header):
    """A tracked source; ``stamp`` is when it was last seen, which also fixes
    the window bucket that ``cls_cur``, ``hosts_cur`` and ``ports_cur`` count."""

    __slots__ = ("first_seen", "total", "cls_cur", "cls_prev", "hosts_cur", "hosts_prev",
                 "ports_cur", "ports_prev")

    def __init__(self, hi: int, lo: int, now: float) -> None:
        super().__init__(hi, lo, now)
        self.first_seen = now
        self.total = 0
        self.cls_cur = [0] * MAX_CLASSES
        self.cls_prev = [0] * MAX_CLASSES
        self.hosts_cur = self.hosts_prev = 0
        self.ports_cur = self.ports_prev = 0


def roll(e: Entry, now: float, window: float) -> None:
    """Advance e's window buckets to ``now`` (now >= e.stamp)."""
    if now == e.stamp:
        return
    gap = math.floor(now / window) - math.floor(e.stamp / window)
    if gap == 0:
        return
    if gap == 1:
        e.cls_prev = e.cls_cur
        e.hosts_prev = e.hosts_cur
        e.ports_prev = e.ports_cur
    else:
        e.cls_prev = [0] * MAX_CLASSES
        e.hosts_prev = 0
        e.ports_prev = 0
    e.cls_cur = [0] * MAX_CLASSES
    e.hosts_cur = 0
    e.ports_cur = 0


def window_weight(now: float, window: float) -> float:
    """Weight of the previous bucket: the share of it still inside the window."""
    return 1.0 - (now / window - math.floor(now / window))


def accept_rate(e: Entry, now: float, window: float) -> float:
    return (sum(e.cls_cur) + sum(e.cls_prev) * window_weight(now, window)) / window


class Config:
    __slots__ = ("window", "rate_threshold", "concurrent_threshold", "deny", "lim", "open_cap",
                 "cap_refuses")

    def __init__(self, window: float, rate_threshold: float, concurrent_threshold: int,
                 deny: bool, lim: PatternLimits) -> None:
        self.window = window
        self.rate_threshold = rate_threshold
        self.concurrent_threshold = concurrent_threshold
        self.deny = deny              # no room: refuse (else count open, untracked)
        self.lim = lim                # the windowed patterns' thresholds
        self.open_cap = MAX_ACTIVE    # a Guard's max_open (MAX_ACTIVE: none); set once, before use
        self.cap_refuses = False      # an accept at open_cap is refused (else counted, over it)


def advance(e: Entry, now: float, window: float) -> float:
    """Move e to ``now``; return the time its update counts at.

    Time never runs back for a source: a step back of up to one window
    (events out of order) counts at the source's last-seen time. A longer
    step back means the clock was reset, or an earlier timestamp was far in
    the future: the source's window starts again at ``now``, so one bad
    timestamp cannot freeze it.
    """
    if now < e.stamp:
        if e.stamp - now <= window:
            return e.stamp
        e.cls_prev = [0] * MAX_CLASSES
        e.cls_cur = [0] * MAX_CLASSES
        e.hosts_cur = e.hosts_prev = e.ports_cur = e.ports_prev = 0
        e.stamp = now
        return now
    roll(e, now, window)
    e.stamp = now
    return now


def table_accept(self: Table, hi: int, lo: int, d: tuple[int, int, int], now: float,
                 cfg: Config) -> int:
    """Count one accepted connection; 0 when there was no room, CAPPED when
    refused at the source's open_cap, else 1 | CAPPED when counted at or
    past it | raised << 8 | first << 16: the pattern bits this accept
    raised, and those raised on this source for the first time."""
    cls, host_bit, port_bit = d
    e = self.find(hi, lo)
    over = 0
    # Counted here once for every accept, and taken back on the rare refusals.
    self.class_accepts[cls] += 1
    if e is None:
        e = self.insert(hi, lo, now)
        if e is None:
            if cfg.deny:
                self.class_accepts[cls] -= 1
            else:
                self.open_untracked(hi, lo)
            return 0
    else:
        if e.active >= cfg.open_cap:
            over = _at_cap(self, e, hi, lo, cls, cfg)
            if over != CAPPED or cfg.cap_refuses:
                return over
        now = advance(e, now, cfg.window)
    before = e.patterns
    e.active += 1
    if e.active == 1:
        self.active_sources += 1
    self.active_connections += 1
    e.total += 1
    if e.cls_cur[cls] < COUNT_MAX:
        e.cls_cur[cls] += 1
    e.hosts_cur |= host_bit
    e.ports_cur |= port_bit
    if e.active >= cfg.concurrent_threshold:
        e.patterns |= _FLOOD
    update_rate_flag(e, now, cfg)
    if e.rare or accept_triggers(cfg.lim, cls, e.cls_cur[cls], e.ports_cur | e.ports_prev,
                                 e.patterns):
        _accept_record(self, e, d, before, now, cfg)
    return _raised(self, e, before) | over


def _at_cap(self: Table, e: Entry, hi: int, lo: int, cls: int, cfg: Config) -> int:
    """An accept of a source holding open_cap connections or more: 0 when its
    entry is saturated (counted open untracked, or refused with deny), else
    CAPPED (refused when cfg.cap_refuses, else counted over the cap)."""
    if e.active == MAX_ACTIVE:                   # saturated: counted open, untracked
        self.overflows += 1
        if cfg.deny:
            self.class_accepts[cls] -= 1
        else:
            self.open_untracked(hi, lo)
        return 0
    if cfg.cap_refuses:
        self.class_accepts[cls] -= 1
    return CAPPED


def _accept_record(self: Table, e: Entry, d: tuple[int, int, int], before: int, now: float,
                   cfg: Config) -> None:
    """An accept's pattern-state work (most accepts need none)."""
    r: Record | None
    dirty = _ALL_GROUPS
    if e.rare:
        r = _record_at(self, e, now, cfg)
        dirty = count_accept(r, *d, cfg.lim)
    else:
        r = _new_record(self, e, now, cfg)
    if r is not None:
        _judge(self, r, e, before, now, cfg, dirty)


def _record_at(self: Table, e: Entry, now: float, cfg: Config) -> Record:
    assert self.pool is not None
    r = self.pool.records[e.rare - 1]
    record_roll(r, now, cfg.lim)
    return r


def _new_record(self: Table, e: Entry, now: float, cfg: Config) -> Record | None:
    r = self.pool_take(e, now)
    if r is not None:
        seed_record(r, e.cls_cur, e.cls_prev, e.hosts_cur | e.hosts_prev, e.ports_cur | e.ports_prev,
             cfg.lim)
    return r


def _judge(self: Table, r: Record, e: Entry, before: int, now: float, cfg: Config,
           dirty: int) -> None:
    """Raise or clear e's windowed patterns from its record; date every raised bit."""
    if r.patterns != before:                     # a new record: nothing dated yet
        before = 0
    e.patterns = evaluate(r, e.patterns, now, cfg.lim, dirty)
    mark_timed(r, before, e.patterns, now)
    self.pool_mark(e.rare, e.patterns)


def _raised(self: Table, e: Entry, before: int) -> int:
    """Account for e's pattern change; return 1 | raised << 8 | first << 16."""
    after: int = e.patterns
    if before == after:
        return 1
    table_flags_changed(self, before, after)
    raised = after & ~before
    for bit in range(8):
        if raised >> bit & 1:
            self.raised_by[bit] += 1
    first: int = after & ~e.reported
    e.reported |= first
    return 1 | raised << 8 | first << 16


def table_close(self: Table, hi: int, lo: int, now: float, cfg: Config, cls: int = -1,
                sent: int = -1, received: int = -1) -> int:
    """Count one closed connection; 0 for an unknown or idle source, else as
    table_accept. ``cls`` is -1 when the destination is unknown, ``sent``
    and ``received`` -1 when unknown.

    A connection that was counted open untracked is closed first.
    """
    if self.untracked and self.close_untracked(hi, lo):
        return 1
    e = self.find(hi, lo)
    if e is None or e.active == 0:
        return 0
    now = advance(e, now, cfg.window)
    before = e.patterns
    e.active -= 1
    self.active_connections -= 1
    if e.active == 0:
        self.active_sources -= 1
        e.patterns &= ~_FLOOD
    update_rate_flag(e, now, cfg)
    if e.rare or received == 0 or e.patterns:
        _close_record(self, e, cls, sent, received, before, now, cfg)
    return _raised(self, e, before)


def _close_record(self: Table, e: Entry, cls: int, sent: int, received: int, before: int,
                  now: float, cfg: Config) -> None:
    """A close's pattern-state work (see _accept_record)."""
    fresh = e.rare == 0
    r = _new_record(self, e, now, cfg) if fresh else _record_at(self, e, now, cfg)
    if r is not None:
        dirty = count_close(r, cls, sent, received, now, cfg.lim)
        _judge(self, r, e, before, now, cfg, _ALL_GROUPS if fresh else dirty)


def update_rate_flag(e: Entry, now: float, cfg: Config) -> None:
    if accept_rate(e, now, cfg.window) > cfg.rate_threshold:
        e.patterns |= _RATE
    else:
        e.patterns &= ~_RATE


def _raw(e: Entry, r: Record | None, now: float, cfg: Config) -> RawStats:
    """Pack a copied entry (and its copied record), advanced to ``now``, for the Python side."""
    if now < e.stamp:
        now = e.stamp
    roll(e, now, cfg.window)
    patterns = e.patterns
    if r is not None:
        record_roll(r, max(now, r.stamp), cfg.lim)
        patterns = live_patterns(r, patterns, max(now, r.stamp), cfg.lim)
    return RawStats(e.key_hi, e.key_lo, e.active, e.total, e.first_seen, e.stamp,
                    patterns, window_weight(now, cfg.window), tuple(e.cls_cur),
                    tuple(e.cls_prev), e.hosts_cur, e.hosts_prev, e.ports_cur, e.ports_prev)


def pool_capacity(capacity: int) -> int:
    """Pattern-state records for a shard of ``capacity`` sources."""
    return min(max(-(-capacity // PATTERN_STATE_RATIO), PATTERN_STATE_MIN), PATTERN_STATE_MAX)


class SourceTable(ShardedTable):
    """Per-source connection counts in sharded, bounded hash tables.

    The public face is connguard.Tracker, which validates arguments and
    turns the raw tuples returned here into SourceStats and Findings.
    ``_on_finding``, when set, is called as ``(source, bits, now)`` after the
    shard lock is released, with the pattern bits an accept or close raised.
    """

    _on_finding: Callable[[object, int, float], object] | None = None

    def __init__(self, *, capacity: int, shards: int, window: float,
                 concurrent_threshold: int, rate_threshold: float,
                 ipv4_prefix: int, ipv6_prefix: int, deny: bool,
                 port_classes: bytes, clock: Callable[[], float] | None,
                 seed: int, patterns: PatternLimits, watch: tuple[int, ...] = (),
                 watch_class: int = 0) -> None:
        if len(port_classes) != 65536 or max(port_classes) >= MAX_CLASSES:
            raise ValueError("port_classes must map all 65536 ports to a class id")
        if not isinstance(patterns, PatternLimits):
            raise TypeError("patterns must be a PatternLimits")
        if not 0 <= watch_class < MAX_CLASSES:
            raise ValueError("watch_class must be a class id")
        self._setup(capacity, shards, Entry, ipv4_prefix, ipv6_prefix, clock, seed)
        for table in self._tables:
            table.pool = Pool(pool_capacity(table.capacity))
        self._port_class = bytes(port_classes)
        self._watch = frozenset(watch)           # host hashes of the login watch-list
        self._watch_class = watch_class
        self._cfg = Config(float(window), float(rate_threshold), int(concurrent_threshold),
                           bool(deny), patterns)
        self._replay = _Replay()

    def set_finding_hook(self, hook: Callable[[object, int, float], object] | None) -> None:
        """Set (or clear, with None) the callable told of raised patterns."""
        self._on_finding = hook

    def set_open_cap(self, cap: int, refuses: bool) -> None:
        """Cap each source's open connections at ``cap`` (0: no cap); past it an
        accept is refused (``refuses``) or counted and marked over the cap.

        Set once, before the table is used: a Guard sets it as it is made.
        Raises RuntimeError when a cap is already set.
        """
        if self._cfg.open_cap != MAX_ACTIVE:
            raise RuntimeError("this tracker's open-connection cap is set already "
                               "(one Guard per tracker may set max_open)")
        if not 0 <= cap <= MAX_ACTIVE:
            raise OverflowError(f"cap out of range: {cap}")
        if cap:
            self._cfg.open_cap = cap
            self._cfg.cap_refuses = bool(refuses)

    def _classify(self, destination: object) -> tuple[int, int, int]:
        return classify(destination, self._port_class, self._watch, self._watch_class)

    def accept(self, source: Source, destination: str | None = "",
               now: float | None = None) -> bool:
        """Count an accepted connection; False only when it is refused: by
        overflow="deny", or at a Guard's max_open cap with enforce=True."""
        _, hi, lo = self._key(source)
        d = self._classify(destination)
        t = self._now(now)
        result = tracker_accept(self, hi, lo, d, t)
        if result >> 8 & 0xFF and self._on_finding is not None:
            self._on_finding(source, result >> 8 & 0xFF, t)
        return (result & 1) != 0 or (result == 0 and not self._cfg.deny)

    def open(self, source: Source, destination: str | None = "",
             now: float | None = None) -> Connection:
        """Count an accepted connection as accept does; return its Connection."""
        _, hi, lo = self._key(source)
        d = self._classify(destination)
        t = self._now(now)
        result = tracker_accept(self, hi, lo, d, t)
        code: int
        if result & 1 or (result == 0 and not self._cfg.deny):
            code = Reason.FLOOD if result & CAPPED else Reason.NONE
        else:
            code = (Reason.FLOOD if result else Reason.OVERFLOW) + REFUSED
        conn = Connection(source, self, None, hi, lo, d[0], code)
        if result >> 8 & 0xFF and self._on_finding is not None:
            self._on_finding(source, result >> 8 & 0xFF, t)
        return conn

    def close(self, source: Source, now: float | None = None, *, sent: int | None = None,
              received: int | None = None, destination: str | None = None) -> bool:
        """Count a closed connection; return False when there was none to close.

        ``sent`` and ``received`` are the connection's bytes (None: unknown);
        with ``destination`` its bytes count for that destination's class.
        """
        result, t = tracker_close(self, source, now, sent, received, destination)
        if result >> 8 & 0xFF and self._on_finding is not None:
            self._on_finding(source, result >> 8 & 0xFF, t)
        return result != 0

    def accept_many(self, sources: Iterable[Source], destination: str | None = "",
                    now: float | None = None) -> list[bool]:
        """Count an accepted connection from each source, in order, all to
        ``destination`` at one time (the clock is read once); return what
        accept would have returned for each, as a list.

        Every source is parsed before any is counted: an invalid one raises
        ValueError or TypeError naming its position, and nothing is counted.
        The finding hook runs as accept runs it; one that raises stops the
        batch there, the connections before it counted. (The compiled core loads
        table lines a few sources ahead; this one has nothing to gain.)
        """
        batch, keys, d, t = self._accepts(sources, destination, now)
        out = []
        for source, (hi, lo) in zip(batch, keys, strict=True):
            result = tracker_accept(self, hi, lo, d, t)
            out.append((result & 1) != 0 or (result == 0 and not self._cfg.deny))
            if result >> 8 & 0xFF and self._on_finding is not None:
                self._on_finding(source, result >> 8 & 0xFF, t)
        return out

    def close_many(self, sources: Iterable[Source], now: float | None = None, *,
                   sent: Iterable[int | None] | None = None,
                   received: Iterable[int | None] | None = None) -> list[bool]:
        """Count a closed connection from each source, in order, at one time;
        return what close would have returned for each.

        ``sent`` and ``received`` are None (unknown) or one byte count per
        source (an int >= 0, or None). Everything is checked before anything
        is counted, as in accept_many: a bad count raises naming its
        position (``sent[3]``).
        """
        return self._close_many(sources, now, sent, received, None)

    def _close_many(self, sources: Iterable[Source], now: float | None,
                    sent: Iterable[int | None] | None, received: Iterable[int | None] | None,
                    guard: GuardTable | None) -> list[bool]:
        """close_many; a Guard's batch tells its ``guard`` of raised patterns."""
        batch = batch_of(sources)
        keys = self._keyed(batch)
        n_sent = _bytes_column(len(batch), "sent", sent)
        n_received = _bytes_column(len(batch), "received", received)
        t = self._now(now)
        out = []
        for source, (hi, lo), s, r in zip(batch, keys, n_sent, n_received, strict=True):
            result = tracker_close_key(self, hi, lo, t, -1, s, r)
            out.append(result != 0)
            if result >> 8:                        # no lock is held here
                tell_raised(self, guard, source, result, t)
        return out

    def _accepts(self, sources: Iterable[Source], destination: str | None,
                 now: float | None) -> tuple[list[Source], list[tuple[int, int]],
                                             tuple[int, int, int], float]:
        """A batch of accepts made ready: the sources, their keys, the
        destination classified, the time."""
        batch = batch_of(sources)
        keys = self._keyed(batch)
        return batch, keys, self._classify(destination), self._now(now)

    def _keyed(self, batch: list[Source]) -> list[tuple[int, int]]:
        """Parse every source of a batch; raise naming the first invalid one."""
        keys = []
        for i, source in enumerate(batch):
            try:
                _, hi, lo = self._key(source)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"sources[{i}]: {exc}") from None
            keys.append((hi, lo))
        return keys

    def replay(self, starts: Sequence[object], durations: Sequence[object],
               sources: Sequence[object], destinations: Sequence[object],
               sent: Sequence[object] | None = None, received: Sequence[object] | None = None,
               *, keep: int | None = None) -> tuple[int, int, list[tuple[int, str]]]:
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
        n_keep = _keep_arg(keep)
        state = self._replay
        if not state.busy.acquire(blocking=False):
            raise RuntimeError("a replay is already running on this table")
        try:
            late, skipped = state.push(self, self._classify, starts, durations, sources,
                                       destinations, sent, received)
            played = 0
            while len(state.accepts) > max(n_keep, 0):
                start = state.accepts[0][0]
                while state.closes and state.closes[0][0] < start:
                    self._replay_close(state)
                _, seq, flow = heapq.heappop(state.accepts)
                hi, lo, d, _, _, source, end = flow
                state.clock = start
                result = tracker_accept(self, hi, lo, d, start)
                if result or not self._cfg.deny:                 # a refused one never closes
                    heapq.heappush(state.closes, (end, seq, flow))
                played += 1
                if result >> 8 & 0xFF and self._on_finding is not None:
                    self._on_finding(source, result >> 8 & 0xFF, start)
            if n_keep < 0:
                while state.closes:
                    self._replay_close(state)
            return played, late, skipped
        finally:
            state.busy.release()

    @property
    def replay_clock(self) -> float:
        """The time of the last event a replay played (-inf before any)."""
        return self._replay.clock

    def destination_classes(self, destinations: Sequence[str | None]) -> bytes:
        """Return the class id of each destination (str, or None for none) as bytes."""
        return bytes(self._classify(d)[0] for d in destinations)

    def _replay_close(self, state: _Replay) -> None:
        end, _, flow = heapq.heappop(state.closes)
        hi, lo, d, sent, received, source, _ = flow
        state.clock = end
        result = tracker_close_key(self, hi, lo, end, d[0], sent, received)
        if result >> 8 & 0xFF and self._on_finding is not None:
            self._on_finding(source, result >> 8 & 0xFF, end)

    def _copy_pair(self, hi: int, lo: int) -> tuple[Entry | None, Record | None]:
        i = self._shard_of(hi, lo)
        table = self._tables[i]
        with self._lock_of(i):
            e = table.copy(hi, lo)
            if e is None or not e.rare:
                return e, None
            assert table.pool is not None
            return e, table.pool.records[e.rare - 1].copy()

    def stats_raw(self, hi: int, lo: int, now: float | None = None) -> RawStats | None:
        """Return one source's raw counters, windows advanced to ``now``, or None."""
        t = self._now(now)
        e, r = self._copy_pair(hi, lo)
        return None if e is None else _raw(e, r, t, self._cfg)

    def record_raw(self, hi: int, lo: int,
                   now: float | None = None) -> tuple[RawStats, RawRecord] | None:
        """Return one source's raw counters and pattern-state record, or None when it has none."""
        t = self._now(now)
        e, r = self._copy_pair(hi, lo)
        if e is None or r is None:
            return None
        raw = _raw(e, r, t, self._cfg)
        return raw, raw_record(r, max(t, r.stamp), self._cfg.lim)

    def findings_raw(self, now: float | None = None) -> list[tuple[RawStats, RawRecord]]:
        """Return the sources with a pattern live at ``now``, with their records.

        Reads only the flagged records (every source with a pattern raised
        has one, in its shard's flagged set): O(flagged sources), never
        O(sources). Nothing is changed: a
        pattern whose evidence has been below its threshold for a full
        window is left out here, and cleared at the source's next event.
        """
        t = self._now(now)
        found: list[tuple[Entry, Record]] = []
        for i, table in enumerate(self._tables):
            with self._lock_of(i):
                pool = table.pool
                assert pool is not None
                for number in pool.flagged:
                    r = pool.records[number - 1]
                    found.append((table.find(r.key_hi, r.key_lo).copy(), r.copy()))
        result = []
        for e, r in found:
            raw = _raw(e, r, t, self._cfg)
            if raw.patterns:
                result.append((raw, raw_record(r, max(t, r.stamp), self._cfg.lim)))
        return result

    def rank(self, n: int, by: int, now: float | None = None, shard: int | None = None,
             after: tuple[float, int, int] | None = None) -> list[tuple[float, int, int]]:
        """Return (score, key_hi, key_lo) of the n highest-ranked sources, best first.

        Ranked by score, highest first, then by key. With ``shard``, only
        that shard's sources; with ``after``, a (score, key_hi, key_lo)
        tuple, only those ranking before it (a caller merging shards passes
        its n-th best). Holds n entries at most, never the table.
        """
        t = self._now(now)
        window = self._cfg.window
        shards = range(len(self._tables)) if shard is None else [self._shard_arg(shard)]
        bound = None if after is None else (-float(after[0]), after[1], after[2])
        ranked: list[tuple[float, int, int]] = []
        for i in shards:
            table = self._tables[i]
            with self._lock_of(i):
                scored: list[tuple[float, int, int]] = []
                for e in table.entries:
                    if by == TopBy.FLAGGED and not e.patterns:
                        continue
                    if by == TopBy.ACTIVE:
                        score = float(e.active)
                    elif by == TopBy.TOTAL:
                        score = float(e.total)
                    else:
                        c = e.copy()
                        at = t if t > c.stamp else c.stamp
                        roll(c, at, window)
                        score = accept_rate(c, at, window)
                    if bound is not None and (-score, e.key_hi, e.key_lo) >= bound:
                        continue
                    scored.append((-score, e.key_hi, e.key_lo))
            ranked = heapq.nsmallest(n, ranked + heapq.nsmallest(n, scored))
        return [(-negated, hi, lo) for negated, hi, lo in ranked]

    def top_raw(self, n: int, by: int, now: float | None = None) -> list[RawStats]:
        """Return the raw counters of the n highest-ranked sources (see rank)."""
        t = self._now(now)
        result = []
        for _, hi, lo in self.rank(n, by, t):
            raw = self.stats_raw(hi, lo, t)
            if raw is not None:                  # evicted between the two passes
                result.append(raw)
        return result

    def _shard_arg(self, shard: object) -> int:
        if not isinstance(shard, int) or not 0 <= shard < len(self._tables):
            raise ValueError(f"shard must be an int in [0, {len(self._tables)}), got {shard!r}")
        return shard

    def class_accepts(self) -> tuple[int, ...]:
        """Return the accepts counted so far, by destination class id."""
        sums = [0] * MAX_CLASSES
        for i, table in enumerate(self._tables):
            with self._lock_of(i):
                sums = [a + b for a, b in zip(sums, table.class_accepts, strict=True)]
        return tuple(sums)

    def raised_by(self) -> tuple[int, ...]:
        """Return how many times each pattern was raised (PATTERN_BITS order)."""
        sums = [0] * 8
        for i, table in enumerate(self._tables):
            with self._lock_of(i):
                sums = [a + b for a, b in zip(sums, table.raised_by, strict=True)]
        return tuple(sums[:len(Pattern)])

    def pattern_state(self) -> tuple[int, int, int]:
        """Return (records in use, records the pools may hold, records wanted when
        a pool had none to spare), summed over the shards."""
        used = capacity = full = 0
        for i, table in enumerate(self._tables):
            with self._lock_of(i):
                pool = table.pool
                assert pool is not None
                used, capacity, full = used + pool.used, capacity + pool.capacity, full + pool.full
        return used, capacity, full

    def memory_bytes(self) -> int:
        """Return the bytes held by the tables, their lists, records and the port classes."""
        total = super().memory_bytes() + sys.getsizeof(self._port_class) + sum(
            sys.getsizeof(e.cls_cur) + sys.getsizeof(e.cls_prev)
            for t in self._tables for e in list(t.entries))
        for t in self._tables:
            assert t.pool is not None
            total += sum(sys.getsizeof(r) for r in list(t.pool.records))
        return total


def _keep_arg(keep: object) -> int:
    """-1 for None (end the replay), else the flows to hold back."""
    if keep is None:
        return -1
    if type(keep) is not int or not 0 <= keep < 2**62:
        raise ValueError(f"keep must be None or an int >= 0, got {keep!r}")
    return keep


def _bytes_arg(name: str, value: object) -> int:
    """-1 for None, else a byte count (an int >= 0)."""
    if value is None:
        return -1
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return min(value, 2**63 - 1)


def tracker_close(tracker: SourceTable, source: Source, now: float | None, sent: object = None,
                  received: object = None, destination: object = None) -> tuple[int, float]:
    """Close one connection of ``source``; return table_close's result and the time used."""
    _, hi, lo = tracker._key(source)
    n_sent = _bytes_arg("sent", sent)
    n_received = _bytes_arg("received", received)
    cls = -1 if destination is None else tracker._classify(destination)[0]
    t = tracker._now(now)
    return tracker_close_key(tracker, hi, lo, t, cls, n_sent, n_received), t


def tracker_close_key(tracker: SourceTable, hi: int, lo: int, t: float, cls: int, sent: int,
                      received: int) -> int:
    i = tracker._shard_of(hi, lo)
    with tracker._lock_of(i):
        return table_close(tracker._tables[i], hi, lo, t, tracker._cfg, cls, sent, received)


_REASON_NAMES = (None, *(reason.name.lower() for reason in list(Reason)[1:]))
_TAKE = threading.Lock()   # makes a Connection's check-and-clear of _open one step


class Connection:
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

    __slots__ = ("_source", "_tracker", "_guard", "_hi", "_lo", "_cls", "_code", "_open")

    def __init__(self, source: object, tracker: SourceTable, guard: Any, hi: int, lo: int,
                 cls: int, code: int) -> None:
        self._source = source         # the source as given: text or a peername tuple
        self._tracker = tracker
        self._guard = guard           # None for a Tracker's handle
        self._hi, self._lo = hi, lo   # the netblock key
        self._cls = cls               # the destination's class
        self._code = code             # the verdict code
        self._open = code < REFUSED   # counted and not closed yet; cleared under _TAKE

    def __bool__(self) -> bool:
        return self._code < REFUSED

    @property
    def source(self) -> object:
        """The source as given: address text or a peername tuple."""
        return self._source

    @property
    def allowed(self) -> bool:
        """True when the connection may proceed."""
        return self._code < REFUSED

    @property
    def reason(self) -> str | None:
        """None, or why the connection was (or would have been) refused."""
        return _REASON_NAMES[self._code % REFUSED]

    @property
    def closed(self) -> bool:
        """True once closed, and for a refused connection."""
        return not self._open

    def close(self, sent: int | None = None, received: int | None = None,
              now: float | None = None) -> bool:
        """Count the close once; False when closed already or refused."""
        n_sent = _bytes_arg("sent", sent)
        n_received = _bytes_arg("received", received)
        t = self._tracker._now(now)           # may raise: read before the flag
        with _TAKE:
            if not self._open:
                return False
            self._open = False
        counted = tracker_close_key(self._tracker, self._hi, self._lo, t, self._cls, n_sent,
                                    n_received)
        if counted >> 8:                       # no lock is held here
            tell_raised(self._tracker, self._guard, self._source, counted, t)
        return True

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if not self._open else "open"
        return f"<Connection allowed={self.allowed} reason={self.reason!r} {state}>"


def tracker_accept(tracker: SourceTable, hi: int, lo: int, d: tuple[int, int, int], t: float) -> int:
    i = tracker._shard_of(hi, lo)
    with tracker._lock_of(i):
        return table_accept(tracker._tables[i], hi, lo, d, t, tracker._cfg)
