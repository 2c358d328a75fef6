"""Memory per tracked source at full capacity, compiled core.

Not a timing: the figure is read from the table's own accounting (bytes the
C tables hold) and cross-checked against the process's resident-set growth.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import connguard

from .conftest import ipv4_sources

CAPACITY = 1_000_000
BUDGET = 128


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_per_source_at_capacity(benchmark: Any) -> None:
    sources = ipv4_sources(2 * CAPACITY)       # shards fill unevenly: spray twice
    gc.collect()
    holder: dict[str, Any] = {}

    def fill() -> None:
        before = resident_bytes()
        tracker = connguard.Tracker(capacity=CAPACITY)
        for source in sources:
            tracker.accept(source, "mx.example:25")
            tracker.close(source)
        holder.update(tracker=tracker, rss=resident_bytes() - before)

    benchmark.group = "memory"
    benchmark.pedantic(fill, rounds=1, iterations=1)
    tracker = holder["tracker"]
    assert tracker.tracked_sources == CAPACITY
    per_source = tracker.memory_bytes() / CAPACITY
    benchmark.extra_info.update(bytes_per_source=round(per_source, 1),
                                rss_bytes_per_source=round(holder["rss"] / CAPACITY, 1),
                                capacity=CAPACITY)
    assert per_source <= BUDGET
