"""RateLimiter.allow against limits and pyrate-limiter; BanManager.is_banned.

The rate limiters all run tatanka's policy (4 per second) over 1,000 keys
with in-memory storage, timed round by round in turn (see interleave()).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyrate_limiter
from limits import RateLimitItemPerSecond, storage, strategies

import connguard

from .conftest import BATCH, batches, interleave, ipv4_sources

KEYS = [f"peer-{i:04d}" for i in range(1_000)]
ROUNDS = 25
SHARE = 20                                         # the others run 1/20 of a batch per round


class PerKeyBuckets(pyrate_limiter.BucketFactory):
    """One in-memory bucket per key: pyrate-limiter's per-key limiting."""

    def __init__(self, rates: list[pyrate_limiter.Rate]) -> None:
        self.rates = rates
        self.buckets: dict[str, pyrate_limiter.InMemoryBucket] = {}

    def wrap_item(self, name: str, weight: int = 1) -> pyrate_limiter.RateItem:
        return pyrate_limiter.RateItem(name, time.time_ns() // 1_000_000, weight)

    def get(self, item: pyrate_limiter.RateItem) -> pyrate_limiter.InMemoryBucket:
        bucket = self.buckets.get(item.name)
        if bucket is None:
            bucket = self.buckets[item.name] = pyrate_limiter.InMemoryBucket(self.rates)
        return bucket


def loop(call: Callable[[str], Any]) -> Callable[[list[str]], None]:
    def run(batch: list[str]) -> None:
        for key in batch:
            call(key)

    return run


def test_rate_limiter_allow_1k_keys(benchmark: Any) -> None:
    ours = connguard.RateLimiter()
    window = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
    per_second = RateLimitItemPerSecond(4)
    pyrate = pyrate_limiter.Limiter(PerKeyBuckets([pyrate_limiter.Rate(4, pyrate_limiter.Duration.SECOND)]))
    runs = {
        "compiled": loop(ours.allow),
        "limits": loop(lambda key: window.hit(per_second, key)),
        "pyrate": loop(lambda key: pyrate.try_acquire(key, blocking=False)),
    }
    for run in runs.values():
        run(KEYS)                                  # every key known before timing
    benchmark.group = "rate limiter allow x1000 keys"
    ns = interleave(benchmark, runs["compiled"], batches(KEYS, BATCH),
                    {name: (runs[name], batches(KEYS, BATCH // SHARE)) for name in ("limits", "pyrate")},
                    ROUNDS)
    if ns is not None:
        benchmark.extra_info.update(kind="limiter", **{f"{k}_ns": round(v, 1) for k, v in ns.items()})


def test_is_banned_1k_sources(benchmark: Any) -> None:
    bans = connguard.BanManager()
    sources = ipv4_sources(1_000)
    for source in sources[::100]:
        bans.ban(source, 3600.0)
    is_banned = bans.is_banned
    floor: dict[str, Any] = {}                     # the same loop around a no-op C call
    ns = interleave(benchmark, loop(is_banned), batches(sources, BATCH),
                    {"loop_floor": (loop(floor.get), batches(sources, BATCH))}, ROUNDS)
    benchmark.group = "is_banned x1000 sources"
    if ns is not None:
        benchmark.extra_info.update(kind="is_banned", **{f"{k}_ns": round(v, 1) for k, v in ns.items()})
