"""The source table: per-source counts, windows and patterns (pairs with _pxi/sources.pxi)."""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Callable

from .._spec import COUNT_MAX, MAX_ACTIVE, MAX_CLASSES, Pattern, RawStats, TopBy
from .destinations import classify
from .table import Header, ShardedTable, Table, table_flags_changed

# Plain ints: IntFlag arithmetic would cost on every accept.
_FLOOD = int(Pattern.CONN_FLOOD)
_RATE = int(Pattern.CONN_RATE)


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
    __slots__ = ("window", "rate_threshold", "concurrent_threshold", "deny")

    def __init__(self, window: float, rate_threshold: float, concurrent_threshold: int,
                 deny: bool) -> None:
        self.window = window
        self.rate_threshold = rate_threshold
        self.concurrent_threshold = concurrent_threshold
        self.deny = deny              # no room: refuse (else count open, untracked)


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
    """Count one accepted connection; 0 when there was no room, else 1, plus
    (bits << 8) for patterns raised on this source for the first time."""
    e = self.find(hi, lo)
    if e is None:
        e = self.insert(hi, lo, now)
        if e is None:
            if not cfg.deny:
                self.open_untracked(hi, lo)
            return 0
    elif e.active == MAX_ACTIVE:                 # saturated: counted open, untracked
        self.overflows += 1
        if not cfg.deny:
            self.open_untracked(hi, lo)
        return 0
    else:
        now = advance(e, now, cfg.window)
    before = e.patterns
    e.active += 1
    if e.active == 1:
        self.active_sources += 1
    self.active_connections += 1
    e.total += 1
    cls, host_bit, port_bit = d
    if e.cls_cur[cls] < COUNT_MAX:
        e.cls_cur[cls] += 1
    e.hosts_cur |= host_bit
    e.ports_cur |= port_bit
    if e.active >= cfg.concurrent_threshold:
        e.patterns |= _FLOOD
    update_rate_flag(e, now, cfg)
    if before != e.patterns:
        table_flags_changed(self, before, e.patterns)
    fresh: int = e.patterns & ~e.reported
    e.reported |= fresh
    return 1 | (fresh << 8)


def table_close(self: Table, hi: int, lo: int, now: float, cfg: Config) -> bool:
    """Count one closed connection; an unknown or idle source is a no-op.

    A connection that was counted open untracked is closed first.
    """
    if self.untracked and self.close_untracked(hi, lo):
        return True
    e = self.find(hi, lo)
    if e is None or e.active == 0:
        return False
    now = advance(e, now, cfg.window)
    before = e.patterns
    e.active -= 1
    self.active_connections -= 1
    if e.active == 0:
        self.active_sources -= 1
        e.patterns &= ~_FLOOD
    update_rate_flag(e, now, cfg)
    if before != e.patterns:
        table_flags_changed(self, before, e.patterns)
    return True


def update_rate_flag(e: Entry, now: float, cfg: Config) -> None:
    if accept_rate(e, now, cfg.window) > cfg.rate_threshold:
        e.patterns |= _RATE
    else:
        e.patterns &= ~_RATE


def _raw(e: Entry, now: float, window: float) -> RawStats:
    """Pack a copied entry, advanced to ``now``, for the Python side."""
    if now < e.stamp:
        now = e.stamp
    roll(e, now, window)
    return RawStats(e.key_hi, e.key_lo, e.active, e.total, e.first_seen, e.stamp,
                    e.patterns, window_weight(now, window), tuple(e.cls_cur), tuple(e.cls_prev),
                    e.hosts_cur, e.hosts_prev, e.ports_cur, e.ports_prev)


class SourceTable(ShardedTable):
    """Per-source connection counts in sharded, bounded hash tables.

    The public face is connguard.Tracker, which validates arguments and
    turns the raw tuples returned here into SourceStats.
    """

    def __init__(self, *, capacity: int, shards: int, window: float,
                 concurrent_threshold: int, rate_threshold: float,
                 ipv4_prefix: int, ipv6_prefix: int, deny: bool,
                 port_classes: bytes, clock: Callable[[], float] | None,
                 seed: int) -> None:
        if len(port_classes) != 65536 or max(port_classes) >= MAX_CLASSES:
            raise ValueError("port_classes must map all 65536 ports to a class id")
        self._setup(capacity, shards, Entry, ipv4_prefix, ipv6_prefix, clock, seed)
        self._port_class = bytes(port_classes)
        self._cfg = Config(float(window), float(rate_threshold), int(concurrent_threshold),
                           bool(deny))

    def accept(self, source: str, destination: str | None = "",
               now: float | None = None) -> bool:
        """Count an accepted connection; False only when overflow="deny" refuses it."""
        _, hi, lo = self._key(source)
        d = classify(destination, self._port_class)
        result = tracker_accept(self, hi, lo, d, self._now(now))
        return result != 0 or not self._cfg.deny

    def close(self, source: str, now: float | None = None) -> bool:
        """Count a closed connection; return False when there was none to close."""
        return tracker_close(self, source, now)

    def stats_raw(self, hi: int, lo: int, now: float | None = None) -> RawStats | None:
        """Return one source's raw counters, windows advanced to ``now``, or None."""
        t = self._now(now)
        i = self._shard_of(hi, lo)
        with self._lock_of(i):
            e = self._tables[i].copy(hi, lo)
        return None if e is None else _raw(e, t, self._cfg.window)

    def top_raw(self, n: int, by: int, now: float | None = None) -> list[RawStats]:
        """Return the raw counters of the n highest-ranked sources."""
        t = self._now(now)
        window = self._cfg.window
        # The n best by (score desc, key): n entries held, never the whole table.
        ranked: list[tuple[float, int, int]] = []
        for i, table in enumerate(self._tables):
            with self._lock_of(i):
                shard: list[tuple[float, int, int]] = []
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
                    shard.append((-score, e.key_hi, e.key_lo))
            ranked = heapq.nsmallest(n, ranked + heapq.nsmallest(n, shard))
        result = []
        for _, hi, lo in ranked:
            raw = self.stats_raw(hi, lo, t)
            if raw is not None:
                result.append(raw)
        return result

    def memory_bytes(self) -> int:
        """Return the bytes held by the tables, their lists and the port classes."""
        return super().memory_bytes() + sys.getsizeof(self._port_class) + sum(
            sys.getsizeof(e.cls_cur) + sys.getsizeof(e.cls_prev)
            for t in self._tables for e in list(t.entries))


def tracker_close(tracker: SourceTable, source: str, now: float | None) -> bool:
    _, hi, lo = tracker._key(source)
    t = tracker._now(now)
    i = tracker._shard_of(hi, lo)
    with tracker._lock_of(i):
        return table_close(tracker._tables[i], hi, lo, t, tracker._cfg)


def tracker_accept(tracker: SourceTable, hi: int, lo: int, d: tuple[int, int, int], t: float) -> int:
    i = tracker._shard_of(hi, lo)
    with tracker._lock_of(i):
        return table_accept(tracker._tables[i], hi, lo, d, t, tracker._cfg)
