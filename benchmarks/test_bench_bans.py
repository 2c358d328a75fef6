"""BanManager under pressure: is_banned and report() with every record banned; restore of 1M.

Bars (issue 9): is_banned <= 50 ns and report() <= 50 us even when every
record holds a live ban (each report then lifts the ban ending soonest);
a 1M-infraction snapshot restores in under 5 s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

import connguard

from .conftest import BATCH, batches, interleave, ipv4_sources

CAPACITY = 10_000
ROUNDS = 25


@pytest.fixture
def quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)            # every ban is logged once
    yield
    logging.disable(logging.NOTSET)


def full_of_bans() -> connguard.BanManager:
    bans = connguard.BanManager(capacity=CAPACITY)
    for i, source in enumerate(ipv4_sources(CAPACITY)):
        bans.ban(source, 3600.0 + i)
    assert len(bans.banned()) == CAPACITY
    return bans


def test_is_banned_with_every_record_banned(benchmark: Any, quiet: None) -> None:
    bans = full_of_bans()
    # The same 1,000-source loop as test_is_banned_1k_sources, so the two
    # compare: half of them banned, the table around them full of bans.
    sources = ipv4_sources(CAPACITY)[:500] + ipv4_sources(CAPACITY + 500)[CAPACITY:]
    is_banned = bans.is_banned

    def run(batch: list[str]) -> None:
        for source in batch:
            is_banned(source)

    floor: dict[str, Any] = {}

    def loop_floor(batch: list[str]) -> None:
        for source in batch:
            floor.get(source)

    ns = interleave(benchmark, run, batches(sources, BATCH),
                    {"loop_floor": (loop_floor, batches(sources, BATCH))}, ROUNDS)
    benchmark.group = "bans under pressure"
    if ns is not None:
        benchmark.extra_info.update(kind="is_banned_full", **{f"{k}_ns": round(v, 1)
                                                              for k, v in ns.items()})


def test_report_with_every_record_banned(benchmark: Any, quiet: None) -> None:
    bans = full_of_bans()
    fresh = iter(f"172.{16 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}" for i in range(10**7))
    report = bans.report

    def run() -> None:
        for _ in range(200):                          # each bans a new source, lifting one
            report(next(fresh), "impersonation")

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    benchmark.group = "bans under pressure"
    assert bans.evicted_bans >= 200 and len(bans.banned()) == CAPACITY
    if not benchmark.disabled:
        benchmark.extra_info.update(kind="report_full",
                                    report_us=round(benchmark.stats.stats.median / 200 * 1e6, 1))


def test_restore_1m_infractions(benchmark: Any, quiet: None) -> None:
    """1M infractions over 100,000 netblocks (10 each, so every one is banned)."""
    now = time.time()
    snapshot = {"version": 1, "infractions": [
        {"id": f"peer:{i}:0a1b2c3d4e5f", "source": f"10.{(i // 10) >> 16 & 255}."
                                                    f"{(i // 10) >> 8 & 255}.{(i // 10) & 255}",
         "kind": "malformed_message", "penalty": 1, "created": now - 10.0,
         "expires": now + 3590.0, "node": "peer"} for i in range(1_000_000)]}

    def run() -> None:
        assert connguard.BanManager(capacity=100_000).restore(snapshot) == 1_000_000

    benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, iterations=1)
    benchmark.group = "bans under pressure"
    if not benchmark.disabled:
        median = benchmark.stats.stats.median
        benchmark.extra_info.update(kind="restore", seconds=round(median, 2),
                                    per_second=round(1_000_000 / median))
