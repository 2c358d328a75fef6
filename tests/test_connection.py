"""Connection handles (Guard.open, Tracker.open), peername sources, max_open and
the connection-sized default limiter, on both cores."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from connguard._core import on_core
from connguard.guard import CONNECTION_BURST, Guard

from .conftest import FakeClock

SRC = "203.0.113.7"


def active(g: Any, source: Any = SRC) -> int:
    stats = g.tracker.stats(source)
    return 0 if stats is None else stats.active


def test_handle_closes_once(make_guard: Callable[..., Any]) -> None:
    g = make_guard()
    conn = g.open(SRC, "example.com:443")
    assert conn and conn.allowed and conn.reason is None and not conn.closed
    assert conn.source == SRC
    assert active(g) == 1
    assert conn.close(sent=10, received=20) is True
    assert conn.closed and active(g) == 0
    # idempotent: a second close touches nothing, not even another connection
    other = g.open(SRC)
    assert conn.close() is False
    assert active(g) == 1
    other.close()
    assert active(g) == 0


def test_refused_handle_needs_no_close(make_guard: Callable[..., Any]) -> None:
    g = make_guard(enforce=True)
    kept = g.open(SRC)
    g.bans.ban(SRC, 60)
    refused = g.open(SRC)
    assert not refused and refused.reason == "banned" and refused.closed
    # the mitmproxy case: closing the refused one must not close the open one
    assert refused.close() is False
    assert active(g) == 1
    kept.close()
    assert active(g) == 0


def test_context_manager_closes_on_error(make_guard: Callable[..., Any]) -> None:
    g = make_guard()
    with pytest.raises(RuntimeError), g.open(SRC, "mx.example:25") as conn:
        assert active(g) == 1
        raise RuntimeError("handler failed")
    assert conn.closed and active(g) == 0


def test_bad_bytes_leave_the_handle_open(make_guard: Callable[..., Any]) -> None:
    g = make_guard()
    conn = g.open(SRC)
    with pytest.raises(ValueError, match="sent must be >= 0"):
        conn.close(sent=-1)
    with pytest.raises(TypeError, match="received must be an int"):
        conn.close(received="12")
    assert not conn.closed and active(g) == 1
    assert conn.close(sent=1, received=2)
    assert active(g) == 0


def test_tracker_handles(make_tracker: Callable[..., Any]) -> None:
    t = make_tracker()
    with t.open(("2001:db8::1", 443, 0, 0), "example.com:443", now=1.0) as conn:
        assert conn and conn.reason is None
        assert t.stats("2001:db8::1", now=1.0).active == 1
    assert t.stats("2001:db8::1", now=1.0).active == 0


@pytest.mark.parametrize("peer", [("192.0.2.9", 5000), ("192.0.2.9", 5000, 0, 0)])
def test_peername_tuples_key_like_the_host(make_guard: Callable[..., Any], peer: Any) -> None:
    g = make_guard()
    assert g.accept(peer)
    assert active(g, "192.0.2.9") == 1
    assert g.close(peer)
    g.bans.ban(peer, 60)
    assert g.is_banned("192.0.2.9") and g.is_banned(peer)
    assert g.tracker.netblock(peer) == "192.0.2.9"


def test_ipv6_peername_never_miskeys(make_tracker: Callable[..., Any]) -> None:
    """"host:port" built by hand from an IPv6 peername reads as another address."""
    t = make_tracker(ipv6_prefix=128)
    t.accept(("::1", 8080, 0, 0))
    t.accept("::1:8080")          # what f"{host}:{port}" makes: a different address
    assert t.stats("::1").active == 1 and t.stats("::1:8080").active == 1


@pytest.mark.parametrize("bad, why", [
    (["192.0.2.9", 5000], "got list"),
    (("192.0.2.9",), "got tuple"),
    ((5000, "192.0.2.9"), "got tuple"),
    (b"192.0.2.9", "got bytes"),
])
def test_other_sources_are_refused_clearly(make_guard: Callable[..., Any], bad: Any,
                                           why: str) -> None:
    g = make_guard()
    for call in (g.accept, g.open, g.close, g.is_banned, g.tracker.open):
        with pytest.raises(TypeError, match=f"expected str or a peername tuple.*{why}"):
            call(bad)
    assert g.tracker.counters()[0] == 0


def test_max_open_refuses_a_flood_with_enforce(make_guard: Callable[..., Any]) -> None:
    g = make_guard(enforce=True, max_open=3)
    held = [g.open(SRC) for _ in range(3)]
    assert all(held)
    flood = g.open(SRC)
    assert not flood and flood.reason == "flood"
    assert not g.accept(SRC)
    assert active(g) == 3
    assert g.open("198.51.100.1")          # others are still served
    held[0].close()
    assert g.open(SRC)                      # room again after a close
    assert g.tracker.stats(SRC).total == 4  # refusals are not counted as connections


def test_max_open_in_monitor_mode_counts_and_names_flood(make_guard: Callable[..., Any]) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from connguard.metrics import GuardCollector

    g = make_guard(max_open=2)
    verdicts = [g.accept(SRC) for _ in range(5)]
    assert all(verdicts)
    assert [v.reason for v in verdicts] == [None, None, "flood", "flood", "flood"]
    assert active(g) == 5
    registry = CollectorRegistry()
    registry.register(GuardCollector(g))
    text = generate_latest(registry).decode()
    assert 'connguard_would_reject_total{reason="flood"} 3.0' in text
    assert 'connguard_rejected_total{reason="flood"} 0.0' in text
    assert 'connguard_accepted_total 5.0' in text
    assert SRC not in text


def test_max_open_is_checked(make_guard: Callable[..., Any]) -> None:
    for bad in (0, -1, 2**32):
        with pytest.raises(ValueError, match="max_open"):
            make_guard(max_open=bad)
    with pytest.raises(TypeError, match="max_open"):
        make_guard(max_open="3")


def test_one_tracker_one_cap(make_guard: Callable[..., Any], core: Any) -> None:
    g = make_guard(max_open=2)
    with pytest.raises(RuntimeError, match="cap is set already"):
        on_core(Guard, core)(tracker=g.tracker, bans=g.bans, limiter=False, max_open=3)


def test_default_limiter_is_connection_sized(core: Any, clock: FakeClock,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A page load's worth of parallel connections passes; a flood from the only
    source ever seen warns (without its address) that a proxy may hide clients."""
    g = on_core(Guard, core)(clock=clock)
    burst = int(CONNECTION_BURST)
    assert [g.accept(SRC).reason for _ in range(burst)] == [None] * burst
    with caplog.at_level(logging.WARNING, logger="connguard.guard"):
        reasons = [g.accept(SRC).reason for _ in range(10)]
    assert reasons == ["limit"] * 10
    warnings = [r.getMessage() for r in caplog.records if "one address" in r.getMessage()]
    assert len(warnings) == 1 and SRC not in warnings[0]
    # 200 ordinary clients opening a few connections each never meet the limiter
    for i in range(200):
        assert [g.accept(f"198.51.100.{i % 250}").reason for _ in range(3)] == [None] * 3
    assert g.bans.infraction_counts().get("rate_limit_violation", 0) == 1


