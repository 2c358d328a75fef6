"""Periodic summaries of a Tracker for a central collector: JSON-able, bounded, pseudonymous.

A Summarizer closes an interval every ``interval`` seconds and hands its
summary to ``on_summary``: the interval's start and end, accepts per
destination class and patterns raised during it, the tracked and flagged
sources at its end, and the ``top`` sources ranked by accepts over the
tracker's window at the interval's end (with their per-class counts and
live patterns), keyed by pseudonym when a pseudonymizer is set. The top
list covers the whole interval when the tracker's ``window`` is at least
the ``interval``; with a shorter window it shows the interval's last
window only (the class totals always cover the whole interval). An interval
with no accept emits nothing; ``stop()`` emits the last one.

Gathering the top sources never holds the interpreter for long: the table
is ranked one shard at a time (a bounded heap per shard, no allocation the
size of the table), and the Summarizer yields between shards, so an accept
waits at most one shard's ranking.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import _core
from ._spec import PATTERNS, TopBy
from ._validate import callable_arg, int_arg, number_arg, seconds_of
from .tracker import SourceStats, Tracker, _TrackerAPI

__all__ = ["Summarizer"]

log = logging.getLogger("connguard.summary")

Summary = dict[str, Any]


class Summarizer:
    """Emit a summary of ``tracker`` every ``interval`` seconds (see the module docstring).

    ``start()`` runs it on a daemon thread, ``stop()`` ends it with a final
    summary; ``summarize()`` (or ``await asummarize()`` from an event loop)
    closes the current interval by hand and returns its summary, or None
    when it saw no accept. An exception from ``on_summary`` is logged and
    counted in ``errors``. ``start`` and ``end`` are read from ``clock``,
    else the tracker's clock; on the tracker's default monotonic clock they
    are stamped in wall-clock seconds (``now=`` given in the tracker's time
    too), which a collector can line up across hosts.
    """

    def __init__(self, tracker: Tracker, *, interval: float = 300.0, top: int = 1000,
                 pseudonymizer: Callable[[str], str] | None = None,
                 on_summary: Callable[[Summary], object] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if not isinstance(tracker, _TrackerAPI):
            raise TypeError(f"tracker must be a connguard Tracker, not {type(tracker).__name__}")
        self._tracker = tracker
        self._interval = number_arg("interval", interval, low=1e-3, allow_low=True)
        self._top = int_arg("top", top, 0, 100_000)
        self._pseudonymizer = callable_arg("pseudonymizer", pseudonymizer)
        self._on_summary = callable_arg("on_summary", on_summary)
        self._clock = callable_arg("clock", clock) or tracker.clock or _core.core.default_clock
        # A collector lines up summaries from many hosts: on the tracker's
        # default monotonic clock, times (now= too) are stamped in wall-clock
        # seconds; a clock of one's own (event time, a test's) stays as it is.
        self._offset = time.time() - self._clock() if self._clock is _core.core.default_clock \
            else 0.0
        self._lock = threading.Lock()          # guards the interval state below
        self._start = self._clock() + self._offset
        self._accepts = tracker.class_accepts()
        self._raised = tracker.raised_by()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def summarize(self, now: float | None = None) -> Summary | None:
        """Close the interval at ``now``: return its summary, None when it saw no accept."""
        ranked = self._ranked(now)
        for _ in ranked:
            time.sleep(0)                      # let accepts run between shards
        return self._close(now, ranked)

    async def asummarize(self, now: float | None = None) -> Summary | None:
        """summarize() for an event loop: awaits between shards instead of sleeping."""
        ranked = self._ranked(now)
        for _ in ranked:
            await asyncio.sleep(0)
        return self._close(now, ranked)

    def start(self) -> Summarizer:
        """Emit a summary every interval on a daemon thread, until stop()."""
        if self._thread is not None:
            raise RuntimeError("the Summarizer is already started")
        self._thread = threading.Thread(target=self._run, name="connguard-summarizer",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Summary | None:
        """Stop the thread (if started) and emit the final interval's summary."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self._emit(self.summarize())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._emit(self.summarize())

    def _emit(self, summary: Summary | None) -> Summary | None:
        if summary is not None and self._on_summary is not None:
            try:
                self._on_summary(summary)
            except Exception:
                self.errors += 1
                log.exception("connguard: an on_summary callback raised")
        return summary

    def _ranked(self, now: float | None) -> _Ranking:
        return _Ranking(self._tracker, self._top, now)

    def _close(self, now: float | None, ranked: _Ranking) -> Summary | None:
        tracker = self._tracker
        # With top=0 the tracker never sees now=: checked here as it would be.
        end = (self._clock() if now is None else seconds_of(now)) + self._offset
        accepts, raised = tracker.class_accepts(), tracker.raised_by()
        with self._lock:
            start, self._start = self._start, end
            before, self._accepts = self._accepts, accepts
            raised_before, self._raised = self._raised, raised
        by_class = {name: accepts[i] - before[i] for i, name in enumerate(tracker.class_names)}
        total = sum(by_class.values())
        if total <= 0:
            return None
        shown = self._pseudonymizer or str
        return {
            "start": start,
            "end": end,
            "accepts": by_class,
            "total_accepts": total,
            "findings": {name: raised[i] - raised_before[i] for i, name in enumerate(PATTERNS)},
            "tracked_sources": tracker.tracked_sources,
            "flagged_sources": dict(zip(PATTERNS, tracker.flagged_by(), strict=True)),
            "window": tracker.window,
            "top": [_entry(stats, shown(stats.source), tracker.window)
                    for stats in ranked.result()],
        }


class _Ranking:
    """Iterate to do the work in small steps; result() is then the top n.

    One step ranks one shard (only what beats the n-th best held so far
    comes back), and once every shard is ranked, one step reads the
    counters of up to STATS_STEP of the n best.
    """

    STATS_STEP = 100

    def __init__(self, tracker: Tracker, n: int, now: float | None) -> None:
        self._tracker = tracker
        self._n = n
        self._now = now
        self._best: list[tuple[float, int, int]] = []     # a min-heap of (score, -hi, -lo)
        self._stats: list[SourceStats] = []

    def __iter__(self) -> Iterator[None]:
        if self._n == 0:
            return
        tracker = self._tracker
        for shard in range(tracker.shards):
            after = None
            if len(self._best) == self._n:
                score, hi, lo = self._best[0]
                after = (score, -hi, -lo)
            for score, hi, lo in tracker.rank(self._n, TopBy.RATE, self._now, shard, after):
                # The rank order: score, highest first, then the lower key.
                item = (score, -hi, -lo)
                if len(self._best) < self._n:
                    heapq.heappush(self._best, item)
                elif item > self._best[0]:
                    heapq.heapreplace(self._best, item)
            yield
        ordered = sorted(self._best, reverse=True)
        for start in range(0, len(ordered), self.STATS_STEP):
            for _, hi, lo in ordered[start:start + self.STATS_STEP]:
                raw = tracker.stats_raw(-hi, -lo, self._now)
                if raw is not None:                    # evicted meanwhile
                    self._stats.append(tracker._to_stats(raw))
            yield

    def result(self) -> list[SourceStats]:
        return self._stats


def _entry(stats: SourceStats, source: str, window: float) -> dict[str, Any]:
    return {
        "source": source,
        "accepts": round(stats.rate * window),
        "active": stats.active,
        "by_class": stats.by_class,
        "patterns": sorted(stats.patterns),
    }
