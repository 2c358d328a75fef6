"""BanManager: tatanka's ban_manager_test.go cases and its fixed defects, on both cores."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from connguard import Ban, Infraction

Make = Callable[..., Any]
HOUR = 3600.0


def report(b: Any, source: str, kind: str = "malformed_message", n: int = 1) -> None:
    for _ in range(n):
        b.report(source, kind)


def remote(source: str, kind: str = "malformed_message", *, created: float, node: str = "peer",
           ident: str | None = None, penalty: int = 1, expires: float | None = None) -> dict[str, Any]:
    return {"id": ident or f"{node}:{source}:{kind}:{created}", "source": source, "kind": kind,
            "penalty": penalty, "created": created, "expires": expires or created + HOUR,
            "node": node}


# --- tatanka's cases -------------------------------------------------------------

@pytest.mark.parametrize(("source", "count", "banned"), [
    ("192.168.1.1", 3, False), ("10.0.0.1", 10, True),
    ("2001:db8::1", 2, False), ("fe80::1", 10, True),
])
def test_record_infraction(make_bans: Make, source: str, count: int, banned: bool) -> None:
    bans: list[Ban] = []
    b = make_bans(on_ban=bans.append)
    report(b, source, n=count)
    assert bool(bans) == banned
    assert b.is_banned(source) == banned


def test_multiple_ips(make_bans: Make) -> None:
    bans: list[Ban] = []
    b = make_bans(on_ban=bans.append)
    sources = ["192.168.1.1", "192.168.1.2", "2001:db8::1", "2001:db9::2"]
    for source in sources:
        report(b, source, n=9)
    report(b, sources[0])
    assert [ban.source for ban in bans] == ["192.168.1.1"]
    assert [b.is_banned(s) for s in sources] == [True, False, False, False]


def test_ban_callback_once_at_threshold(make_bans: Make, clock: Any) -> None:
    bans: list[Ban] = []
    b = make_bans(on_ban=bans.append)
    report(b, "192.168.1.100", n=9)
    assert bans == []                                  # none below the threshold
    report(b, "192.168.1.100", n=5)                    # past it: still one
    assert len(bans) == 1
    assert bans[0].source == "192.168.1.100"
    assert bans[0].score == 10
    assert bans[0].until == pytest.approx(clock.now + HOUR)


def test_ban_callback_error_is_logged_not_raised(make_bans: Make, caplog: Any) -> None:
    def fail(ban: Ban) -> None:
        raise RuntimeError("publish failed")

    b = make_bans(on_ban=fail)
    report(b, "192.168.1.100", n=10)                   # does not raise
    assert b.is_banned("192.168.1.100")
    assert "a ban callback raised" in caplog.text


def test_multiple_infraction_kinds_combine(make_bans: Make) -> None:
    bans: list[Ban] = []
    b = make_bans(on_ban=bans.append)
    report(b, "2001:db8::100", "malformed_message", 5)
    report(b, "2001:db8::100", "invalid_bond", 5)
    assert b.is_banned("2001:db8::100")
    assert [ban.score for ban in bans] == [10]


def test_is_client_banned(make_bans: Make) -> None:
    b = make_bans()
    report(b, "192.168.1.100", n=9)
    assert not b.is_banned("192.168.1.100")
    report(b, "192.168.1.100")
    assert b.is_banned("192.168.1.100")


def test_purge_expired_infractions(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    report(b, "192.168.1.50", n=5)
    assert b.score("192.168.1.50") == 5
    clock.advance(HOUR + 1)
    assert b.score("192.168.1.50") == 0
    assert b.purge() == 1
    assert b.snapshot()["infractions"] == []


def test_remote_infractions_ban(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    for i in range(10):
        assert b.apply(remote("192.168.1.100", created=clock.now, ident=f"r{i}"))
    assert b.is_banned("192.168.1.100")


def test_remote_ban_expiry(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    for i in range(10):
        b.apply(remote("192.168.1.100", created=clock.now, ident=f"r{i}"))
    assert b.is_banned("192.168.1.100")
    clock.advance(2 * HOUR)
    assert not b.is_banned("192.168.1.100")


def test_active_bans_local_remote_and_both(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    report(b, "192.168.1.100", n=10)
    for i in range(10):
        b.apply(remote("192.168.1.101", created=clock.now, ident=f"r{i}"))
    assert [(x.source, x.score) for x in b.banned()] == [("192.168.1.100", 10), ("192.168.1.101", 10)]


def test_purge_expired_remote_bans(make_bans: Make, clock: Any) -> None:
    b = make_bans(penalties={"slow": (10, 2 * HOUR)})
    b.apply(remote("192.168.1.100", "impersonation", created=clock.now - 23.5 * HOUR, ident="a"))
    b.apply(remote("192.168.1.101", "slow", created=clock.now, ident="b"))
    assert b.is_banned("192.168.1.100") and b.is_banned("192.168.1.101")
    clock.advance(45 * 60)
    b.purge()
    assert not b.is_banned("192.168.1.100")
    assert b.is_banned("192.168.1.101")


def test_local_and_remote_infractions_add_up(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    report(b, "192.168.1.100", n=5)
    for i in range(5):
        b.apply(remote("192.168.1.100", created=clock.now, ident=f"r{i}"))
    assert b.is_banned("192.168.1.100")
    assert b.score("192.168.1.100") == 10


@pytest.mark.parametrize(("count", "banned"), [(10, True), (9, False)])
def test_disconnect_callback(make_bans: Make, count: int, banned: bool) -> None:
    bans: list[Ban] = []
    b = make_bans(on_ban=bans.append)
    report(b, "192.168.1.3", n=count)
    assert [ban.source for ban in bans] == (["192.168.1.3"] if banned else [])


# --- tatanka's defects, fixed ------------------------------------------------------

def test_same_millisecond_reports_get_distinct_ids(make_bans: Make) -> None:
    b = make_bans()                                    # the fake clock does not move at all
    ids = {b.report("192.168.1.1", "malformed_message").id for _ in range(1_000)}
    assert len(ids) == 1_000
    other = make_bans()                                # same node name, another process
    assert not ids & {other.report("192.168.1.1", "malformed_message").id for _ in range(100)}


def test_peers_agree_after_exchanging_same_millisecond_reports(make_bans: Make) -> None:
    a, b = make_bans(node_id="a"), make_bans(node_id="b")
    for _ in range(5):
        b.apply(a.report("192.168.1.1", "malformed_message"))
        a.apply(b.report("192.168.1.1", "malformed_message"))
    assert a.score("192.168.1.1") == b.score("192.168.1.1") == 10
    assert a.is_banned("192.168.1.1") and b.is_banned("192.168.1.1")


def test_remote_penalty_and_lifetime_come_from_local_policy(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    sent = remote("192.168.1.1", created=clock.now, penalty=1000, expires=clock.now + 10**9)
    assert b.apply(sent)
    assert b.score("192.168.1.1") == 1                 # not 1000
    assert not b.is_banned("192.168.1.1")
    clock.advance(HOUR + 1)
    assert b.score("192.168.1.1") == 0                 # gone after the local 1h


def test_remote_creation_in_the_future_counts_as_now(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    b.apply(remote("192.168.1.1", created=clock.now + 10 * HOUR))
    (stored,) = b.snapshot()["infractions"]
    assert stored["created"] == clock.now and stored["expires"] == clock.now + HOUR


@pytest.mark.parametrize(("mutate", "error"), [
    ({"kind": "sql_injection"}, ValueError),
    ({"kind": 5}, ValueError),
    ({"source": "not-an-ip"}, ValueError),
    ({"id": ""}, ValueError),
    ({"created": float("nan")}, ValueError),
    ({"created": "yesterday"}, ValueError),
    ({"node": None}, ValueError),
])
def test_bad_remote_infractions_raise_and_change_nothing(make_bans: Make, clock: Any,
                                                        mutate: dict[str, Any], error: type) -> None:
    b = make_bans()
    with pytest.raises(error):
        b.apply({**remote("192.168.1.1", created=clock.now), **mutate})
    assert b.snapshot()["infractions"] == [] and b.score("192.168.1.1") == 0


def test_missing_field_is_named(make_bans: Make, clock: Any) -> None:
    message = remote("192.168.1.1", created=clock.now)
    del message["kind"]
    with pytest.raises(ValueError, match="'kind'"):
        make_bans().apply(message)


def test_unknown_local_kind_raises(make_bans: Make) -> None:
    b = make_bans()
    with pytest.raises(ValueError, match="unknown infraction kind"):
        b.report("192.168.1.1", "bad_certificate")
    assert b.score("192.168.1.1") == 0
    custom = make_bans(penalties={"bad_certificate": (4, 600.0)})
    assert custom.report("192.168.1.1", "bad_certificate").penalty == 4


def test_duplicate_ids_are_applied_once(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    message = remote("192.168.1.1", created=clock.now)
    assert b.apply(message) is True
    assert b.apply(message) is False
    assert b.apply(Infraction(**message)) is False
    assert b.score("192.168.1.1") == 1


def test_callbacks_run_outside_the_lock(make_bans: Make) -> None:
    seen: list[Any] = []
    b: Any = None

    def on_ban(ban: Ban) -> None:
        # Calling back in would deadlock if the manager still held its lock,
        # and a slow publisher here must not block ban checks elsewhere.
        checker = threading.Thread(target=lambda: seen.append(b.score(ban.source)))
        checker.start()
        checker.join(timeout=5)
        seen.append(b.banned())

    b = make_bans(on_ban=on_ban)
    report(b, "192.168.1.1", n=10)
    assert seen[0] == 10 and seen[1][0].source == "192.168.1.1"


def test_bans_key_by_the_64(make_bans: Make) -> None:
    b = make_bans()
    for i in range(10):
        b.report(f"2001:db8:0:1::{i + 1:x}", "malformed_message")   # ten addresses, one /64
    assert b.is_banned("2001:db8:0:1:ffff::9")
    assert not b.is_banned("2001:db8:0:2::1")
    assert [x.source for x in b.banned()] == ["2001:db8:0:1::/64"]


# --- the rest of the contract ------------------------------------------------------

def test_allow_listed_sources_are_counted_not_banned(make_bans: Make) -> None:
    bans: list[Ban] = []
    b = make_bans(allow=["10.0.0.0/8", "2001:db8::/32"], on_ban=bans.append)
    report(b, "10.1.2.3", n=20)
    report(b, "2001:db8::7", "impersonation")
    assert not b.is_banned("10.1.2.3") and not b.is_banned("2001:db8::7") and bans == []
    assert b.allowed_reports == 21


def test_allow_list_also_covers_remote_netblocks(make_bans: Make, clock: Any) -> None:
    b = make_bans(allow=["2001:db8::/32"])
    assert not b.apply(remote("2001:db8:0:1::/64", "impersonation", created=clock.now))
    assert not b.is_banned("2001:db8:0:1::5") and b.allowed_reports == 1


def test_manual_ban_and_unban(make_bans: Make, clock: Any) -> None:
    events: list[Any] = []
    b = make_bans(on_ban=events.append, on_unban=events.append)
    b.ban("198.51.100.1", 60.0)
    assert b.is_banned("198.51.100.1")
    assert b.unban("198.51.100.1") is True
    assert not b.is_banned("198.51.100.1")
    assert b.unban("198.51.100.1") is False
    assert [type(e).__name__ for e in events] == ["Ban", "str"]
    report(b, "198.51.100.2", n=10)
    b.unban("198.51.100.2")                            # forgives the infractions too
    assert b.score("198.51.100.2") == 0 and not b.is_banned("198.51.100.2")


def test_on_unban_after_expiry_is_reported_by_purge(make_bans: Make, clock: Any) -> None:
    events: list[Any] = []
    b = make_bans(on_ban=events.append, on_unban=events.append)
    report(b, "198.51.100.1", n=10)
    clock.advance(HOUR + 1)
    b.purge()
    assert events == [events[0], "198.51.100.1"]


def test_snapshot_is_json_and_restore_is_idempotent(make_bans: Make, clock: Any) -> None:
    a = make_bans(node_id="a")
    report(a, "192.168.1.1", n=10)
    a.report("2001:db8::1", "impersonation")
    snapshot = json.loads(json.dumps(a.snapshot()))
    assert snapshot["version"] == 1 and len(snapshot["infractions"]) == 11
    assert set(snapshot["infractions"][0]) == {"id", "source", "kind", "penalty", "created",
                                              "expires", "node"}
    b = make_bans(node_id="b")
    assert b.restore(snapshot) == 11
    assert b.restore(snapshot) == 0
    assert b.is_banned("192.168.1.1") and b.is_banned("2001:db8::1")
    assert [x.source for x in b.banned()] == [x.source for x in a.banned()]
    with pytest.raises(ValueError, match="version"):
        b.restore({"version": 2, "infractions": []})


def test_min_ban_is_not_shortened_by_decay(make_bans: Make, clock: Any) -> None:
    b = make_bans(min_ban=4 * HOUR)
    report(b, "192.168.1.1", n=10)
    clock.advance(HOUR + 1)                            # the infractions have decayed
    assert b.score("192.168.1.1") == 0 and b.is_banned("192.168.1.1")
    clock.advance(3 * HOUR)
    assert not b.is_banned("192.168.1.1")


def test_repeat_bans_escalate_up_to_a_cap(make_bans: Make, clock: Any) -> None:
    b = make_bans(escalation=(2.0, 3 * HOUR))
    lengths = []
    for _ in range(4):
        start = clock.now
        report(b, "192.168.1.1", n=10)
        (ban,) = b.banned()
        lengths.append(ban.until - start)
        clock.now = ban.until + 1
        b.purge()
    assert lengths == [HOUR, 2 * HOUR, 3 * HOUR, 3 * HOUR]


def test_jitter_lengthens_within_its_fraction(make_bans: Make, clock: Any) -> None:
    b = make_bans(jitter=0.5)
    report(b, "192.168.1.1", n=10)
    (ban,) = b.banned()
    assert HOUR <= ban.until - clock.now <= 1.5 * HOUR


def test_records_and_infractions_are_bounded(make_bans: Make, clock: Any) -> None:
    b = make_bans(capacity=100, max_infractions=8, penalties={"tiny": (0, HOUR)})
    for i in range(1_000):
        b.report(f"10.0.{i >> 8}.{i & 255}", "tiny")
    report(b, "192.168.1.1", "tiny", 50)
    assert len(b.snapshot()["infractions"]) <= 100 * 8
    assert sum(1 for i in b.snapshot()["infractions"] if i["source"] == "192.168.1.1") == 8


def test_wall_clock_times_with_the_default_clock(core: Any) -> None:
    import time

    from connguard._core import on_core
    from connguard.bans import BanManager

    b = on_core(BanManager, core)()
    before = time.time()
    infraction = b.report("192.168.1.1", "malformed_message")
    assert before - 1 <= infraction.created <= time.time() + 1
    assert infraction.expires == pytest.approx(infraction.created + HOUR)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"ban_score": 0}, ValueError, "ban_score"),
    ({"penalties": {"x": 5}}, TypeError, "penalties"),
    ({"penalties": {"x": (1, -5)}}, ValueError, "lifetime"),
    ({"allow": ["10.0.0.0/33"]}, ValueError, "allow"),
    ({"escalation": (0.5, 60.0)}, ValueError, "escalation"),
    ({"node_id": ""}, ValueError, "node_id"),
    ({"on_ban": "print"}, TypeError, "on_ban"),
])
def test_bad_configuration_is_named(make_bans: Make, kwargs: dict[str, Any], error: type,
                                    match: str) -> None:
    with pytest.raises(error, match=match):
        make_bans(**kwargs)


@pytest.mark.parametrize("source", ["", "999.1.1.1", None, b"1.2.3.4"], ids=repr)
def test_bad_sources_raise(make_bans: Make, source: Any) -> None:
    b = make_bans()
    with pytest.raises((ValueError, TypeError)):
        b.report(source, "malformed_message")
    with pytest.raises((ValueError, TypeError)):
        b.is_banned(source)
