"""Shared set-up for the benchmarks: source lists, implementations, interleaved timing."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import connguard
from connguard import _core_py
from connguard._core import on_core
from connguard.tracker import Tracker

from .baselines.ngit_tracker import NgitTracker

#: accept+close pairs per timed round; per-pair time = round time / BATCH
BATCH = 20_000

IMPLEMENTATIONS: dict[str, Callable[[int], Any]] = {
    "compiled": lambda capacity: connguard.Tracker(capacity=capacity),
    "pure": lambda capacity: on_core(Tracker, _core_py)(capacity=capacity),
    "ngit": lambda capacity: NgitTracker(),
}


def ipv4_sources(n: int) -> list[str]:
    return [f"{10 + (i >> 24)}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(n)]


def ipv6_sources(n: int) -> list[str]:
    # Distinct /64s, and a different host in each, as real clients look.
    return [f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::{(i * 7919) & 0xFFFF:x}" for i in range(n)]


@pytest.fixture(scope="session", autouse=True)
def _compiled_core_in_use() -> None:
    assert connguard.COMPILED, "benchmarks need the compiled core"


#: sources per accept_many / close_many call in the batch benchmarks
CHUNK = 256


def chunked_pairs(target: Any, destination: str) -> Callable[[list[str]], None]:
    """A run that passes its sources through ``target.accept_many`` and
    ``close_many`` (a Tracker or a Guard), CHUNK at a time."""

    def run(batch: list[str]) -> None:
        accept_many, close_many = target.accept_many, target.close_many
        for i in range(0, len(batch), CHUNK):
            chunk = batch[i:i + CHUNK]
            accept_many(chunk, destination)
            close_many(chunk)

    return run


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Yield ``size``-long slices that walk through all of ``items`` in turn."""
    cycle = itertools.cycle(items)
    while True:
        yield list(itertools.islice(cycle, size))


def interleave(benchmark: Any, main: Callable[[list[Any]], None], main_feed: Iterator[list[Any]],
               others: dict[str, tuple[Callable[[list[Any]], None], Iterator[list[Any]]]],
               rounds: int) -> dict[str, float] | None:
    """Time ``main`` with pytest-benchmark and each of ``others`` just before each round.

    Shared machines are noisy in bursts longer than one benchmark; timing
    the contenders round by round in turn lets a burst hit all of them
    alike. Return ns per item for each, or None on a --benchmark-disable run.
    """
    times: dict[str, list[float]] = {name: [] for name in others}
    sizes: list[int] = []

    def setup() -> tuple[tuple[list[Any]], dict[str, Any]]:
        for name, (run, feed) in others.items():
            batch = next(feed)
            start = time.perf_counter()
            run(batch)
            times[name].append((time.perf_counter() - start) / len(batch))
        batch = next(main_feed)
        sizes.append(len(batch))
        return (batch,), {}

    benchmark.pedantic(main, setup=setup, rounds=rounds, iterations=1)
    if benchmark.disabled:
        return None
    result = {"compiled": benchmark.stats.stats.median / sizes[0] * 1e9}
    result.update({name: statistics.median(t) * 1e9 for name, t in times.items()})
    return result
