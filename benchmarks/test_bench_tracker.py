"""accept+close pairs: compiled core vs the pure core and the ngit-design baseline.

These machines are shared and noisy in bursts longer than one benchmark, so
the three implementations are timed round by round in turn: pytest-benchmark
times the compiled core's batch, and the set-up of each of its rounds times
one batch of the baseline and one of the pure core just before it. A burst of
noise then hits all three alike and the ratios of medians stay honest.

Every source is tracked once before timing; each round then walks on through
the source list, so with 1M sources the table is full and cold in cache. In
the order the sources were first tracked, each shard's entries are visited
in the order they lie in memory, which the hardware prefetcher follows; the
"shuffled" cases walk the same sources in a random order, as connections
from a million clients arrive, with no such help.
Figures are per pair and include the Python loop that makes the two calls.
report.py turns the JSON into the README's table.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import (
    BATCH,
    IMPLEMENTATIONS,
    batches,
    chunked_pairs,
    interleave,
    ipv4_sources,
    ipv6_sources,
)

DESTINATION = "www.example.com:443"
CASES = [("ipv4", 1), ("ipv4", 1_000), ("ipv4", 100_000), ("ipv4", 1_000_000),
         ("ipv4 shuffled", 1_000_000), ("ipv6", 1_000)]
ROUNDS = 25
SHARE = {"compiled": 1, "ngit": 1, "pure": 20}   # the pure core runs 1/20 of a batch per round


def shuffled(sources: list[str]) -> list[str]:
    """The same sources in a random order (fixed, so runs compare)."""
    walk = list(sources)
    random.Random(14).shuffle(walk)
    return walk


def pair_loop(tracker: Any) -> Callable[[list[str]], None]:
    accept, close = tracker.accept, tracker.close

    def run(batch: list[str]) -> None:
        for source in batch:
            accept(source, DESTINATION)
            close(source)

    return run


@pytest.mark.parametrize(("family", "count"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_accept_close_pair(benchmark: Any, family: str, count: int) -> None:
    sources = (ipv6_sources if family == "ipv6" else ipv4_sources)(count)
    walk = shuffled(sources) if family.endswith("shuffled") else sources
    runs, feeds = {}, {}
    for impl, make in IMPLEMENTATIONS.items():
        runs[impl] = pair_loop(make(max(count, 1_000)))
        runs[impl](sources)                     # every source tracked before timing
        feeds[impl] = batches(walk, BATCH // SHARE[impl])
    benchmark.group = f"pair {family} x{count}"
    ns = interleave(benchmark, runs["compiled"], feeds["compiled"],
                    {impl: (runs[impl], feeds[impl]) for impl in ("ngit", "pure")}, ROUNDS)
    if ns is not None:
        benchmark.extra_info.update(family=family, sources=count,
                                    **{f"{impl}_ns": round(v, 1) for impl, v in ns.items()})


@pytest.mark.parametrize(("count", "order"), [(1_000, "inserted"), (1_000_000, "inserted"),
                                              (4_000_000, "inserted"), (1_000_000, "shuffled")],
                         ids=["ipv4-1000", "ipv4-1000000", "ipv4-4000000", "ipv4-1000000-shuffled"])
def test_batch_pairs(benchmark: Any, count: int, order: str) -> None:
    """accept_many + close_many in chunks against the per-call pair loop, same
    sources; 1M against 4M shows whether the cost stays flat."""
    sources = ipv4_sources(count)
    walk = shuffled(sources) if order == "shuffled" else sources
    batched, single = (IMPLEMENTATIONS["compiled"](max(count, 1_000)) for _ in range(2))

    batch_run = chunked_pairs(batched, DESTINATION)
    pair_run = pair_loop(single)
    batch_run(sources)                          # every source tracked before timing
    pair_run(sources)
    benchmark.group = f"batch ipv4 x{count} {order}"
    ns = interleave(benchmark, batch_run, batches(walk, BATCH),
                    {"pair": (pair_run, batches(walk, BATCH))}, ROUNDS)
    if ns is not None:
        benchmark.extra_info.update(kind="batch", sources=count, order=order,
                                    batch_ns=round(ns["compiled"], 1), pair_ns=round(ns["pair"], 1))
