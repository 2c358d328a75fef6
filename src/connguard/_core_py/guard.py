"""One call per accepted connection (pairs with _pxi/guard.pxi)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from .._spec import CAPPED, LIMIT_SALT, REFUSED, VERDICT_CODES, Reason, Source, Take
from .bans import BanTable, ban_active
from .limits import BucketTable, limit_take
from .sources import Connection, SourceTable, tracker_accept, tracker_close


class GuardTable:
    """One call per accepted connection: the ban table, the limiter, the tracker.

    The address is parsed once, with the tracker's prefixes (the Guard makes
    the ban table's match); each table's shard lock is taken in turn, never
    two at once. connguard.Guard is the public face.
    """

    def __init__(self, *, tracker: SourceTable, bans: BanTable | None,
                 limiter: BucketTable | None, enforce: bool, verdicts: tuple[Any, ...],
                 on_limit: Callable[[Source, int, float | None], object] | None,
                 on_flag: Callable[[Source, int], object] | None, max_open: int = 0) -> None:
        if len(verdicts) != VERDICT_CODES:
            raise ValueError(f"verdicts must hold {VERDICT_CODES} entries")
        if max_open:
            tracker.set_open_cap(max_open, enforce)
        self._sources = tracker
        self._ban_table = bans
        self._buckets = limiter
        self._enforce = bool(enforce)
        self._verdicts = verdicts
        self._on_limit = on_limit
        self._on_flag = on_flag
        # Each part answers in its own timebase: a part with a clock of its
        # own reads it (unless the caller passed now=, taken as every part's
        # time); parts sharing the tracker's clock share its reading.
        self._ban_clock = bans is not None and bans._clock is not tracker._clock
        self._limit_clock = limiter is not None and limiter._clock is not tracker._clock
        self._counts = [0] * VERDICT_CODES     # verdicts returned, by code
        self._counts_lock = threading.Lock()   # guards _counts

    def accept(self, source: Source, destination: str | None = "", now: float | None = None) -> Any:
        """Check and count an accepted connection; return its verdict."""
        code, _ = self._decide(source, destination, now)
        with self._counts_lock:
            self._counts[code] += 1
        return self._verdicts[code]

    def open(self, source: Source, destination: str | None = "",
             now: float | None = None) -> Connection:
        """Check and count an accepted connection as accept does; return its Connection."""
        code, (hi, lo, cls) = self._decide(source, destination, now)
        with self._counts_lock:
            self._counts[code] += 1
        return Connection(source, self._sources, self, hi, lo, cls, code)

    def accept_many(self, sources: Iterable[Source], destination: str | None = "",
                    now: float | None = None) -> list[Any]:
        """Check and count an accepted connection from each source, in order,
        all to ``destination``; return their verdicts, as a list.

        As Tracker.accept_many: the tracker's clock is read once, every
        source is parsed before anything is counted or checked (an invalid
        one raises naming its position). Each connection is checked against
        bans and the limiter as accept checks it, callbacks included; one
        that raises stops the batch there, the connections before it counted.
        """
        batch, keys, d, t = self._sources._accepts(sources, destination, now)
        out = []
        for source, (hi, lo) in zip(batch, keys, strict=True):
            code = self._judge(source, hi, lo, d, now, t)
            with self._counts_lock:
                self._counts[code] += 1
            out.append(self._verdicts[code])
        return out

    def close_many(self, sources: Iterable[Source], now: float | None = None, *,
                   sent: Iterable[int | None] | None = None,
                   received: Iterable[int | None] | None = None) -> list[bool]:
        """Count a closed connection from each source, as Tracker.close_many."""
        return self._sources._close_many(sources, now, sent, received, self)

    def _decide(self, source: Source, destination: str | None,
                now: float | None) -> tuple[int, tuple[int, int, int]]:
        """Decide and count an accept; return its verdict code, and the
        source's netblock key and the destination's class."""
        tracker = self._sources
        _, hi, lo = tracker._key(source)
        d = tracker._classify(destination)
        return self._judge(source, hi, lo, d, now, tracker._now(now)), (hi, lo, d[0])

    def _judge(self, source: Source, hi: int, lo: int, d: tuple[int, int, int],
               now: float | None, t: float) -> int:
        """Check and count an accept of a parsed source at the tracker's time
        ``t`` (``now`` as the caller gave it); return its verdict code."""
        tracker = self._sources
        reason = Reason.NONE
        if self._ban_table is not None and ban_active(
                self._ban_table, hi, lo,
                self._ban_table._now(None) if self._ban_clock and now is None else t):
            if self._enforce:
                return Reason.BANNED + REFUSED
            reason = Reason.BANNED
        if self._buckets is not None:
            level, violations = limit_take(
                self._buckets, hi ^ LIMIT_SALT, lo,
                self._buckets._now(None) if self._limit_clock and now is None else t)
            # The limiter keys addresses by netblock too: limiter.allow(source) spends this bucket.
            if level != Take.ALLOWED:
                cfg = self._buckets._cfg
                if self._on_limit is not None and (
                        (level == Take.VIOLATION and violations == cfg.warn_after + 1)
                        or (level == Take.ABUSE and violations == cfg.abuse_after)):
                    self._on_limit(source, level, now)
                if self._enforce:
                    return (reason or Reason.LIMIT) + REFUSED
                if reason == Reason.NONE:
                    reason = Reason.LIMIT
        counted = tracker_accept(tracker, hi, lo, d, t)
        if counted & 3 != 1:                     # rare: no room, or at max_open
            if counted & 1 == 0:
                if counted == CAPPED:
                    return (reason or Reason.FLOOD) + REFUSED
                if tracker._cfg.deny:
                    return (reason or Reason.OVERFLOW) + REFUSED
            elif reason == Reason.NONE:
                reason = Reason.FLOOD
        self._announce(source, counted, t)
        return reason

    def _announce(self, source: Source, counted: int, t: float) -> None:
        """Tell of patterns an accept or close raised; no lock is held here."""
        if counted >> 16 and self._on_flag is not None:
            self._on_flag(source, counted >> 16)
        hook = self._sources._on_finding
        if counted >> 8 & 0xFF and hook is not None:
            hook(source, counted >> 8 & 0xFF, t)

    def verdict_counts(self) -> tuple[int, ...]:
        """Return how many times each verdict was returned, by verdict index."""
        with self._counts_lock:
            return tuple(self._counts)

    def close(self, source: Source, now: float | None = None, *, sent: int | None = None,
              received: int | None = None, destination: str | None = None) -> bool:
        """Count a closed connection; return False when there was none to close."""
        counted, t = tracker_close(self._sources, source, now, sent, received, destination)
        self._announce(source, counted, t)
        return counted != 0
