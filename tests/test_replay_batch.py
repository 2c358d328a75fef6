"""The cores' batch path: ``replay()`` orders accepts and closes by event time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connguard.tracker import Tracker

MakeTracker = Callable[..., Tracker]


def replay(t: Tracker, flows: list[tuple[Any, ...]], keep: int | None = None) -> tuple[int, int, list[Any]]:
    """Replay (start, duration, source, destination[, sent, received]) tuples."""
    rows = [f if len(f) == 6 else (*f, None, None) for f in flows]
    starts, durations, sources, destinations, sent, received = (list(c) for c in zip(*rows, strict=True))
    return t.replay(starts, durations, sources, destinations, sent, received, keep=keep)


def test_events_play_in_time_order_whatever_the_input_order(make_tracker: MakeTracker) -> None:
    t = make_tracker(concurrent_threshold=3, port_scan=None)
    # Three overlapping flows, listed by end time (as Zeek writes them): at
    # t=5 all three are open, which only the time order shows.
    assert replay(t, [(4.0, 2.0, "10.0.0.1", "a:80"), (3.0, 4.0, "10.0.0.1", "a:80"),
                      (1.0, 9.0, "10.0.0.1", "a:80")]) == (3, 0, [])
    stats = t.stats("10.0.0.1", now=20.0)
    assert stats is not None and stats.total == 3 and stats.active == 0
    assert stats.first_seen == 1.0 and stats.last_seen == 10.0
    assert t.raised_by()[0] == 1             # conn_flood: the peak of 3 open was seen


def test_an_accept_plays_before_a_close_at_the_same_instant(make_tracker: MakeTracker) -> None:
    t = make_tracker(concurrent_threshold=2, port_scan=None)
    # The first flow ends at 5.0 exactly when the second starts: both open at once.
    replay(t, [(0.0, 5.0, "10.0.0.1", ""), (5.0, 1.0, "10.0.0.1", "")])
    assert t.raised_by()[0] == 1                 # conn_flood


def test_keep_holds_flows_back_and_none_ends_the_replay(make_tracker: MakeTracker) -> None:
    t = make_tracker()
    assert replay(t, [(float(i), 100.0, "10.0.0.1", "") for i in range(10)], keep=4)[0] == 6
    assert t.active_connections == 6              # accepted, their closes still pending
    # A flow earlier than the clock (5.0) is late: played at the clock.
    assert replay(t, [(2.0, 1.0, "10.0.0.2", "")], keep=4) == (1, 1, [])
    stats = t.stats("10.0.0.2", now=50.0)
    assert stats is not None and stats.first_seen == 5.0
    # keep=0 plays every accept, and only the closes due before the last of them.
    assert t.replay([], [], [], [], keep=0) == (4, 0, [])
    assert t.active_connections == 11 - 1 and t.replay_clock == 9.0
    assert t.replay([], [], [], []) == (0, 0, [])
    assert t.active_connections == 0 and t.replay_clock == 109.0


def test_malformed_flows_are_skipped_with_their_index_and_reason(make_tracker: MakeTracker) -> None:
    t = make_tracker()
    played, late, skipped = replay(t, [
        (1.0, 1.0, "10.0.0.1", "a:25", 10, 20),
        ("1", 1.0, "10.0.0.1", "", None, None),
        (float("inf"), 1.0, "10.0.0.1", "", None, None),
        (1.0, -2.0, "10.0.0.1", "", None, None),
        (1.0, None, "host.example", "", None, None),
        (1.0, 1.0, "10.0.0.1", None, None, None),
        (1.0, 1.0, "10.0.0.1", "", -1, None),
        (1.0, 1.0, "10.0.0.1", "", None, 1.5),
    ])
    assert (played, late) == (1, 0)
    assert skipped == [(1, "start is not a finite time"), (2, "start is not a finite time"),
                       (3, "duration is not a number >= 0"), (4, "source is not an address"),
                       (5, "destination is not a string"), (6, "sent is not a byte count"),
                       (7, "received is not a byte count")]
    stats = t.stats("10.0.0.1", now=2.0)
    assert stats is not None and stats.total == 1 and stats.by_class["smtp"] == 1


def test_columns_of_different_lengths_are_refused(make_tracker: MakeTracker) -> None:
    t = make_tracker()
    with pytest.raises(ValueError, match="sources has 1 items, starts has 2"):
        t.replay([1.0, 2.0], [0, 0], ["10.0.0.1"], ["", ""])
    with pytest.raises(ValueError, match="keep must be None or an int"):
        t.replay([], [], [], [], keep=-1)
    assert t.tracked_sources == 0


def test_closes_carry_bytes_and_raise_patterns_through_the_hook(make_tracker: MakeTracker) -> None:
    seen: list[tuple[str, str, float]] = []
    t = make_tracker(on_finding=lambda f: seen.append((f.source, f.pattern, f.first_seen)))
    n = 60
    # A vertical scan: one host, 60 ports, nothing answered.
    replay(t, [(100.0 + i, 0.5, "192.0.2.9", f"198.51.100.1:{1000 + i}", 60, 0)
               for i in range(n)])
    assert seen and seen[0][:2] == ("192.0.2.9", "port_scan")
    assert [f.pattern for f in t.findings(now=200.0)] == ["port_scan"]


def test_a_replay_cannot_start_inside_another(make_tracker: MakeTracker) -> None:
    errors: list[Exception] = []

    def nested(_: object) -> None:
        try:
            t.replay([1.0], [0], ["10.0.0.1"], [""])
        except RuntimeError as exc:
            errors.append(exc)

    t = make_tracker(on_finding=nested)
    replay(t, [(100.0 + i, 0.5, "192.0.2.9", f"198.51.100.1:{1000 + i}", 60, 0)
               for i in range(60)])
    assert errors and "already running" in str(errors[0])
    assert t.finding_errors == 0


def test_refused_flows_never_close_another_connection(make_tracker: MakeTracker) -> None:
    t = make_tracker(capacity=1, shards=1, overflow="deny", port_scan=None)
    # 10.0.0.1 holds the only slot; 10.0.0.2 is refused and its close must not
    # count against anyone.
    replay(t, [(0.0, 10.0, "10.0.0.1", ""), (1.0, 1.0, "10.0.0.2", ""),
               (3.0, 10.0, "10.0.0.1", "")], keep=1)
    assert t.active_connections == 1
    t.replay([], [], [], [])
    assert t.active_connections == 0 and t.overflows == 1
    t.check_consistency()
