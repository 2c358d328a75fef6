"""Bounded memory: capacity is a hard bound, busy sources are never evicted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

Make = Callable[..., Any]


def v4(i: int) -> str:
    return f"{10 + (i >> 24)}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def test_spray_of_a_million_sources_stays_within_capacity(make_tracker: Make) -> None:
    capacity = 50_000
    t = make_tracker(capacity=capacity)
    busy = [f"2001:db8:{i:x}::1" for i in range(2_000)]    # hold a connection open
    for i, source in enumerate(busy):
        t.accept(source, "a:443", now=float(i))
    peak = 0
    for i in range(1_000_000):
        source = v4(i)
        t.accept(source, "www.example:443", now=10_000.0 + i)
        t.close(source, now=10_000.0 + i)
        if i % 50_000 == 0:
            peak = max(peak, t.tracked_sources)
    assert max(peak, t.tracked_sources) <= capacity
    assert t.tracked_sources == capacity
    assert t.evictions == 1_000_000 + len(busy) - capacity
    assert t.overflows == 0
    # Every busy source survived every eviction, with exact counts.
    assert t.active_connections == len(busy)
    assert t.active_sources == len(busy)
    for source in busy:
        s = t.stats(source)
        assert s is not None and s.active == 1 and s.total == 1


def test_spray_of_mail_sources_recycles_pattern_state(make_tracker: Make) -> None:
    # Every smtp accept earns pattern state: a spray keeps the pool full and
    # recycling, and pool, records and entries stay consistent throughout.
    t = make_tracker(capacity=2_000, shards=4)
    for i in range(30_000):
        source = v4(i)
        t.accept(source, f"mx{i % 7}.example:25", now=float(i))
        t.close(source, now=float(i), sent=100, received=50)
        if i % 5_000 == 0:
            t.check_consistency()
    used, capacity, full = t.pattern_state()
    assert capacity == 4 * 16 and used == capacity and full == 0   # 16 records a shard at least
    assert t.tracked_sources == 2_000
    t.check_consistency()


def test_full_of_busy_sources_permissive_accepts_untracked(make_tracker: Make) -> None:
    t = make_tracker(capacity=8, shards=1)
    for i in range(8):
        assert t.accept(v4(i), now=1.0) is True
    assert t.accept(v4(100), now=2.0) is True          # allowed, not tracked
    assert t.stats(v4(100)) is None
    assert (t.tracked_sources, t.overflows, t.evictions) == (8, 1, 0)
    assert t.untracked() == (1, 0)
    assert t.close(v4(100)) is True                     # its close is absorbed...
    assert t.active_connections == 8 and t.untracked() == (0, 0)   # ...closing nothing tracked
    t.close(v4(3), now=3.0)                             # one source goes idle...
    assert t.accept(v4(100), now=4.0) is True           # ...and makes room
    assert t.stats(v4(3)) is None and t.stats(v4(100)).active == 1
    assert (t.tracked_sources, t.overflows, t.evictions) == (8, 1, 1)


def test_full_of_busy_sources_deny_refuses(make_tracker: Make) -> None:
    t = make_tracker(capacity=4, shards=1, overflow="deny")
    for i in range(4):
        assert t.accept(v4(i), now=1.0) is True
    assert t.accept(v4(9), now=1.0) is False
    assert t.accept(v4(0), now=1.0) is True             # known sources still count
    assert t.stats(v4(0)).active == 2
    assert (t.tracked_sources, t.active_connections, t.overflows) == (4, 5, 1)


def test_eviction_prefers_the_idlest_source(make_tracker: Make) -> None:
    t = make_tracker(capacity=8, shards=1)
    for i in range(8):
        t.accept(v4(i), now=float(i))
        t.close(v4(i), now=float(i))
    t.accept(v4(50), now=100.0)
    # Eight samples of eight sources: the oldest sampled one goes; with
    # sampling it is among the oldest, never a newer one than all samples.
    gone = [i for i in range(8) if t.stats(v4(i)) is None]
    assert len(gone) == 1 and gone[0] <= 3


def test_evicting_a_flagged_source_updates_flagged_count(make_tracker: Make) -> None:
    t = make_tracker(capacity=2, shards=1, window=10.0, rate_threshold=0.5)
    for _ in range(10):
        t.accept(v4(1), now=1.0)
        t.close(v4(1), now=1.0)
    assert t.flagged_sources == 1
    t.accept(v4(2), now=2.0)
    t.accept(v4(3), now=3.0)                            # v4(1) is the only idle one
    assert t.stats(v4(1)) is None
    assert t.flagged_sources == 0


@pytest.mark.parametrize("capacity", [1, 2, 3, 63, 64, 65, 1000])
def test_capacity_holds_for_odd_sizes(make_tracker: Make, capacity: int) -> None:
    t = make_tracker(capacity=capacity)
    sprayed = capacity * 5 + 10
    for i in range(sprayed):
        t.accept(v4(i), now=float(i))
        t.close(v4(i), now=float(i))
        assert t.tracked_sources <= capacity
    # Every source was tracked once; what is not in the table was evicted.
    assert t.tracked_sources + t.evictions == sprayed
    assert t.overflows == 0
