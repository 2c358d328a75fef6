"""Interleaved ratios: compiled core vs the ngit-design baseline and the pure core.

These machines are shared and noisy in bursts longer than one benchmark, so
the three implementations are timed round by round in turn: pytest-benchmark
times the compiled batch, and the set-up of each of its rounds times one
baseline batch and one pure-core batch just before it. A burst of noise then
hits all three alike, and the ratio of medians stays honest.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import pytest

from .conftest import BATCH, IMPLEMENTATIONS, ipv4_sources, ipv6_sources

DESTINATION = "www.example.com:443"
ROUNDS = 30
PURE_SHARE = 10          # the pure core runs 1/10 of a batch per round: it is ~100x slower


def pair_loop(tracker: Any, sources: list[str]) -> Callable[[], None]:
    accept, close = tracker.accept, tracker.close

    def run() -> None:
        for source in sources:
            accept(source, DESTINATION)
            close(source)

    return run


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_interleaved_ratio_1k_sources(benchmark: Any, family: str) -> None:
    sources = (ipv4_sources if family == "ipv4" else ipv6_sources)(1_000)
    batch = (sources * (BATCH // len(sources) + 1))[:BATCH]
    runs = {impl: pair_loop(IMPLEMENTATIONS[impl](1_000), batch) for impl in IMPLEMENTATIONS}
    runs["pure"] = pair_loop(IMPLEMENTATIONS["pure"](1_000), batch[:BATCH // PURE_SHARE])
    for run in runs.values():
        run()                                   # every source tracked before timing
    others: dict[str, list[float]] = {"ngit": [], "pure": []}

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        for impl, times in others.items():
            start = time.perf_counter()
            runs[impl]()
            times.append(time.perf_counter() - start)
        return (), {}

    benchmark.group = f"interleaved {family} x1000"
    benchmark.pedantic(runs["compiled"], setup=setup, rounds=ROUNDS, iterations=1)
    compiled = benchmark.stats.stats.median / BATCH
    ngit = statistics.median(others["ngit"]) / BATCH
    pure = statistics.median(others["pure"]) / (BATCH // PURE_SHARE)
    benchmark.extra_info.update(
        family=family, sources=1_000, compiled_ns=round(compiled * 1e9, 1),
        ngit_ns=round(ngit * 1e9, 1), pure_ns=round(pure * 1e9, 1),
        ngit_over_compiled=round(ngit / compiled, 1), pure_over_compiled=round(pure / compiled, 1))
