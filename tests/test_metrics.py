"""GuardCollector: aggregates only, through prometheus_client's own exposition."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from connguard.metrics import GuardCollector

Make = Callable[..., Any]


def scrape(*collectors: GuardCollector) -> str:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode()


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in the exposition"
    return float(match.group(1))


def busy_guard(make_guard: Make) -> tuple[Any, list[str]]:
    g = make_guard(tracker={"concurrent_threshold": 5}, limiter={"rate": 1000.0, "burst": 1000.0})
    sources = [f"198.51.{i // 256}.{i % 256}" for i in range(300)]
    sources += [f"2001:db8:{i:x}::{i + 1:x}" for i in range(200)]
    for s in sources:
        g.accept(s, "mx.example:25")
    for s in sources[:10] + sources[300:305]:       # some flagged: 5 open connections
        for _ in range(4):
            g.accept(s, "a:443")
    for s in sources[20:30] + sources[320:325]:     # some banned
        g.report(s, "impersonation")
        g.accept(s)
    return g, sources


def test_exposition_carries_no_address_or_netblock(make_guard: Make) -> None:
    g, sources = busy_guard(make_guard)
    text = scrape(GuardCollector(g))
    keys = {g.tracker.stats(s).source for s in sources}
    for needle in set(sources) | keys:
        assert needle not in text, needle
    assert not re.search(r"\d+\.\d+\.\d+\.\d+", text)         # no dotted quad at all
    assert not re.search(r"[0-9a-f]{1,4}::|::[0-9a-f]{1,4}", text)
    assert "2001:db8" not in text


def test_values_are_the_guards_aggregates(make_guard: Make) -> None:
    g, sources = busy_guard(make_guard)
    text = scrape(GuardCollector(g))
    assert sample(text, "connguard_active_connections") == g.tracker.active_connections == 575
    assert sample(text, "connguard_tracked_sources") == 500
    assert sample(text, "connguard_flagged_sources", '{pattern="conn_flood"}') == 15
    assert sample(text, "connguard_flagged_sources", '{pattern="port_scan"}') == 0
    assert sample(text, "connguard_active_bans") == 15
    assert sample(text, "connguard_infractions_total", '{kind="impersonation"}') == 15
    assert sample(text, "connguard_accepted_total") == 500 + 60 + 15
    assert sample(text, "connguard_rejected_total", '{reason="banned"}') == 0   # monitor mode
    assert sample(text, "connguard_evicted_bans_total") == 0


def test_bans_lifted_for_room_are_counted(make_guard: Make) -> None:
    g = make_guard(bans={"capacity": 4, "shards": 1}, limiter=False)
    for i in range(6):
        g.bans.ban(f"203.0.113.{i}", 60.0 + i)
    assert sample(scrape(GuardCollector(g)), "connguard_evicted_bans_total") == 2 == g.bans.evicted_bans


def test_refusals_are_counted_by_reason(make_guard: Make) -> None:
    g = make_guard(enforce=True)
    g.bans.ban("203.0.113.1", 60.0)
    g.accept("203.0.113.1")
    for _ in range(10):
        g.accept("203.0.113.2")
    text = scrape(GuardCollector(g))
    assert sample(text, "connguard_rejected_total", '{reason="banned"}') == 1
    assert sample(text, "connguard_rejected_total", '{reason="limit"}') == 2
    assert sample(text, "connguard_accepted_total") == 8


def test_two_guards_in_one_process(make_guard: Make) -> None:
    a, b = make_guard(), make_guard()
    a.accept("203.0.113.1")
    text = scrape(GuardCollector(a, namespace="edge"), GuardCollector(b, namespace="relay"))
    assert sample(text, "edge_active_connections") == 1
    assert sample(text, "relay_active_connections") == 0
    assert "connguard_active_connections 0.0" in scrape(GuardCollector(b))   # a registry of its own
    registry = CollectorRegistry()
    registry.register(GuardCollector(a))
    with pytest.raises(ValueError, match="Duplicated"):            # a real clash is refused
        registry.register(GuardCollector(b))


@pytest.mark.parametrize("namespace", ["", "1x", "con-guard", "a b"])
def test_bad_namespace_is_named(make_guard: Make, namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        GuardCollector(make_guard(), namespace=namespace)


def test_only_a_guard_can_be_collected() -> None:
    with pytest.raises(TypeError, match="Guard"):
        GuardCollector(object())  # type: ignore[arg-type]


def test_findings_are_counted_per_pattern(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    for i in range(60):                              # a relay: 60 mails to 12 servers
        g.accept("203.0.113.25", f"mx{i % 12}.example.net:25", now=1_000.0 + i)
        g.close("203.0.113.25", now=1_000.5 + i, sent=3_000, received=200,
                destination=f"mx{i % 12}.example.net:25")
    text = scrape(GuardCollector(g))
    assert sample(text, "connguard_findings_total", '{pattern="spam_relay"}') == 1
    assert sample(text, "connguard_findings_total", '{pattern="port_scan"}') == 0
    assert sample(text, "connguard_flagged_sources", '{pattern="spam_relay"}') == 1
    assert sample(text, "connguard_finding_errors_total") == 0
    assert sample(text, "connguard_pattern_state_full_total") == 0
    assert "203.0.113.25" not in text
