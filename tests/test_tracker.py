"""Tracker behaviour: ngit ConnectionTracker's cases and everything around them."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import pytest

from connguard import SourceStats

from .conftest import counts

Make = Callable[..., Any]


# --- ngit ConnectionTracker's cases ------------------------------------------

def test_two_connects_from_one_ip(make_tracker: Make) -> None:
    t = make_tracker()
    t.accept("192.168.1.1")
    t.accept("192.168.1.1")
    assert t.active_connections == 2
    assert t.active_sources == 1


def test_connect_then_disconnect_back_to_zero(make_tracker: Make) -> None:
    t = make_tracker()
    t.accept("192.168.1.1")
    t.accept("192.168.1.1")
    assert t.close("192.168.1.1") is True
    assert t.close("192.168.1.1") is True
    assert t.active_connections == 0
    assert t.active_sources == 0
    assert t.tracked_sources == 1           # history is kept for the window
    assert t.stats("192.168.1.1").active == 0


def test_three_sources_including_ipv6(make_tracker: Make) -> None:
    t = make_tracker()
    for source in ("192.168.1.1", "192.168.1.2", "2001:db8::1", "192.168.1.1"):
        t.accept(source)
    assert t.active_connections == 4
    assert t.active_sources == 3
    t.close("2001:db8::1")
    assert (t.active_connections, t.active_sources) == (3, 2)


@pytest.mark.parametrize("threshold", [1, 3, 10])
def test_flag_exactly_at_threshold_and_cleared_at_zero(make_tracker: Make, threshold: int) -> None:
    t = make_tracker(concurrent_threshold=threshold)
    for i in range(threshold - 1):
        t.accept("203.0.113.9")
        assert not t.stats("203.0.113.9").flagged, f"flagged early, at {i + 1}"
        assert t.flagged_sources == 0
    t.accept("203.0.113.9")
    s = t.stats("203.0.113.9")
    assert s.flagged and s.patterns == {"conn_flood"}
    assert t.flagged_sources == 1
    for _ in range(threshold - 1):
        t.close("203.0.113.9")
        assert t.stats("203.0.113.9").flagged     # still flagged until zero
    t.close("203.0.113.9")
    assert not t.stats("203.0.113.9").flagged
    assert t.flagged_sources == 0


def test_disconnect_without_connect_is_a_noop(make_tracker: Make) -> None:
    t = make_tracker()
    assert t.close("192.168.1.1") is False
    assert counts(t) == dict.fromkeys(counts(t), 0)
    assert t.stats("192.168.1.1") is None
    t.accept("192.168.1.1")
    t.close("192.168.1.1")
    assert t.close("192.168.1.1") is False       # never goes negative
    assert t.active_connections == 0
    assert t.stats("192.168.1.1").active == 0


def test_default_concurrent_threshold_is_256(make_tracker: Make) -> None:
    t = make_tracker()
    for _ in range(255):
        t.accept("198.51.100.1")
    assert t.flagged_sources == 0
    t.accept("198.51.100.1")
    assert t.flagged_sources == 1


# --- statistics ----------------------------------------------------------------

def test_stats_snapshot_fields(make_tracker: Make) -> None:
    t = make_tracker(window=10.0)
    t.accept("198.51.100.1", "mail.example:25", now=100.0)
    t.accept("198.51.100.1", "[2001:db8::25]:587", now=101.0)
    t.accept("198.51.100.1", "www.example:443", now=102.0)
    t.accept("198.51.100.1", "", now=103.0)
    t.close("198.51.100.1", now=104.0)
    s = t.stats("198.51.100.1", now=104.0)
    assert isinstance(s, SourceStats)
    assert s.source == "198.51.100.1"
    assert (s.active, s.total) == (3, 4)
    assert s.first_seen == 100.0 and s.last_seen == 104.0
    assert s.by_class == {"other": 1, "smtp": 2, "https": 1, "http": 0, "dns": 0, "dot": 0}
    assert s.distinct_destinations == 3
    assert s.distinct_ports == 3
    assert s.rate == pytest.approx(4 / 10.0)
    assert s.patterns == frozenset() and not s.flagged
    with pytest.raises(AttributeError):
        s.active = 0  # type: ignore[misc]


def test_windowed_counts_slide(make_tracker: Make) -> None:
    t = make_tracker(window=10.0)
    for i in range(10):                        # 10 accepts in the bucket [0, 10)
        t.accept("198.51.100.1", f"h{i}:25", now=float(i))
        t.close("198.51.100.1", now=float(i))
    s = t.stats("198.51.100.1", now=9.5)
    assert s.rate == pytest.approx(1.0)
    assert s.by_class["smtp"] == 10
    # Halfway through the next bucket, half of the previous one is still in the window.
    s = t.stats("198.51.100.1", now=15.0)
    assert s.rate == pytest.approx(0.5)
    assert s.by_class["smtp"] == 5
    assert s.total == 10                       # lifetime counts never slide
    # Two buckets later nothing is left in the window.
    s = t.stats("198.51.100.1", now=30.0)
    assert s.rate == 0 and s.by_class["smtp"] == 0
    assert s.distinct_destinations == 0 and s.distinct_ports == 0


def test_time_runs_backwards_per_source_only_as_a_reset(make_tracker: Make) -> None:
    t = make_tracker(window=10.0)
    t.accept("198.51.100.1", now=50.0)
    t.accept("198.51.100.1", now=45.0)         # out of order in a replayed log: within a window
    s = t.stats("198.51.100.1", now=0.0)
    assert s.first_seen == 50.0 and s.last_seen == 50.0
    assert s.total == 2 and s.rate == pytest.approx(0.2)
    t.accept("198.51.100.1", now=20.0)         # more than a window back: the clock was reset
    s = t.stats("198.51.100.1", now=20.0)
    assert s.last_seen == 20.0 and s.total == 3 and s.rate == pytest.approx(0.1)


def test_clock_is_used_when_now_is_omitted(tracker_cls: Any) -> None:
    now = [1000.0]
    t = tracker_cls(clock=lambda: now[0], window=10.0)
    t.accept("198.51.100.1")
    now[0] = 1003.0
    t.accept("198.51.100.1")
    s = t.stats("198.51.100.1")
    assert (s.first_seen, s.last_seen) == (1000.0, 1003.0)


def test_default_clock_is_monotonic(tracker_cls: Any) -> None:
    import time

    t = tracker_cls()
    # On Linux the default is the coarse monotonic clock (clock id 6): same
    # epoch, and less than one kernel tick, its resolution, behind the fine one.
    tick = time.clock_getres(6) if sys.platform == "linux" else 0.0
    before = time.monotonic()
    t.accept("198.51.100.1")
    after = time.monotonic()
    assert before - max(tick, 0.010) - 0.001 <= t.stats("198.51.100.1").first_seen <= after


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_non_finite_now_is_rejected(make_tracker: Make, now: float) -> None:
    t = make_tracker()
    with pytest.raises(ValueError, match="now"):
        t.accept("198.51.100.1", now=now)
    assert t.tracked_sources == 0


def test_non_numeric_now_is_rejected(make_tracker: Make) -> None:
    t = make_tracker()
    with pytest.raises(TypeError):
        t.accept("198.51.100.1", now="5")
    assert t.tracked_sources == 0


def test_conn_rate_raised_and_cleared(make_tracker: Make) -> None:
    t = make_tracker(window=10.0, rate_threshold=2.0)
    for i in range(20):                          # exactly 2/s: not above the threshold
        t.accept("198.51.100.1", now=i * 0.5)
        t.close("198.51.100.1", now=i * 0.5)
    assert t.flagged_sources == 0
    t.accept("198.51.100.1", now=9.9)
    assert t.stats("198.51.100.1", now=9.9).patterns == {"conn_rate"}
    assert t.flagged_sources == 1
    t.close("198.51.100.1", now=40.0)            # a quiet minute later the rate is gone
    assert t.stats("198.51.100.1", now=40.0).patterns == frozenset()
    assert t.flagged_sources == 0


def test_conn_rate_is_off_by_default(make_tracker: Make) -> None:
    t = make_tracker()
    for _ in range(5000):
        t.accept("198.51.100.1", now=1.0)
        t.close("198.51.100.1", now=1.0)
    assert t.flagged_sources == 0


def test_top_orders_by_active_total_and_rate(make_tracker: Make) -> None:
    t = make_tracker(window=10.0)
    for _ in range(3):
        t.accept("192.0.2.1", now=1.0)
    for _ in range(5):
        t.accept("192.0.2.2", now=1.0)
        t.close("192.0.2.2", now=1.0)
    t.accept("192.0.2.3", now=1.0)
    t.accept("2001:db8::1", now=1.0)
    assert [s.source for s in t.top(2)] == ["192.0.2.1", "192.0.2.3"]
    assert [s.source for s in t.top(1, by="total")] == ["192.0.2.2"]
    assert [s.source for s in t.top(10, by="rate", now=2.0)] == [
        "192.0.2.2", "192.0.2.1", "192.0.2.3", "2001:db8::/64"]
    assert t.top(0) == []
    with pytest.raises(ValueError, match="by"):
        t.top(3, by="bytes")


# --- destinations --------------------------------------------------------------

@pytest.mark.parametrize(("destination", "cls"), [
    ("mx.example:25", "smtp"), ("mx.example:465", "smtp"), ("mx.example:587", "smtp"),
    ("mx.example:2525", "smtp"), ("a:443", "https"), ("a:8443", "https"), ("a:80", "http"),
    ("a:8080", "http"), ("a:8000", "http"), ("a:53", "dns"), ("a:853", "dot"),
    ("[2001:db8::1]:853", "dot"), ("a:22", "other"), ("a", "other"), ("", "other"),
    ("2001:db8::1", "other"), ("a:99999", "other"), ("a:", "other"), (":443", "other"),
    ("[::1]:", "other"), ("[::1", "other"), ("a:44x", "other"), ("a:b:443", "other"),
    ("exämple.test:443", "https"), ("a:\u0664\u0664\u0663", "other"), (None, "other"),
])
def test_destination_classes(make_tracker: Make, destination: Any, cls: str) -> None:
    t = make_tracker()
    assert t.accept("192.0.2.1", destination, now=1.0) is True
    by_class = t.stats("192.0.2.1", now=1.0).by_class
    assert by_class[cls] == 1 and sum(by_class.values()) == 1


@pytest.mark.parametrize("destination", [5, b"a:443", ["a:443"]], ids=repr)
def test_destination_of_wrong_type_raises_and_counts_nothing(make_tracker: Make, destination: Any) -> None:
    t = make_tracker()
    with pytest.raises(TypeError, match="destination"):
        t.accept("192.0.2.1", destination)
    assert t.tracked_sources == 0


def test_distinct_hosts_and_ports(make_tracker: Make) -> None:
    t = make_tracker()
    for port in range(1, 31):
        t.accept("192.0.2.1", f"target.example:{port}", now=1.0)
    for host in range(20):
        t.accept("192.0.2.2", f"Site{host}.example:443", now=1.0)
        t.accept("192.0.2.2", f"site{host}.EXAMPLE:443", now=1.0)   # hosts ignore case
    scan = t.stats("192.0.2.1", now=1.0)
    assert scan.distinct_destinations == 1
    assert 24 <= scan.distinct_ports <= 36       # a 64-bit linear-counting estimate
    stuffing = t.stats("192.0.2.2", now=1.0)
    assert stuffing.distinct_ports == 1
    assert 16 <= stuffing.distinct_destinations <= 24


def test_custom_port_classes(make_tracker: Make) -> None:
    t = make_tracker(port_classes={"mail": [25, 587], "irc": range(6660, 6670)})
    assert t.class_names == ("other", "mail", "irc")
    t.accept("192.0.2.1", "irc.example:6667", now=1.0)
    t.accept("192.0.2.1", "mx.example:25", now=1.0)
    t.accept("192.0.2.1", "www.example:443", now=1.0)
    assert t.stats("192.0.2.1", now=1.0).by_class == {"other": 1, "mail": 1, "irc": 1}


@pytest.mark.parametrize(("port_classes", "error", "match"), [
    ({"other": [1]}, ValueError, "'other'"),
    ({"": [1]}, ValueError, "non-empty"),
    ({"a": [1], "b": [1]}, ValueError, "port 1 is in two classes"),
    ({"a": [70000]}, ValueError, "port of class 'a'"),
    ({"a": ["443"]}, TypeError, "port of class 'a'"),
    ({"a": "443"}, TypeError, "iterable of int"),
    ({f"c{i}": [i] for i in range(8)}, ValueError, "at most 7"),
    ([("a", [1])], TypeError, "mapping"),
])
def test_bad_port_classes(make_tracker: Make, port_classes: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make_tracker(port_classes=port_classes)


# --- configuration -------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"capacity": 0}, ValueError, "capacity"),
    ({"capacity": -5}, ValueError, "capacity"),
    ({"capacity": 1.5}, TypeError, "capacity"),
    ({"capacity": True}, TypeError, "capacity"),
    ({"ipv4_prefix": 33}, ValueError, "ipv4_prefix"),
    ({"ipv6_prefix": 129}, ValueError, "ipv6_prefix"),
    ({"ipv6_prefix": -1}, ValueError, "ipv6_prefix"),
    ({"window": 0}, ValueError, "window"),
    ({"window": math.inf}, ValueError, "window"),
    ({"window": "60"}, TypeError, "window"),
    ({"concurrent_threshold": 0}, ValueError, "concurrent_threshold"),
    ({"rate_threshold": -1.0}, ValueError, "rate_threshold"),
    ({"overflow": "drop"}, ValueError, "overflow"),
    ({"clock": 5}, TypeError, "clock"),
    ({"shards": 3}, ValueError, "power of two"),
    ({"shards": 512}, ValueError, "shards"),
])
def test_bad_configuration_is_named(make_tracker: Make, kwargs: dict[str, Any], error: type,
                                    match: str) -> None:
    with pytest.raises(error, match=match):
        make_tracker(**kwargs)


def test_small_capacity_uses_fewer_shards(make_tracker: Make) -> None:
    t = make_tracker(capacity=5)
    assert t.capacity == 5 and t.shards == 4


def test_capacity_is_exact(make_tracker: Make) -> None:
    assert make_tracker(capacity=1_000_003).capacity == 1_000_003


def test_batches_count_like_single_calls(make_tracker: Make) -> None:
    t = make_tracker(concurrent_threshold=3)
    sources = ["192.0.2.1", ("192.0.2.1", 5000), "2001:db8::1", "192.0.2.1"]
    assert t.accept_many(sources, "mx.example:25", now=1.0) == [True] * 4
    assert counts(t)["active_connections"] == 4
    assert t.stats("192.0.2.1").active == 3
    assert [f.pattern for f in t.findings(1.0)] == ["conn_flood"]
    assert t.accept_many(iter(()), now=1.0) == []
    # A source with nothing open is not closed: False, as close() says.
    assert t.close_many(("192.0.2.1", "198.51.100.9", "2001:db8::1"), now=2.0) == [True, False, True]
    assert counts(t)["active_connections"] == 2


@pytest.mark.parametrize(("bad", "error"), [("not-an-address", ValueError), (42, TypeError),
                                            (("192.0.2.9",), TypeError)])
def test_a_bad_source_in_a_batch_counts_nothing(make_tracker: Make, bad: object,
                                                error: type[Exception]) -> None:
    t = make_tracker()
    t.accept("192.0.2.1", now=1.0)
    before = counts(t)
    with pytest.raises(error, match=r"^sources\[2\]: "):
        t.accept_many(["192.0.2.1", "192.0.2.2", bad, "192.0.2.3"], now=1.0)
    with pytest.raises(error, match=r"^sources\[2\]: "):
        t.close_many(["192.0.2.1", "192.0.2.1", bad], now=1.0)
    assert counts(t) == before
    assert t.stats("192.0.2.1").active == 1


def test_batch_closes_carry_bytes_checked_first(make_tracker: Make) -> None:
    t = make_tracker()
    sources = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    t.accept_many(sources, "mx.example:25", now=1.0)
    before = counts(t)
    for sent, received, error, match in (
            ([1, 2], None, ValueError, r"^sent has 2 entries for 3 sources"),
            ([1, 2, -3], None, ValueError, r"^sent\[2\] must be >= 0"),
            (None, [0, "9", 0], TypeError, r"^received\[1\] must be an int or None"),
            (5, None, TypeError, r"^sent must be an iterable of byte counts, not int$"),
            (None, "123", TypeError, r"^received must be an iterable of byte counts, not one str")):
        with pytest.raises(error, match=match):
            t.close_many(sources, now=2.0, sent=sent, received=received)
    assert counts(t) == before
    assert t.close_many(sources, now=2.0, sent=[100, None, 5], received=(0, 0, None)) == [True] * 3
    assert counts(t)["active_connections"] == 0


@pytest.mark.parametrize("one", ["192.0.2.1", b"192.0.2.1", 5, None])
def test_one_source_is_not_a_batch(make_tracker: Make, one: object) -> None:
    t = make_tracker()
    with pytest.raises(TypeError, match="sources must be an iterable of sources"):
        t.accept_many(one)
    with pytest.raises(TypeError, match="sources must be an iterable of sources"):
        t.close_many(one)
    assert counts(t)["active_connections"] == 0


def test_a_batch_tells_the_finding_callbacks(make_tracker: Make) -> None:
    t = make_tracker(concurrent_threshold=2)
    seen: list[tuple[str, str]] = []
    t.add_finding_callback(lambda f: seen.append((f.source, f.pattern)))
    t.accept_many(["192.0.2.1", "192.0.2.2", "192.0.2.1"], now=1.0)
    assert seen == [("192.0.2.1", "conn_flood")]


def test_a_batch_with_no_room_refuses_as_accept_does(make_tracker: Make) -> None:
    t = make_tracker(capacity=1, shards=1, overflow="deny")
    assert t.accept_many(["192.0.2.1", "192.0.2.2", "192.0.2.1"], now=1.0) == [True, False, True]
