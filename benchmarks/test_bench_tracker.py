"""accept+close pairs: compiled core, pure core, and the ngit-design baseline.

Each timed round runs BATCH pairs, cycling through the source list from a
new offset each round, after one warm-up pass has tracked every source. The
per-pair figure is the round's median divided by BATCH; report.py turns the
JSON into the README's table of ratios.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from .conftest import BATCH, IMPLEMENTATIONS, ipv4_sources, ipv6_sources

DESTINATION = "www.example.com:443"
CASES = [("ipv4", 1), ("ipv4", 1_000), ("ipv4", 100_000), ("ipv4", 1_000_000), ("ipv6", 1_000)]


def rounds_over(sources: list[str]) -> Any:
    """Yield BATCH-long slices that walk through all of ``sources`` in turn."""
    cycle = itertools.cycle(sources)
    while True:
        yield list(itertools.islice(cycle, BATCH))


@pytest.mark.parametrize(("family", "count"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_accept_close_pair(benchmark: Any, impl: str, family: str, count: int) -> None:
    sources = (ipv4_sources if family == "ipv4" else ipv6_sources)(count)
    tracker = IMPLEMENTATIONS[impl](max(count, 1_000))
    accept, close = tracker.accept, tracker.close
    for source in sources:                      # every source is tracked before timing
        accept(source, DESTINATION)
        close(source)
    batches = rounds_over(sources)
    rounds = 15 if impl != "pure" else 5

    def setup() -> tuple[tuple[list[str]], dict[str, Any]]:
        return (next(batches),), {}

    def run(batch: list[str]) -> None:
        for source in batch:
            accept(source, DESTINATION)
            close(source)

    benchmark.group = f"pair {family} x{count}"
    benchmark.extra_info.update(impl=impl, family=family, sources=count, pairs_per_round=BATCH)
    benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
