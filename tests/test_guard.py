"""Guard: one accept call over the ban table, the limiter and the tracker; both cores."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

import connguard as cg
from connguard import Verdict

Make = Callable[..., Any]


def test_ordinary_accept_is_allowed_and_counted(make_guard: Make) -> None:
    g = make_guard()
    v = g.accept("203.0.113.1:5000", "mx.example:25")
    assert v and v.allowed and v.reason is None
    assert g.tracker.active_connections == 1
    assert g.close("203.0.113.1:5000") is True
    assert g.tracker.active_connections == 0


def test_monitor_mode_names_the_reason_and_refuses_nothing(make_guard: Make) -> None:
    g = make_guard()
    g.bans.ban("203.0.113.1", 60.0)
    v = g.accept("203.0.113.1")
    assert v.allowed and v.reason == "banned"
    assert g.tracker.stats("203.0.113.1").active == 1


def test_enforce_refuses_banned_sources_without_counting_them(make_guard: Make) -> None:
    g = make_guard(enforce=True)
    g.bans.ban("2001:db8:0:1::1", 60.0)
    v = g.accept("2001:db8:0:1::99", "a:443")        # the same /64
    assert not v and v.reason == "banned"
    assert g.tracker.stats("2001:db8:0:1::99") is None
    assert g.tracker.active_connections == 0


def test_enforce_refuses_past_the_rate_limit(make_guard: Make) -> None:
    g = make_guard(enforce=True)
    verdicts = [g.accept("203.0.113.1") for _ in range(10)]
    assert [v.allowed for v in verdicts] == [True] * 8 + [False] * 2
    assert verdicts[-1].reason == "limit"
    assert g.tracker.stats("203.0.113.1").active == 8


def test_overflow_deny_refuses_even_in_monitor_mode(make_guard: Make) -> None:
    g = make_guard(tracker={"capacity": 1, "overflow": "deny"}, limiter=False)
    assert g.accept("203.0.113.1")
    v = g.accept("203.0.113.2")
    assert not v and v.reason == "overflow"


def test_limit_levels_are_reported_once_each_so_every_level_is_reachable(make_guard: Make,
                                                                        clock: Any) -> None:
    g = make_guard()
    for _ in range(8 + 20):                          # the burst, then 20 denials
        g.accept("203.0.113.1")
    kinds = sorted(i["kind"] for i in g.bans.snapshot()["infractions"])
    assert kinds == ["rate_limit_abuse", "rate_limit_violation"]
    assert g.bans.score("203.0.113.1") == 7 and not g.is_banned("203.0.113.1")
    clock.advance(301.0)                             # a new violation window: reported again
    for _ in range(8 + 10):
        g.accept("203.0.113.1")
    assert g.bans.score("203.0.113.1") == 14 and g.is_banned("203.0.113.1")


def test_limiter_false_means_no_limit(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    assert g.limiter is None
    assert all(g.accept("203.0.113.1") for _ in range(100))


def test_report_is_banned_and_findings(make_guard: Make) -> None:
    g = make_guard(tracker={"concurrent_threshold": 3}, limiter=False)
    for _ in range(3):
        g.accept("198.51.100.7")
    g.accept("198.51.100.8")
    assert [(f.source, f.pattern) for f in g.findings()] == [("198.51.100.7", "conn_flood")]
    assert g.findings()[0].evidence == {"active": 3, "concurrent_threshold": 3}
    infraction = g.report("198.51.100.9", "impersonation")
    assert infraction.kind == "impersonation" and g.is_banned("198.51.100.9")


def test_bad_input_raises_and_counts_nothing(make_guard: Make) -> None:
    g = make_guard()
    for bad in ("", "999.1.1.1", None, b"1.2.3.4"):
        with pytest.raises((ValueError, TypeError)):
            g.accept(bad)
    with pytest.raises(TypeError, match="destination"):
        g.accept("203.0.113.1", 443)
    assert g.tracker.counters() == (0, 0, 0, 0, 0, 0)
    assert g.limiter.counters()[2] == 0


def test_parts_must_agree(core: Any) -> None:
    from connguard._core import on_core

    Tracker, BanManager = on_core(cg.Tracker, core), on_core(cg.BanManager, core)
    Guard, RateLimiter = on_core(cg.Guard, core), on_core(cg.RateLimiter, core)
    with pytest.raises(ValueError, match="tracker and bans must key sources by the same"):
        Guard(tracker=Tracker(ipv6_prefix=48), bans=BanManager())
    with pytest.raises(ValueError, match="tracker and limiter must key sources by the same"):
        Guard(tracker=Tracker(ipv4_prefix=24), bans=BanManager(ipv4_prefix=24),
              limiter=RateLimiter())
    with pytest.raises(TypeError, match="tracker"):
        Guard(tracker=object())  # type: ignore[arg-type]


def test_verdicts_are_shared_and_allocate_nothing(make_guard: Make, core: Any) -> None:
    g = make_guard(limiter=False)
    assert g.accept("203.0.113.1") is g.accept("203.0.113.2")
    if core.__name__.endswith("_py"):
        return
    sources = [f"198.51.100.{i}" for i in range(100)]
    for s in sources:
        g.accept(s, "a:443")
        g.close(s)
    accept, close = g.accept, g.close
    before = sys.getallocatedblocks()
    for _ in range(50):
        for s in sources:
            accept(s, "a:443", 5.0)
            close(s, 5.0)
    assert sys.getallocatedblocks() - before < 50


def test_verdict_truthiness() -> None:
    assert Verdict(True, "banned") and not Verdict(False, "limit")


@pytest.mark.parametrize("enforce", [False, True])
def test_a_batch_gets_the_verdicts_of_single_accepts(make_guard: Make, enforce: bool) -> None:
    batched, single = make_guard(enforce=enforce), make_guard(enforce=enforce)
    sources = ["203.0.113.1"] * 10 + ["2001:db8:0:1::1", ("203.0.113.2", 443)]
    for g in (batched, single):
        g.bans.ban("2001:db8:0:1::99", 60.0)             # the same /64 as one source
    verdicts = batched.accept_many(sources, "a:443")
    assert verdicts == [single.accept(s, "a:443") for s in sources]
    assert [v.reason for v in verdicts][7:] == [None, "limit", "limit", "banned", None]
    assert batched.verdict_totals() == single.verdict_totals()
    assert batched.close_many(sources) == [single.close(s) for s in sources]
    assert batched.tracker.counters() == single.tracker.counters()


def test_a_bad_source_in_a_guard_batch_checks_and_counts_nothing(make_guard: Make) -> None:
    g = make_guard(enforce=True)
    with pytest.raises(ValueError, match=r"^sources\[1\]: invalid source address"):
        g.accept_many(["203.0.113.1", "203.0.113.300"])
    assert sum(g.verdict_counts()) == 0
    assert g.tracker.active_connections == 0
    assert g.limiter.counters() == make_guard(enforce=True).limiter.counters()


def test_a_guard_batch_tells_on_finding(make_guard: Make) -> None:
    found: list[tuple[str, str]] = []
    g = make_guard(tracker={"concurrent_threshold": 2}, limiter=False,
                   on_finding=lambda f: found.append((f.source, f.pattern)))
    g.accept_many(["203.0.113.1", "203.0.113.1"], "a:443")
    assert found == [("203.0.113.1", "conn_flood")]


def test_a_subclass_keeps_its_own_is_banned(make_guard: Make, core: Any) -> None:
    from connguard._core import on_core

    class Strict(on_core(cg.Guard, core)):  # type: ignore[misc]
        def is_banned(self, source: Any, now: float | None = None) -> bool:
            return source == "198.51.100.66" or bool(super().is_banned(source, now))

    g = Strict(bans=on_core(cg.BanManager, core)(node_id="n"), limiter=False)
    assert g.is_banned("198.51.100.66") and not g.is_banned("198.51.100.67")
    g.bans.ban("198.51.100.67", 60.0)
    assert g.is_banned("198.51.100.67")
    assert make_guard().is_banned("198.51.100.66") is False
