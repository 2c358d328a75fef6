"""Soak: a full BanManager under 1M mixed operations from 4 threads stays consistent.

The threads run in phases of a few hundred operations each; between phases,
with the manager quiet, every invariant is checked: the bans listed are
exactly the bans enforced, each listed ban's score matches ``score()``, the
Prometheus gauge of active bans matches the listing, and the tables are
internally consistent.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from connguard._core import on_core
from connguard.guard import Guard
from connguard.metrics import GuardCollector

Make = Callable[..., Any]

THREADS = 4
OPERATIONS = 1_000_000
PHASE = 4_000                      # operations per phase, over all threads
STORM = 8                          # every STORM-th phase bans only: every record banned
CAPACITY = 10_000
SOURCES = [f"10.{i >> 8 & 255}.{i & 255}.{i >> 16}" for i in range(14_000)]   # more than fit


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_a_full_manager_stays_consistent_under_1m_operations_from_4_threads(
        make_bans: Make, clock: Any, core: ModuleType) -> None:
    logging.disable(logging.WARNING)            # a ban is logged once: that would be 100k lines
    try:
        run_soak(make_bans, clock, on_core(Guard, core))
    finally:
        logging.disable(logging.NOTSET)


def run_soak(make_bans: Make, clock: Any, guard: type[Guard]) -> None:
    peer = make_bans(node_id="peer", capacity=CAPACITY)
    bans = make_bans(capacity=CAPACITY, shards=16, max_infractions=8, remembered_ids=50_000)
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS + 1)
    stop = threading.Event()
    storm = [False]                            # set by the main thread between phases

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while True:
                barrier.wait()
                if stop.is_set():
                    return
                for _ in range(PHASE // THREADS):
                    source = rng.choice(SOURCES)
                    draw = 0.6 if storm[0] else rng.random()
                    if draw < 0.55:
                        bans.report(source, rng.choice(("malformed_message", "impersonation",
                                                        "rate_limit_violation")))
                    elif draw < 0.75:
                        bans.ban(source, rng.uniform(1.0, 600.0))
                    elif draw < 0.90:
                        bans.unban(source)
                    elif draw < 0.97:
                        bans.is_banned(source)
                        bans.score(source)
                    else:
                        bans.apply(rng.choice(snapshot))
                barrier.wait()
        except BaseException as exc:            # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            barrier.abort()

    for source in SOURCES[:3000]:
        peer.report(source, "malformed_message")
    snapshot = peer.snapshot()["infractions"]
    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        for phase in range(OPERATIONS // PHASE):
            storm[0] = phase % STORM == STORM - 1
            barrier.wait()                      # the workers run a phase...
            barrier.wait()                      # ...and are quiet again
            check(bans, phase, guard)
            clock.advance(7.0)                  # bans and infractions run out over the soak
            if phase % 10 == 0:                 # whole-table work, between phases
                bans.purge()
                assert bans.restore({"version": 1, "infractions": snapshot}) >= 0
                check(bans, phase, guard)
    except threading.BrokenBarrierError:
        pass
    finally:
        stop.set()
        try:
            barrier.wait(timeout=10)
        except threading.BrokenBarrierError:
            pass
        for thread in threads:
            thread.join(timeout=10)
    assert not errors, errors
    assert bans.evicted_bans > 0                # the pressure the soak is for was there


def check(bans: Any, phase: int, guard: type[Guard]) -> None:
    listed = {ban.source: ban for ban in bans.banned()}
    enforced = {source for source in SOURCES if bans.is_banned(source)}
    assert set(listed) == enforced, f"phase {phase}: listed and enforced bans differ"
    for source, ban in listed.items():
        assert ban.score == bans.score(source), f"phase {phase}: {source}"
    assert len(listed) <= CAPACITY
    bans.check_consistency()
    if phase % 100 == 0:                         # the exported gauge agrees too
        registry = CollectorRegistry()
        registry.register(GuardCollector(guard(bans=bans, limiter=False), namespace="soak"))
        assert registry.get_sample_value("soak_active_bans") == len(listed)