def test_listener_connection_opens_a_handle_in_a_guard(make_guard: Callable[..., Any]) -> None:
    """connguard.connection() with a Guard listening: counted once, closed once, a
    refused one closes nothing, bad byte counts never lose the close."""
    import connguard as cg

    g = make_guard(enforce=True)
    cg.set_listener(g)
    try:
        kept = cg.connection(SRC, "mx.example:25")
        assert active(g) == 1
        g.bans.ban(SRC, 60)
        with cg.connection(SRC, "mx.example:25") as refused:
            refused.sent = 5
        assert active(g) == 1                   # the refused one closed nothing
        kept.close(sent=-5, received="x")       # type: ignore[arg-type]  # read as unknown
        kept.close()
        assert active(g) == 0
        with cg.connection("not an address"):
            pass
        assert g.tracker.unattributed == 2      # its accept and its close
    finally:
        cg.set_listener(None)


def test_peername_reports_meet_the_allow_list(make_guard: Callable[..., Any]) -> None:
    g = make_guard(bans={"allow": ["192.0.2.0/24"]})
    g.report(("192.0.2.9", 5000), "malformed_message")
    assert g.bans.allowed_reports == 1 and g.bans.score("192.0.2.9") == 0
    g.report(("198.51.100.9", 5000, 0, 0), "malformed_message")
    assert g.bans.score(("198.51.100.9", 1)) > 0
