"""Guard.accept + Guard.close against the bare Tracker and the ngit-design baseline.

All timed round by round in turn (see interleave()); 1,000 IPv4 sources, none
banned, so every connection takes the whole path: ban check, limiter (for the
full guard), tracker. One test runs over 1,000,000 sources: batches, and
what the limiter's capacity costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import connguard

from .baselines.ngit_tracker import NgitTracker
from .conftest import BATCH, batches, chunked_pairs, interleave, ipv4_sources

DESTINATION = "www.example.com:443"
ROUNDS = 25


def pair_loop(accept: Callable[..., Any], close: Callable[..., Any]) -> Callable[[list[str]], None]:
    def run(batch: list[str]) -> None:
        for source in batch:
            accept(source, DESTINATION)
            close(source)

    return run


def test_guard_pair_1k_sources(benchmark: Any) -> None:
    sources = ipv4_sources(1_000)
    tracker = connguard.Tracker()
    bans_only = connguard.Guard(limiter=False)
    # A limiter sized for connection rates: every pair here is allowed.
    full = connguard.Guard(limiter=connguard.RateLimiter(rate=1e6, burst=1e6))
    ngit = NgitTracker()
    runs = {
        "guard_bans": pair_loop(bans_only.accept, bans_only.close),
        "tracker": pair_loop(tracker.accept, tracker.close),
        "guard_full": pair_loop(full.accept, full.close),
        "ngit": pair_loop(ngit.accept, ngit.close),
    }
    for run in runs.values():
        run(sources)
    others = {name: (runs[name], batches(sources, BATCH // (20 if name == "ngit" else 1)))
              for name in ("tracker", "guard_full", "ngit")}
    benchmark.group = "guard pair x1000"
    ns = interleave(benchmark, runs["guard_bans"], batches(sources, BATCH), others, ROUNDS)
    if ns is not None:
        ns["guard_bans"] = ns.pop("compiled")
        benchmark.extra_info.update(kind="guard", **{f"{k}_ns": round(v, 1) for k, v in ns.items()})


def test_guard_handle_pair_1k_sources(benchmark: Any) -> None:
    """A Connection handle pair (open, close) against the keyed pair (accept, close(source))."""
    sources = ipv4_sources(1_000)
    keyed = connguard.Guard(limiter=False)
    handles = connguard.Guard(limiter=False)

    def handle_loop(batch: list[str]) -> None:
        open_ = handles.open
        for source in batch:
            open_(source, DESTINATION).close()

    runs = {"handle": handle_loop, "keyed": pair_loop(keyed.accept, keyed.close)}
    for run in runs.values():
        run(sources)
    benchmark.group = "guard handle pair x1000"
    ns = interleave(benchmark, runs["handle"], batches(sources, BATCH),
                    {"keyed": (runs["keyed"], batches(sources, BATCH))}, ROUNDS)
    if ns is not None:
        benchmark.extra_info.update(kind="guard_handle", handle_ns=round(ns["compiled"], 1),
                                    keyed_ns=round(ns["keyed"], 1))


def test_guard_batch_and_limiter_capacity_1m_sources(benchmark: Any) -> None:
    """A Guard over 1,000,000 sources, the limiter sized to them: accept_many
    + close_many in chunks against accept + close one by one; and one by one
    with the default limiter (100,000 netblocks: past that each new source
    evicts one)."""
    count = 1_000_000
    sources = ipv4_sources(count)

    def guard(limiter_capacity: int) -> Any:
        limiter = connguard.RateLimiter(rate=1e6, burst=1e6, capacity=limiter_capacity)
        return connguard.Guard(tracker=connguard.Tracker(capacity=count), limiter=limiter)

    batched, single, default = guard(count), guard(count), guard(100_000)

    batch_run = chunked_pairs(batched, DESTINATION)
    runs = {"batch": batch_run, "pair": pair_loop(single.accept, single.close),
            "default_limiter": pair_loop(default.accept, default.close)}
    for run in runs.values():
        run(sources)
    benchmark.group = "guard batch x1000000"
    ns = interleave(benchmark, batch_run, batches(sources, BATCH),
                    {name: (runs[name], batches(sources, BATCH))
                     for name in ("pair", "default_limiter")}, ROUNDS)
    if ns is not None:
        benchmark.extra_info.update(kind="guard_batch", batch_ns=round(ns["compiled"], 1),
                                    pair_ns=round(ns["pair"], 1),
                                    default_limiter_ns=round(ns["default_limiter"], 1))


def test_connection_with_a_guard_listening_1k_sources(benchmark: Any) -> None:
    """``with connguard.connection(...)`` when the listener is a Guard (it opens a
    handle) against the same Guard behind a plain callable (events)."""
    sources = ipv4_sources(1_000)
    guard = connguard.Guard(limiter=False)

    def via(listener: Any) -> Callable[[list[str]], None]:
        def run(batch: list[str]) -> None:
            connguard.set_listener(listener)
            for source in batch:
                with connguard.connection(source, DESTINATION):
                    pass
            connguard.set_listener(None)
        return run

    handle_run, event_run = via(guard), via(lambda event: guard(event))
    handle_run(sources)
    benchmark.group = "connection() x1000"
    ns = interleave(benchmark, handle_run, batches(sources, BATCH),
                    {"events": (event_run, batches(sources, BATCH))}, ROUNDS)
    if ns is not None:
        benchmark.extra_info.update(kind="connection", handle_ns=round(ns["compiled"], 1),
                                    events_ns=round(ns["events"], 1))


def test_guard_accept_only_1k_sources(benchmark: Any) -> None:
    """The ban check's cost on accept alone (connections stay open: counts only grow)."""
    sources = ipv4_sources(1_000)
    tracker = connguard.Tracker(concurrent_threshold=2**31)
    guard = connguard.Guard(tracker=connguard.Tracker(concurrent_threshold=2**31), limiter=False)

    def accepts(accept: Callable[..., Any]) -> Callable[[list[str]], None]:
        def run(batch: list[str]) -> None:
            for source in batch:
                accept(source, DESTINATION)
        return run

    runs = {"guard_bans": accepts(guard.accept), "tracker": accepts(tracker.accept)}
    for run in runs.values():
        run(sources)
    benchmark.group = "guard accept x1000"
    ns = interleave(benchmark, runs["guard_bans"], batches(sources, BATCH),
                    {"tracker": (runs["tracker"], batches(sources, BATCH))}, ROUNDS)
    if ns is not None:
        benchmark.extra_info.update(kind="guard_accept", guard_bans_ns=round(ns["compiled"], 1),
                                    tracker_ns=round(ns["tracker"], 1))


def test_scrape_with_a_million_sources(benchmark: Any) -> None:
    """A scrape reads aggregates only: its cost must not grow with the table."""
    from prometheus_client import CollectorRegistry, generate_latest

    from connguard.metrics import GuardCollector

    guard = connguard.Guard(limiter=False)
    for source in ipv4_sources(1_000_000):
        guard.accept(source, DESTINATION)
    registry = CollectorRegistry()
    registry.register(GuardCollector(guard))
    benchmark.group = "scrape"
    benchmark(generate_latest, registry)
    if not benchmark.disabled:
        benchmark.extra_info.update(kind="scrape", sources=guard.tracker.tracked_sources,
                                    median_ms=round(benchmark.stats.stats.median * 1e3, 3))
