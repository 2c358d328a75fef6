"""The windowed abuse patterns on synthetic traffic, default thresholds; both cores."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

import pytest

from connguard.guard import FINDING_KINDS
from connguard.patterns import CredentialStuffing, DnsTunnel, Finding, PortScan, SpamRelay
from connguard.tracker import PATTERNS, Tracker

Make = Callable[..., Tracker]
MakeGuard = Callable[..., Any]

SPAM, SCAN, CRED, DNS = SpamRelay(), PortScan(), CredentialStuffing(), DnsTunnel()
WINDOWS = {"spam_relay": SPAM.window, "port_scan": SCAN.window,
           "credential_stuffing": CRED.window, "dns_tunnel": DNS.window}
# A multiple of every default window: traffic starting here starts a fresh bucket.
T0 = 36_000.0
assert all(T0 % w == 0 for w in WINDOWS.values())
SRC = "198.51.100.7"
TUNNEL_BYTES = (20_000, 80_000)           # sent, received of one heavy DoT connection


class Endpoint(Protocol):
    def accept(self, source: str, destination: str | None = "",
               now: float | None = None) -> object: ...

    def close(self, source: str, now: float | None = None, *, sent: int | None = None,
              received: int | None = None, destination: str | None = None) -> bool: ...


def connect(t: Endpoint, src: str, dst: str, now: float, sent: int | None = None,
            received: int | None = None, keyed: bool = True) -> None:
    """One connection, accepted and closed at ``now`` (the close names dst unless not keyed)."""
    assert t.accept(src, dst, now=now)
    assert t.close(src, now=now, sent=sent, received=received, destination=dst if keyed else None)


def run(t: Endpoint, src: str, dests: list[str], start: float, step: float = 1.0,
        sent: int | None = None, received: int | None = None, keyed: bool = True) -> float:
    """Connect to each of ``dests`` in turn, ``step`` seconds apart; return the last time."""
    now = start
    for i, dst in enumerate(dests):
        now = start + i * step
        connect(t, src, dst, now, sent, received, keyed)
    return now


def live(t: Tracker, src: str, now: float) -> frozenset[str]:
    s = t.stats(src, now)
    assert s is not None
    return s.patterns


# --- traffic that raises each pattern: (t, src, start, extra) -> time of the last event ----

def spam_traffic(t: Endpoint, src: str, start: float, extra: int = 0) -> float:
    dests = [f"mx{i % (2 * SPAM.hosts)}.example.net:25" for i in range(SPAM.connections + extra)]
    return run(t, src, dests, start, sent=4_000, received=300)


def scan_traffic(t: Endpoint, src: str, start: float, extra: int = 0) -> float:
    hosts = math.ceil(SCAN.hosts * 2.5) + extra
    return run(t, src, [f"10.1.{i // 250}.{i % 250}:3389" for i in range(hosts)], start,
               sent=0, received=0)


def stuffing_traffic(t: Endpoint, src: str, start: float, extra: int = 0) -> float:
    dests = ["login.shop.example:443", "auth.shop.example:443"] * CRED.connections
    return run(t, src, dests[:CRED.connections + extra], start, step=0.5, sent=800, received=2_048)


def tunnel_connections() -> int:
    per = sum(TUNNEL_BYTES)
    assert per >= DNS.mean_bytes
    return max(DNS.connections, math.ceil(DNS.bytes / per))


def tunnel_traffic(t: Endpoint, src: str, start: float, extra: int = 0) -> float:
    dests = ["9.9.9.9:853"] * (tunnel_connections() + extra)
    return run(t, src, dests, start, step=4.0, sent=TUNNEL_BYTES[0], received=TUNNEL_BYTES[1])


POSITIVE: dict[str, Callable[..., float]] = {
    "spam_relay": spam_traffic, "port_scan": scan_traffic,
    "credential_stuffing": stuffing_traffic, "dns_tunnel": tunnel_traffic}


# --- spam_relay --------------------------------------------------------------------

def test_spam_relay_raised_at_the_connection_threshold(make_tracker: Make) -> None:
    t = make_tracker()
    dests = [f"mx{i % (2 * SPAM.hosts)}.example.net:25" for i in range(SPAM.connections)]
    end = run(t, SRC, dests[:-1], T0, sent=4_000, received=300)
    assert live(t, SRC, end) == frozenset() and t.findings(end) == []
    connect(t, SRC, dests[-1], end + 1, sent=4_000, received=300)
    assert live(t, SRC, end + 1) == {"spam_relay"}
    [f] = t.findings(end + 1)
    assert (f.source, f.pattern) == (SRC, "spam_relay")
    assert f.evidence["smtp_connections"] == SPAM.connections
    assert f.evidence["smtp_hosts"] >= SPAM.hosts
    assert f.evidence["empty"] == 0 and f.evidence["closed_with_bytes"] == SPAM.connections


def test_submission_client_to_one_smarthost_is_not_a_relay(make_tracker: Make) -> None:
    t = make_tracker()
    end = run(t, SRC, ["smtp.provider.example:587"] * (3 * SPAM.connections), T0, step=0.3,
              sent=20_000, received=600)                     # a burst, all in one tracker window
    s = t.stats(SRC, end)
    assert s is not None and s.by_class["smtp"] == 3 * SPAM.connections
    assert s.patterns == frozenset() and t.findings(end) == []


def test_port_25_sweep_with_nothing_received_is_a_scan_not_a_relay(make_tracker: Make) -> None:
    found: list[Finding] = []
    t = make_tracker(on_finding=found.append)
    end = run(t, SRC, [f"192.0.2.{i}:25" for i in range(1, 101)], T0, sent=0, received=0)
    assert live(t, SRC, end) == {"port_scan"}
    assert [f.pattern for f in found] == ["port_scan"]
    assert found[0].evidence["kind"] == "horizontal"


# --- port_scan ---------------------------------------------------------------------

@pytest.mark.parametrize("with_bytes", [True, False], ids=["bytes", "no-bytes"])
def test_slow_vertical_scan_is_flagged(make_tracker: Make, with_bytes: bool) -> None:
    t = make_tracker()
    size = 0 if with_bytes else None
    dests = [f"10.0.0.5:{port}" for port in range(1000, 1100)]
    end = run(t, SRC, dests, T0, step=SCAN.window / len(dests), sent=size, received=size)
    assert end - T0 < SCAN.window
    assert live(t, SRC, end) == {"port_scan"}
    [f] = t.findings(end)
    assert f.evidence["kind"] == "vertical"
    assert f.evidence["ports"] >= SCAN.ports and f.evidence["hosts"] <= SCAN.vertical_max_hosts


def test_horizontal_scan_with_failing_closes_is_flagged(make_tracker: Make) -> None:
    t = make_tracker()
    end = scan_traffic(t, SRC, T0)
    assert live(t, SRC, end) == {"port_scan"}
    [f] = t.findings(end)
    assert f.evidence["kind"] == "horizontal" and f.evidence["hosts"] >= SCAN.hosts
    assert f.evidence["empty"] == f.evidence["closed_with_bytes"] >= SCAN.min_closed


@pytest.mark.parametrize("port", [3389, 443])
def test_horizontal_sweep_without_bytes_stays_silent(make_tracker: Make, port: int) -> None:
    t = make_tracker()
    hosts = math.ceil(SCAN.hosts * 2.5)
    end = run(t, SRC, [f"10.1.0.{i}:{port}" for i in range(hosts)], T0)
    assert live(t, SRC, end) == frozenset() and t.findings(end) == []


@pytest.mark.parametrize(("received", "expected"), [(40_000, set()), (0, {"port_scan"})],
                         ids=["browser", "same-sweep-failing"])
def test_browser_to_hundreds_of_hosts_is_neither_scan_nor_stuffing(make_tracker: Make, received: int,
                                                                  expected: set[str]) -> None:
    t = make_tracker()
    dests = []
    for i in range(CRED.connections + 100):
        dests.append(f"site{i % 300}.example:443")
        if i % 4 == 0:
            dests.append(f"old{i}.example:80")
    end = run(t, SRC, dests, T0, step=0.5, sent=1_500, received=received)
    assert end - T0 < min(SCAN.window, CRED.window)
    assert live(t, SRC, end) == expected                 # only bytes tell the two apart
    assert {f.pattern for f in t.findings(end)} == expected


# --- credential_stuffing ------------------------------------------------------------

@pytest.mark.parametrize("hosts", [1, 2])
def test_credential_stuffing_on_one_or_two_hosts(make_tracker: Make, hosts: int) -> None:
    t = make_tracker()
    dests = (["login.shop.example:443", "auth.shop.example:443"][:hosts] * CRED.connections)
    dests = dests[:CRED.connections]
    end = run(t, SRC, dests[:-1], T0, sent=800, received=2_048)
    assert live(t, SRC, end) == frozenset()
    connect(t, SRC, dests[-1], end + 1, sent=800, received=2_048)
    assert live(t, SRC, end + 1) == {"credential_stuffing"}
    [f] = t.findings(end + 1)
    assert f.evidence["https_connections"] == CRED.connections
    assert f.evidence["hosts"] <= CRED.max_hosts
    assert f.evidence["mean_received"] <= CRED.mean_received


def test_login_watch_list_is_case_insensitive(make_tracker: Make) -> None:
    t = make_tracker(credential_stuffing=CredentialStuffing(login_hosts=("login.example.com",)))
    assert t.class_names[-1] == "login"
    dests = ["login.example.com:443", "LOGIN.example.com:443"] * CRED.login_connections
    end = run(t, SRC, dests[:CRED.login_connections - 1], T0, step=0.25, received=2_048)
    assert live(t, SRC, end) == frozenset()
    connect(t, SRC, dests[CRED.login_connections - 1], end + 0.25, received=2_048)
    s = t.stats(SRC, end + 0.25)
    assert s is not None and s.by_class["login"] == CRED.login_connections
    assert s.patterns == {"credential_stuffing"}
    [f] = t.findings(end + 0.25)
    assert f.evidence["login_connections"] == CRED.login_connections


def test_video_downloads_from_two_cdn_hosts_are_not_stuffing(make_tracker: Make) -> None:
    t = make_tracker()
    dests = ["cdn1.video.example:443", "cdn2.video.example:443"] * CRED.connections
    end = run(t, SRC, dests[:CRED.connections + 50], T0, sent=2_000, received=50_000_000)
    assert live(t, SRC, end) == frozenset() and t.findings(end) == []


def test_busy_spread_https_client_is_not_stuffing(make_tracker: Make) -> None:
    t = make_tracker()
    dests = [f"api{i % 250}.example:443" for i in range(2 * CRED.connections)]
    end = run(t, SRC, dests, T0, step=0.5, sent=800, received=2_048)
    assert end - T0 < CRED.window
    assert live(t, SRC, end) == frozenset() and t.findings(end) == []


# --- dns_tunnel ----------------------------------------------------------------------

def test_heavy_dot_to_one_resolver_is_a_tunnel(make_tracker: Make) -> None:
    t = make_tracker()
    n = tunnel_connections()
    end = run(t, SRC, ["9.9.9.9:853"] * (n - 1), T0, step=4.0, sent=TUNNEL_BYTES[0],
              received=TUNNEL_BYTES[1])
    assert live(t, SRC, end) == frozenset()
    connect(t, SRC, "9.9.9.9:853", end + 4, sent=TUNNEL_BYTES[0], received=TUNNEL_BYTES[1])
    assert live(t, SRC, end + 4) == {"dns_tunnel"}
    [f] = t.findings(end + 4)
    assert f.evidence["bytes"] == n * sum(TUNNEL_BYTES) >= DNS.bytes
    assert f.evidence["mean_bytes"] == sum(TUNNEL_BYTES) and f.evidence["dns_connections"] == n


def test_all_day_dot_with_small_messages_is_never_a_tunnel(make_tracker: Make) -> None:
    found: list[Finding] = []
    t = make_tracker(on_finding=found.append)
    end = run(t, SRC, ["9.9.9.9:853"] * 2_000, T0, step=86_400 / 2_000, sent=1_000, received=2_000)
    assert found == [] and t.findings(end) == [] and live(t, SRC, end) == frozenset()


def test_heavy_dot_without_byte_counts_stays_silent(make_tracker: Make) -> None:
    t = make_tracker()
    end = run(t, SRC, ["9.9.9.9:853"] * (3 * tunnel_connections()), T0, step=4.0)
    assert live(t, SRC, end) == frozenset() and t.findings(end) == []


@pytest.mark.parametrize("https_first", [0, 1])
def test_destinationless_closes_count_as_dns_for_a_dns_only_source(make_tracker: Make,
                                                                   https_first: int) -> None:
    t = make_tracker()
    run(t, SRC, ["www.example.org:443"] * https_first, T0 - 1, sent=500, received=5_000)
    extra = 9 * https_first                  # closes before DNS is 90% of accepts do not count
    end = run(t, SRC, ["9.9.9.9:853"] * (tunnel_connections() + extra), T0, step=4.0,
              sent=TUNNEL_BYTES[0], received=TUNNEL_BYTES[1], keyed=False)
    assert live(t, SRC, end) == {"dns_tunnel"}


@pytest.mark.parametrize(("keyed", "expected"), [(False, set()), (True, {"dns_tunnel"})])
def test_destinationless_closes_of_a_mostly_https_source_are_not_dns(make_tracker: Make, keyed: bool,
                                                                    expected: set[str]) -> None:
    t = make_tracker()
    now = T0
    for _ in range(tunnel_connections() + 10):
        for j in range(4):
            connect(t, SRC, f"web{j}.example:443", now, sent=500, received=5_000)
            now += 0.5
        connect(t, SRC, "9.9.9.9:853", now, *TUNNEL_BYTES, keyed=keyed)
        now += 0.5
    assert now - T0 < DNS.window
    assert live(t, SRC, now) == expected     # keyed: the same bytes are DNS bytes


# --- clearing, grouping, findings, callbacks --------------------------------------------

@pytest.mark.parametrize("pattern", list(POSITIVE))
def test_raised_pattern_clears_a_window_after_its_evidence(make_tracker: Make, pattern: str) -> None:
    t = make_tracker()
    end = POSITIVE[pattern](t, SRC, T0)
    window = WINDOWS[pattern]
    bit = PATTERNS.index(pattern)
    assert t.flagged_sources == 1 and t.flagged_by()[bit] == 1
    for later in (end, end + 0.9 * window):
        assert pattern in live(t, SRC, later)
        assert [(f.source, f.pattern) for f in t.findings(later)] == [(SRC, pattern)]
    later = end + 2.5 * window
    assert live(t, SRC, later) == frozenset() and t.findings(later) == []
    assert t.accept(SRC, "www.example.org:80", now=later)            # the source's next event
    assert t.flagged_sources == 0 and t.flagged_by()[bit] == 0
    assert t.findings(later) == []


def test_ipv6_scan_over_one_64_is_one_finding_on_the_netblock(make_tracker: Make) -> None:
    found: list[Finding] = []
    t = make_tracker(on_finding=found.append)
    now = T0
    for i in range(1, 256):
        for j in range(3):
            connect(t, f"2001:db8:1:2::{i:x}", f"[2001:db8:ff::1]:{2000 + 3 * i + j}", now, 0, 0)
            now += 1.0
    findings = t.findings(now)
    assert [(f.source, f.pattern) for f in findings] == [("2001:db8:1:2::/64", "port_scan")]
    assert findings[0].evidence["kind"] == "vertical"
    assert [f.source for f in found] == ["2001:db8:1:2::/64"]
    assert t.tracked_sources == 1 and t.flagged_sources == 1


def test_findings_describe_only_flagged_sources(make_tracker: Make) -> None:
    t = make_tracker()
    spans: dict[str, tuple[str, float, float]] = {}
    now = T0
    for i, (pattern, traffic) in enumerate(POSITIVE.items()):
        src = f"203.0.113.{i + 1}"
        end = traffic(t, src, now)
        spans[src] = (pattern, now, end)
        now = end + 5
    ordinary = "203.0.113.99"
    run(t, ordinary, ["www.example.org:443", "cdn.example.org:443", "www.example.org:80"] * 5,
        now, sent=900, received=30_000)
    end = now + 20
    findings = t.findings(end)
    assert {(f.source, f.pattern) for f in findings} == {(s, p) for s, (p, _, _) in spans.items()}
    assert [f.first_seen for f in findings] == sorted(f.first_seen for f in findings)
    for f in findings:
        _, start, stop = spans[f.source]
        assert isinstance(f, Finding) and f.evidence["window"] == WINDOWS[f.pattern]
        assert start <= f.first_seen <= f.last_seen <= stop
    for src in [*spans, ordinary]:
        s = t.stats(src, end)
        assert s is not None and s.flagged == (src in spans)
    assert t.flagged_sources == len(spans)


@pytest.mark.parametrize("pattern", list(POSITIVE))
def test_on_finding_is_called_once_per_raise(make_tracker: Make, pattern: str) -> None:
    found: list[Finding] = []
    t = make_tracker(on_finding=found.append)
    end = POSITIVE[pattern](t, SRC, T0, extra=20)       # evidence keeps growing past the raise
    assert [(f.source, f.pattern) for f in found] == [(SRC, pattern)]
    assert found[0].first_seen == t.findings(end)[0].first_seen
    assert found[0].evidence["window"] == WINDOWS[pattern]
    start = end + 3 * WINDOWS[pattern]                  # cleared, then raised again
    POSITIVE[pattern](t, SRC, start)
    assert [f.pattern for f in found] == [pattern, pattern]
    assert found[1].first_seen >= start


def test_raising_on_finding_is_logged_and_counted(make_tracker: Make,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    def boom(finding: Finding) -> None:
        raise RuntimeError("callback failed")

    t = make_tracker(on_finding=boom)
    with caplog.at_level(logging.ERROR, logger="connguard"):
        end = spam_traffic(t, SRC, T0, extra=5)        # connect() asserts every accept returned
    assert t.finding_errors == 1
    assert any("on_finding" in r.getMessage() for r in caplog.records)
    assert live(t, SRC, end) == {"spam_relay"}


# --- configuration --------------------------------------------------------------------

@pytest.mark.parametrize(("build", "error", "field"), [
    (lambda: SpamRelay(hosts=0), ValueError, "SpamRelay.hosts"),
    (lambda: SpamRelay(max_empty_share=-0.1), ValueError, "SpamRelay.max_empty_share"),
    (lambda: PortScan(empty_share=1.5), ValueError, "PortScan.empty_share"),
    (lambda: PortScan(ports=1_000), ValueError, "PortScan.ports"),
    (lambda: CredentialStuffing(login_hosts="x"), TypeError,  # type: ignore[arg-type]
     "CredentialStuffing.login_hosts"),
    (lambda: CredentialStuffing(login_hosts=("a.com:443",)), ValueError,
     "CredentialStuffing.login_hosts"),
    (lambda: CredentialStuffing(connections=1.5), TypeError,  # type: ignore[arg-type]
     "CredentialStuffing.connections"),
    (lambda: DnsTunnel(window=0), ValueError, "DnsTunnel.window"),
    (lambda: DnsTunnel(bytes=0), ValueError, "DnsTunnel.bytes"),
])
def test_config_rejects_bad_fields_naming_them(build: Callable[[], object], error: type[Exception],
                                               field: str) -> None:
    with pytest.raises(error, match=field.replace(".", r"\.")):
        build()


def test_login_hosts_are_normalised() -> None:
    cfg = CredentialStuffing(login_hosts=("Login.Example.com", "login.example.com", "sso.example"))
    assert cfg.login_hosts == ("login.example.com", "sso.example")


def test_tracker_rejects_a_wrong_config_type(make_tracker: Make) -> None:
    with pytest.raises(TypeError, match="spam_relay"):
        make_tracker(spam_relay="x")
    with pytest.raises(TypeError, match="dns_tunnel"):
        make_tracker(dns_tunnel=SpamRelay())


def test_none_turns_a_pattern_off(make_tracker: Make) -> None:
    t = make_tracker(spam_relay=None)
    assert t.pattern_config["spam_relay"] is None
    assert t.pattern_config["port_scan"] == PortScan()
    end = spam_traffic(t, SRC, T0, extra=20)
    assert live(t, SRC, end) == frozenset() and t.findings(end) == []


def test_port_classes_without_smtp_leave_spam_relay_off(make_tracker: Make) -> None:
    t = make_tracker(port_classes={"mail": (25, 587), "https": (443,)})
    assert t.pattern_config["spam_relay"] is None
    assert t.pattern_config["credential_stuffing"] == CredentialStuffing()
    end = spam_traffic(t, SRC, T0, extra=20)
    assert live(t, SRC, end) == frozenset() and t.findings(end) == []


# --- Guard ------------------------------------------------------------------------------

def test_guard_with_finding_kinds_bans_a_relay(make_guard: MakeGuard) -> None:
    g = make_guard(limiter=False, enforce=True, finding_kinds=FINDING_KINDS)
    end = spam_traffic(g, SRC, T0)
    assert [f.pattern for f in g.findings(end)] == ["spam_relay"]
    assert g.is_banned(SRC, end)
    assert [i["kind"] for i in g.bans.snapshot()["infractions"]] == ["spam_relay"]
    verdict = g.accept(SRC, "mx1.example.net:25", now=end + 1)
    assert not verdict and verdict.reason == "banned"


def test_guard_without_finding_kinds_reports_but_bans_nothing(make_guard: MakeGuard) -> None:
    g = make_guard(limiter=False, enforce=True)
    assert dict(g.finding_kinds) == {}
    end = spam_traffic(g, SRC, T0)
    assert [f.pattern for f in g.findings(end)] == ["spam_relay"]
    assert not g.is_banned(SRC, end)
    verdict = g.accept(SRC, "mx1.example.net:25", now=end + 1)
    assert verdict and verdict.reason is None


@pytest.mark.parametrize("kinds", [{"spam_relays": "spam_relay"}, {"spam_relay": "spamming"}])
def test_guard_rejects_unknown_finding_kinds(make_guard: MakeGuard, kinds: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="finding_kinds"):
        make_guard(limiter=False, enforce=True, finding_kinds=kinds)
