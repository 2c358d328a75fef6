"""The compiled hot path allocates no Python object for a tracked source."""

from __future__ import annotations

import sys
from types import ModuleType

import pytest

from connguard._core import on_core
from connguard.tracker import Tracker

pytestmark = pytest.mark.c_extension       # the pure core allocates by nature


def test_no_python_allocation_per_pair(compiled_core: ModuleType) -> None:
    t = on_core(Tracker, compiled_core)()                      # default clock: read in C
    sources = [f"198.51.100.{i}" for i in range(100)] + [f"2001:db8:{i:x}::1" for i in range(100)]
    for s in sources:
        t.accept(s, "mx.example:25")
        t.close(s)
    accept, close = t.accept, t.close
    destination = "www.example:443"
    before = sys.getallocatedblocks()
    for _ in range(50):
        for s in sources:
            accept(s, destination)
            close(s)
    after = sys.getallocatedblocks()
    # 20,000 pairs; a single object per pair would show as 20,000 blocks.
    assert after - before < 50


def test_memory_per_source_at_full_capacity(compiled_core: ModuleType) -> None:
    capacity = 200_000
    t = on_core(Tracker, compiled_core)(capacity=capacity, clock=lambda: 0.0)
    # Shards fill unevenly, so spray twice the capacity to fill every one.
    for i in range(2 * capacity):
        t.accept(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now=1.0)
        t.close(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now=1.0)
    assert t.tracked_sources == capacity
    assert t.memory_bytes() / capacity <= 128
