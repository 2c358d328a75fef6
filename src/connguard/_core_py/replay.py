"""Batch replay of flows in event-time order (pairs with _pxi/replay.pxi).

A flow is accepted at its start and closed at start + duration. Flows are
pushed in any order; pending accepts wait in a heap keyed (start, push
number), pending closes in one keyed (end, push number), so events play in
time order, an accept before a close at the same instant, and ties in push
order. Every played event moves the replay clock forward; a flow pushed
with a start before the clock arrived too late to be put in order: it is
counted late and played at the clock (its close at no earlier than that).
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .._spec import MAX_TIME
from .table import ShardedTable

# Reasons a flow is skipped; the same text in both cores.
BAD_START = "start is not a finite time"
BAD_DURATION = "duration is not a number >= 0"
BAD_SOURCE = "source is not an address"
BAD_DESTINATION = "destination is not a string"
BAD_SENT = "sent is not a byte count"
BAD_RECEIVED = "received is not a byte count"


def _seconds(value: object) -> float | None:
    """A finite time within +-MAX_TIME, or None."""
    if type(value) is not float and (type(value) is not int):
        return None
    try:
        t = float(value)
    except OverflowError:
        return None
    return t if -MAX_TIME <= t <= MAX_TIME else None


def _duration(value: object) -> float | None:
    """0 for None, else a finite number of seconds >= 0, or None when invalid."""
    if value is None:
        return 0.0
    if type(value) is not float and type(value) is not int:
        return None
    try:
        d = float(value)
    except OverflowError:
        return None
    return d if 0.0 <= d <= MAX_TIME else None


def _count(value: object) -> int | None:
    """-1 for None (unknown), else a byte count clamped to 2**63 - 1, or None when invalid."""
    if value is None:
        return -1
    if type(value) is not int or value < 0:
        return None
    return min(value, 2**63 - 1)


class _Replay:
    """The pending flows of one SourceTable's replay, and its clock.

    Important: one replay call at a time per table (a second, concurrent or
    from inside a finding hook, raises RuntimeError); the table's ordinary
    accept and close stay usable meanwhile, at their own times.
    """

    def __init__(self) -> None:
        self.accepts: list[tuple[float, int, list[Any]]] = []   # guarded by busy
        self.closes: list[tuple[float, int, list[Any]]] = []    # guarded by busy
        self.seq = 0                                               # guarded by busy
        self.clock = -math.inf                                     # guarded by busy
        self.busy = threading.Lock()

    def push(self, table: ShardedTable, classify: Callable[[object], tuple[int, int, int]],
             starts: Sequence[object], durations: Sequence[object],
             sources: Sequence[object], destinations: Sequence[object],
             sent: Sequence[object] | None, received: Sequence[object] | None
             ) -> tuple[int, list[tuple[int, str]]]:
        """Add a batch of flows; return (late, skipped as (index, reason))."""
        n = len(starts)
        for name, column in (("durations", durations), ("sources", sources),
                             ("destinations", destinations), ("sent", sent),
                             ("received", received)):
            if column is not None and len(column) != n:
                raise ValueError(f"{name} has {len(column)} items, starts has {n}")
        late = 0
        skipped: list[tuple[int, str]] = []
        for i in range(n):
            start = _seconds(starts[i])
            if start is None:
                skipped.append((i, BAD_START))
                continue
            duration = _duration(durations[i])
            if duration is None:
                skipped.append((i, BAD_DURATION))
                continue
            source = sources[i]
            try:
                _, hi, lo = table._key(source)                   # type: ignore[arg-type]
            except (TypeError, ValueError):
                skipped.append((i, BAD_SOURCE))
                continue
            destination = destinations[i]
            if not isinstance(destination, str):
                skipped.append((i, BAD_DESTINATION))
                continue
            n_sent = -1 if sent is None else _count(sent[i])
            if n_sent is None:
                skipped.append((i, BAD_SENT))
                continue
            n_received = -1 if received is None else _count(received[i])
            if n_received is None:
                skipped.append((i, BAD_RECEIVED))
                continue
            end = start + duration
            if start < self.clock:
                late += 1
                start = self.clock
                end = max(end, start)
            d = classify(destination)
            flow: list[Any] = [hi, lo, d, n_sent, n_received, source, end]
            heapq.heappush(self.accepts, (start, self.seq, flow))
            self.seq += 1
        return late, skipped
