"""What is listed is what is enforced: bans under pressure, from peers, and across clocks."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from types import ModuleType
from typing import Any

import pytest

import connguard as cg
from connguard import _core_py
from connguard._core import on_core

Make = Callable[..., Any]
HOUR = 3600.0


def listed(b: Any) -> set[str]:
    return {ban.source for ban in b.banned()}


def enforced(b: Any, sources: list[str]) -> set[str]:
    return {s for s in sources if b.is_banned(s)}


# --- 1, 2: one eviction policy, listing == enforcement ------------------------------

def test_a_full_manager_enforces_every_ban_it_lists(make_bans: Make, make_guard: Make) -> None:
    sources = [f"10.{i >> 8}.{i & 255}.1" for i in range(1000)]
    b = make_bans(capacity=1000)
    for s in sources:
        b.ban(s, HOUR)
    assert listed(b) == set(sources) == enforced(b, sources)
    g = make_guard(bans={"capacity": 1000}, limiter=False, enforce=True)
    for s in sources:
        g.bans.ban(s, HOUR)
    assert all(g.accept(s).reason == "banned" for s in sources)
    assert g.tracker.active_connections == 0


def test_past_capacity_the_soonest_ending_ban_goes_and_listing_stays_enforcement(
        make_bans: Make, clock: Any, caplog: Any) -> None:
    unbans: list[str] = []
    b = make_bans(capacity=50, shards=4, on_unban=unbans.append)
    sources = [f"192.0.2.{i}" for i in range(120)]
    for i, s in enumerate(sources):
        with caplog.at_level(logging.WARNING, logger="connguard"):
            b.ban(s, HOUR + i)                          # later sources end later
        assert listed(b) == enforced(b, sources)
        assert len(listed(b)) == min(i + 1, 50)
    assert listed(b) == set(sources[-50:])              # the soonest-ending went first
    assert b.evicted_bans == 70 and unbans == sources[:70]
    assert "all banned): lifted the ban ending soonest, 192.0.2.0" in caplog.text
    for s in sources[-50:]:
        assert b.unban(s) and not b.is_banned(s)
    assert listed(b) == set() == enforced(b, sources)
    b.check_consistency()


def test_records_without_a_live_ban_make_room_first(make_bans: Make, clock: Any) -> None:
    b = make_bans(capacity=3, shards=1)
    b.ban("198.51.100.1", 60.0)
    b.report("198.51.100.2", "malformed_message")       # unbanned, least recent
    b.ban("198.51.100.3", 10.0)
    b.report("198.51.100.4", "malformed_message")       # evicts .2, never a live ban
    assert listed(b) == {"198.51.100.1", "198.51.100.3"} and b.evicted_bans == 0
    clock.advance(11.0)                                 # .3's ban ends unnoticed
    b.report("198.51.100.5", "malformed_message")       # the ended ban goes before .4
    assert b.score("198.51.100.4") == 1 and b.evicted_bans == 0
    assert listed(b) == {"198.51.100.1"} == enforced(b, [f"198.51.100.{i}" for i in range(1, 6)])


def test_unban_lifts_any_enforced_ban(make_bans: Make) -> None:
    b = make_bans(capacity=5, shards=2)
    sources = [f"203.0.113.{i}" for i in range(40)]
    for i, s in enumerate(sources):
        if i % 2:
            b.report(s, "impersonation")
        else:
            b.ban(s, 100.0 + i)
        for banned in enforced(b, sources):
            assert banned in listed(b)
    for s in enforced(b, sources):
        assert b.unban(s)
    assert enforced(b, sources) == set()


# --- 3: escalation cannot overflow ---------------------------------------------------

def test_escalation_after_thousands_of_bans_stays_at_the_cap(make_bans: Make, clock: Any) -> None:
    b = make_bans(escalation=(2.0, 600.0))
    lengths = []
    for _ in range(1100):
        b.ban("192.0.2.7", 10.0)
        (ban,) = b.banned()
        lengths.append(ban.until - clock.now)
        b.unban("192.0.2.7")
    assert lengths[:7] == [10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 600.0]
    assert set(lengths[6:]) == {600.0}
    for _ in range(10):
        b.report("192.0.2.7", "malformed_message")      # no OverflowError
    assert b.is_banned("192.0.2.7")


def test_escalation_through_the_guard_over_simulated_years(make_guard: Make, clock: Any) -> None:
    g = make_guard(limiter={"rate": 1.0, "burst": 1.0, "warn_after": 0, "abuse_after": 2},
                   bans={"escalation": (2.0, HOUR), "ban_score": 5})
    for _ in range(1100):                               # a ban a day: 2**1100 would overflow
        for _ in range(3):                              # allowed, violation, abuse (5 points)
            g.accept("198.51.100.9")
            g.close("198.51.100.9")
        (ban,) = g.bans.banned()
        assert ban.until - clock.now == 6 * HOUR      # the abuse lifetime; the cap only caps growth
        clock.advance(86400.0)
    assert g.tracker.stats("198.51.100.9").total == 3300


# --- 4: restore is idempotent, forgiven stays forgiven -------------------------------

def snapshot_of(n: int, source: str, now: float, node: str = "peer") -> dict[str, Any]:
    return {"version": 1, "infractions": [
        {"id": f"{node}:{i}:x", "source": source, "kind": "malformed_message", "penalty": 1,
         "created": now - i, "expires": now + HOUR, "node": node} for i in range(n)]}


def test_restore_is_idempotent_when_a_bound_dropped_infractions(make_bans: Make, clock: Any) -> None:
    seen: list[Any] = []
    b = make_bans(max_infractions=4, on_infraction=seen.append)
    snapshot = snapshot_of(10, "192.0.2.1", clock.now)
    assert [b.restore(snapshot) for _ in range(3)] == [10, 0, 0]
    assert len(seen) == 10 and b.infraction_counts()["malformed_message"] == 10
    assert b.score("192.0.2.1") == 4


def test_restore_after_capacity_eviction_counts_nothing_again(make_bans: Make, clock: Any) -> None:
    b = make_bans(capacity=2, shards=1)
    snapshot = {"version": 1, "infractions": [
        *snapshot_of(1, "192.0.2.1", clock.now, "a")["infractions"],
        *snapshot_of(1, "192.0.2.2", clock.now, "b")["infractions"],
        *snapshot_of(1, "192.0.2.3", clock.now, "c")["infractions"]]}
    assert b.restore(snapshot) == 3
    assert b.restore(snapshot) == 0


def test_an_unban_is_not_undone_by_a_peer_resending_the_infractions(make_bans: Make,
                                                                   clock: Any) -> None:
    a, b = make_bans(node_id="a"), make_bans(node_id="b")
    for _ in range(10):
        a.report("203.0.113.5", "malformed_message")
    assert b.restore(a.snapshot()) == 10 and b.is_banned("203.0.113.5")
    assert b.unban("203.0.113.5")
    assert b.restore(a.snapshot()) == 0
    assert not any(b.apply(i) for i in a.snapshot()["infractions"])
    assert not b.is_banned("203.0.113.5") and b.score("203.0.113.5") == 0


def test_remembered_ids_expire(make_bans: Make, clock: Any) -> None:
    b = make_bans(max_infractions=1)
    first = {"id": "p:1", "source": "192.0.2.9", "kind": "malformed_message", "created": clock.now,
             "node": "p"}
    b.apply(first)
    b.apply({**first, "id": "p:2", "created": clock.now + 1})   # drops p:1 (expires first)
    assert not b.apply(first)
    clock.advance(2 * HOUR)
    assert not b.apply(first)                          # expired: nothing to count anyway


def test_an_id_sent_twice_counts_once(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    snapshot = snapshot_of(3, "192.0.2.1", clock.now)
    snapshot["infractions"] += snapshot["infractions"]
    assert b.restore(snapshot) == 3 and b.score("192.0.2.1") == 3
    entry = snapshot["infractions"][0]
    assert not b.apply(entry) and not b.apply({**entry, "source": "192.0.2.1:80"})
    assert b.score("192.0.2.1") == 3


def test_a_malformed_snapshot_applies_nothing(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    snapshot = snapshot_of(5, "192.0.2.1", clock.now)
    snapshot["infractions"][3]["node"] = 7
    with pytest.raises(ValueError, match="snapshot infraction 3: infraction node must be a str"):
        b.restore(snapshot)
    assert b.score("192.0.2.1") == 0


# --- 6: bounded fields from peers ----------------------------------------------------

@pytest.mark.parametrize(("field", "value", "message"), [
    ("node", "n" * 1_000_000, "node must be 1 to 128 characters"),
    ("id", "i" * 201, "id must be 1 to 200 characters"),
    ("source", "1" * 129, "source must be 1 to 128 characters"),
    ("kind", "k" * 65, "kind must be 1 to 64 characters"),
])
def test_fields_from_peers_are_bounded(make_bans: Make, clock: Any, field: str, value: str,
                                       message: str) -> None:
    b = make_bans()
    entry = {"id": "p:1", "source": "192.0.2.1", "kind": "malformed_message",
             "created": clock.now, "node": "p", field: value}
    with pytest.raises(ValueError, match=message):
        b.apply(entry)
    assert b.snapshot()["infractions"] == []


def test_node_id_is_checked_and_long_ones_still_restore(make_bans: Make) -> None:
    for bad in ("n" * 187, "é" * 65, "\ud800", ""):      # bytes count: a fleet entry's bound
        with pytest.raises(ValueError, match="node_id must be a str of 1 to 128 bytes in UTF-8"):
            make_bans(node_id=bad)
    assert make_bans(node_id="é" * 64).node_id == "é" * 64
    a, b = make_bans(node_id="n" * 128), make_bans(node_id="other")
    a.report("192.0.2.1", "impersonation")
    assert b.restore(a.snapshot()) == 1 and b.is_banned("192.0.2.1")


# --- 7: one meaning of a ban, whatever the clocks ------------------------------------

def test_bans_mean_the_same_through_every_entry_point_whatever_the_clocks(core: ModuleType) -> None:
    Tracker, BanManager = on_core(cg.Tracker, core), on_core(cg.BanManager, core)
    Guard = on_core(cg.Guard, core)
    wall = Guard(tracker=Tracker(clock=time.time), bans=BanManager(), limiter=False, enforce=True)
    wall.bans.ban("192.0.2.1", 600.0)
    assert wall.is_banned("192.0.2.1") and wall.accept("192.0.2.1").reason == "banned"

    fake = [1000.0]
    reverse = Guard(tracker=Tracker(), bans=BanManager(clock=lambda: fake[0]), limiter=False,
                    enforce=True)
    reverse.bans.ban("192.0.2.2", 600.0)
    assert reverse.accept("192.0.2.2").reason == "banned"
    fake[0] += 601.0
    assert not reverse.is_banned("192.0.2.2") and reverse.accept("192.0.2.2")


# --- 8: untracked opens never close tracked connections ------------------------------

def test_an_untracked_connection_closes_itself_not_a_tracked_one(make_tracker: Make) -> None:
    t = make_tracker(capacity=1, shards=1)
    t.accept("192.0.2.1", now=1.0)                      # fills the table with a busy source
    assert t.accept("192.0.2.2", now=2.0) and t.accept("192.0.2.2", now=2.0)   # untracked
    t.close("192.0.2.1", now=3.0)
    t.accept("192.0.2.2", now=4.0)                      # tracked now: 3 really open
    assert t.untracked() == (2, 0)
    for still_open in (2, 1):
        assert t.close("192.0.2.2", now=5.0)
        assert t.stats("192.0.2.2").active == 1, still_open
    assert t.close("192.0.2.2", now=6.0)
    assert t.stats("192.0.2.2").active == 0 and t.untracked() == (0, 0)
    assert not t.close("192.0.2.2", now=7.0)
    t.check_consistency()


def test_a_denied_accept_announced_as_an_event_does_not_close_another(make_tracker: Make) -> None:
    t = make_tracker(capacity=1, shards=1, overflow="deny")
    t.accept("192.0.2.1", now=1.0)
    t.accept("192.0.2.2", now=1.0)                      # refused
    cg.set_listener(t)
    try:
        with cg.connection("192.0.2.2"):               # refused, then closed by the handle
            pass
        t.close("192.0.2.1", now=2.0)
        t.accept("192.0.2.2", now=3.0)
        with cg.connection("192.0.2.1"):               # refused again
            pass
    finally:
        cg.set_listener(None)
    assert t.stats("192.0.2.2").active == 1
    assert t.untracked() == (0, 0)


def test_untracked_slots_are_bounded_and_the_rest_counted(make_tracker: Make) -> None:
    t = make_tracker(capacity=1, shards=1)
    t.accept("10.0.0.1", now=1.0)
    for i in range(80):
        t.accept(f"10.1.0.{i}", now=1.0)
    assert t.untracked() == (64, 16)
    t.check_consistency()


def test_a_saturated_source_counts_further_opens_untracked() -> None:
    # 2**32 real opens would take minutes: the pure twin's entry is set there directly.
    t = on_core(cg.Tracker, _core_py)(capacity=4, shards=1, seed=1, clock=lambda: 0.0)
    t.accept("192.0.2.1")
    entry = t._tables[0].find(*t.source_key("192.0.2.1")[1:])
    entry.active = 2**32 - 1
    t._tables[0].active_connections = 2**32 - 1
    t.accept("192.0.2.1")
    assert t.stats("192.0.2.1").active == 2**32 - 1            # type: ignore[union-attr]
    assert t.untracked() == (1, 0) and t.overflows == 1
    t.check_consistency()


# --- 9: capacity the core can hold --------------------------------------------------

@pytest.mark.parametrize("cls", ["Tracker", "BanManager", "RateLimiter"])
def test_capacity_beyond_what_a_shard_indexes_is_refused(core: ModuleType, cls: str) -> None:
    make = on_core(getattr(cg, cls), core)
    with pytest.raises(ValueError, match="capacity must be between 1 and 4294967295"):
        make(capacity=2**32, shards=1)
    assert make(capacity=2**32 - 1, shards=1).capacity == 2**32 - 1     # not truncated to 0


def test_top_with_a_huge_capacity_allocates_only_what_it_returns(make_tracker: Make) -> None:
    t = make_tracker(capacity=2**32 - 1, shards=1)
    for i in range(5):
        for _ in range(i + 1):
            t.accept(f"192.0.2.{i}", now=1.0)
    assert [s.source for s in t.top(3, now=1.0)] == ["192.0.2.4", "192.0.2.3", "192.0.2.2"]
    assert len(t.top(2**40, now=1.0)) == 5


# --- 10: time ---------------------------------------------------------------------------

def test_one_far_future_timestamp_does_not_freeze_a_source(make_tracker: Make) -> None:
    t = make_tracker(window=10.0, rate_threshold=5.0)
    t.accept("192.0.2.1", now=1e9)                      # a bad timestamp
    for i in range(100):
        t.accept("192.0.2.1", now=100.0 + 10 * i)       # 0.1/s, for real
        t.close("192.0.2.1", now=100.0 + 10 * i)
    s = t.stats("192.0.2.1", now=1100.0)
    assert s is not None and s.rate < 0.3 and "conn_rate" not in s.patterns


def test_out_of_order_events_within_a_window_count_at_last_seen(make_tracker: Make) -> None:
    t = make_tracker(window=10.0)
    t.accept("192.0.2.1", now=100.0)
    t.accept("192.0.2.1", now=95.0)                     # late, not a clock reset
    s = t.stats("192.0.2.1", now=100.0)
    assert s is not None and s.last_seen == 100.0 and s.total == 2 and s.rate == pytest.approx(0.2)


def test_a_clock_stepped_back_does_not_starve_the_limiter(make_limiter: Make) -> None:
    limiter = make_limiter(4.0, 8.0)
    for i in range(100):
        assert limiter.allow("peer", now=10_000.0 + i)
    allowed = sum(limiter.allow("peer", now=6400.0 + i / 2) for i in range(1000))
    assert allowed >= 990                               # 2/s against 4/s: all but noise


@pytest.mark.parametrize("now", [1e16, -1e16, float("inf"), float("nan"), 10**400])
def test_times_out_of_range_are_refused_on_every_entry_point(make_tracker: Make, make_limiter: Make,
                                                            make_bans: Make, now: float) -> None:
    t, limiter, bans = make_tracker(window=0.5), make_limiter(), make_bans()
    calls: list[Callable[[], object]] = [
        lambda: t.accept("192.0.2.1", now=now), lambda: t.close("192.0.2.1", now=now),
        lambda: t.stats("192.0.2.1", now=now), lambda: t.top(now=now),
        lambda: limiter.allow("k", now=now), lambda: bans.is_banned("192.0.2.1", now=now)]
    for call in calls:
        with pytest.raises(ValueError, match="now must be a finite number of seconds within"):
            call()
    assert t.tracked_sources == 0


# --- 11: smaller ---------------------------------------------------------------------------

def test_is_banned_takes_the_netblock_text_the_library_prints(make_bans: Make) -> None:
    b = make_bans()
    b.ban("2001:db8::7", 60.0)
    (ban,) = b.banned()
    assert ban.source == "2001:db8::/64"
    assert b.is_banned(ban.source) and b.is_banned("2001:db8::1/64") and b.is_banned("2001:db8::")
    for bad in ("2001:db8::/", "2001:db8::/1234", "2001:db8::/6a", "/64"):
        with pytest.raises(ValueError, match="invalid source address"):
            b.is_banned(bad)


def test_a_raising_pseudonymizer_cannot_fail_a_counted_accept(make_guard: Make) -> None:
    def broken(netblock: str) -> str:
        raise RuntimeError(f"cannot pseudonymise {netblock}")

    g = make_guard(tracker={"concurrent_threshold": 1}, limiter=False,
                   bans={"pseudonymizer": broken}, pseudonymizer=broken)
    assert g.accept("192.0.2.1")                          # flagged: the log line fails
    assert g.tracker.active_connections == 1


def test_a_callback_error_is_logged_without_the_address_when_pseudonymised(
        make_bans: Make, caplog: Any) -> None:
    def fail(ban: Any) -> None:
        raise RuntimeError(f"could not publish {ban.source}")

    b = make_bans(on_ban=fail, pseudonymizer=cg.Pseudonymizer(b"k" * 16))
    with caplog.at_level(logging.WARNING, logger="connguard"):
        b.ban("203.0.113.77", 60.0)
    assert "a ban callback raised RuntimeError" in caplog.text
    assert "203.0.113.77" not in caplog.text


# --- found in review -----------------------------------------------------------------

def test_every_on_ban_is_paired_with_an_on_unban_also_when_an_ended_ban_makes_room(
        make_bans: Make) -> None:
    seen: list[tuple[str, str]] = []
    b = make_bans(capacity=2, shards=1, on_ban=lambda ban: seen.append(("ban", ban.source)),
                  on_unban=lambda source: seen.append(("unban", source)))
    b.ban("192.0.2.1", 10.0, now=100.0)
    b.ban("192.0.2.2", 50.0, now=100.0)
    b.report("192.0.2.3", "malformed_message", now=200.0)    # 192.0.2.1's ended ban makes room
    assert ("unban", "192.0.2.1") in seen
    assert b.capacity == 2


def test_infraction_objects_from_elsewhere_are_checked_too(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    good = cg.Infraction("p:1", "192.0.2.1", "malformed_message", 1, clock.now, clock.now + HOUR, "p")
    for bad, message in ((good._replace(node="n" * 1_000_000), "node must be 1 to 128"),
                         (good._replace(created=float("nan")), "created must be a finite number")):
        with pytest.raises(ValueError, match=message):
            b.apply(bad)
    assert b.apply(good) and b.score("192.0.2.1") == 1


@pytest.mark.parametrize("now", [Fraction(1001), Decimal(1001), 1001])
def test_every_part_takes_the_real_numbers_the_cores_take(make_guard: Make, now: Any) -> None:
    """A Guard's tracker, limiter and bans read one time alike: the limiter's
    infractions are not lost to a type only the cores took."""
    g = make_guard(limiter={"rate": 1.0, "burst": 1.0, "warn_after": 0, "abuse_after": 2},
                   bans={"penalties": {"rate_limit_abuse": (10, HOUR)}})
    for _ in range(3):
        g.accept("198.51.100.4", now=now)
    counted = {kind: n for kind, n in g.bans.infraction_counts().items() if n}
    assert counted == {"rate_limit_violation": 1, "rate_limit_abuse": 1}
    assert g.is_banned("198.51.100.4", now=1001.0)
    assert g.tracker.stats("198.51.100.4", now=1001.0).first_seen == 1001.0


@pytest.mark.parametrize("now", [True, "1001", b"1001", memoryview(b"1001"), [1001]])
def test_times_of_other_types_are_refused_alike(make_tracker: Make, make_limiter: Make,
                                                make_bans: Make, now: Any) -> None:
    t, limiter, bans = make_tracker(), make_limiter(), make_bans()
    message = f"now must be a real number of seconds, not {type(now).__name__}"
    calls: list[Callable[[], object]] = [
        lambda: t.accept("192.0.2.1", now=now), lambda: t.stats("192.0.2.1", now=now),
        lambda: limiter.allow("k", now=now), lambda: bans.is_banned("192.0.2.1", now=now),
        lambda: bans.ban("192.0.2.1", 10.0, now=now)]
    for call in calls:
        with pytest.raises(TypeError, match=re.escape(message)):
            call()
    assert t.tracked_sources == 0 and bans.banned(now=1001.0) == []
    broken = make_tracker(clock=lambda: None)
    with pytest.raises(TypeError, match="the clock must return a real number of seconds, "
                                        "not NoneType"):
        broken.accept("192.0.2.1")


def test_a_peers_older_unban_leaves_a_later_manual_ban(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    b.ban("198.51.100.20", 600.0)                        # at 1000: until 1600
    clock.advance(10.0)
    assert b.unban("198.51.100.20", before=990.0)        # made before the ban: it stays
    assert b.is_banned("198.51.100.20") and b.banned()[0].until == 1600.0
    assert b.unban("198.51.100.20", before=1005.0)       # made after it: lifted
    assert not b.is_banned("198.51.100.20") and b.banned() == []
    b.ban("198.51.100.21", 600.0)
    assert b.unban("198.51.100.21") and not b.is_banned("198.51.100.21")   # a local unban: all
    # A peer's ban is dated when the peer made it, not when it arrived here.
    b.ban("198.51.100.22", 600.0, made=995.0)            # arrives at 1010
    assert b.unban("198.51.100.22", before=1000.0) and not b.is_banned("198.51.100.22")
    b.ban("198.51.100.23", 600.0, made=1005.0)
    assert b.unban("198.51.100.23", before=1000.0) and b.is_banned("198.51.100.23")
    b.ban("198.51.100.25", 600.0, made=1e12)             # from the future: made now (1010)
    assert b.unban("198.51.100.25", before=1011.0) and not b.is_banned("198.51.100.25")
    with pytest.raises(ValueError, match="made must be a finite number of seconds"):
        b.ban("198.51.100.24", 600.0, made=10**400)


def test_a_peers_unban_tells_manual_bans_apart_and_never_starts_one(make_bans: Make) -> None:
    b = make_bans()
    b.ban("198.51.100.30", 3600.0, now=1000.0)           # until 4600
    b.ban("198.51.100.30", 60.0, now=2000.0)             # until 2060
    assert b.unban("198.51.100.30", now=2001.0, before=1500.0)   # lifts the first only
    assert [ban.until for ban in b.banned(now=2001.0)] == [2060.0]
    b = make_bans(penalties={"malformed_message": (10, 100.0)})
    b.ban("198.51.100.31", 600.0, now=1000.0)            # until 1600
    b.report("198.51.100.31", "malformed_message", now=1010.0)   # 10 points: until 1110
    assert b.unban("198.51.100.31", now=1020.0, before=1005.0)
    assert [ban.until for ban in b.banned(now=1020.0)] == [1110.0]
    assert not b.unban("198.51.100.31", now=1200.0, before=990.0)   # ended: stays ended
    assert not b.is_banned("198.51.100.31", now=1200.0) and b.banned(now=1200.0) == []


def test_bans_below_time_zero_hold_list_and_lift(make_bans: Make) -> None:
    """Times below zero are times like any other: "not banned" is no time a clock reads."""
    seen: list[tuple[str, str]] = []
    b = make_bans(on_ban=lambda ban: seen.append(("ban", ban.source)),
                  on_unban=lambda source: seen.append(("unban", source)))
    b.ban("203.0.113.7", 10.0, now=-1000.0)
    assert [ban.source for ban in b.banned(now=-1000.0)] == ["203.0.113.7"]
    assert b.is_banned("203.0.113.7", now=-991.0) and not b.is_banned("203.0.113.7", now=-990.0)
    assert b.unban("203.0.113.7", now=-995.0)
    assert not b.is_banned("203.0.113.7", now=-995.0) and b.banned(now=-995.0) == []
    b.report("203.0.113.9", "impersonation", now=-100.0)          # 10 points: banned
    assert b.is_banned("203.0.113.9", now=-100.0)
    assert [ban.source for ban in b.banned(now=-100.0)] == ["203.0.113.9"]
    assert seen == [("ban", "203.0.113.7"), ("unban", "203.0.113.7"), ("ban", "203.0.113.9")]


def test_a_created_beyond_every_float_is_a_value_error(make_bans: Make) -> None:
    """JSON may carry any integer: one no float holds is refused like a NaN."""
    entry = {"id": "p:1:ab", "source": "192.0.2.1", "kind": "impersonation", "node": "p",
             "created": 10**400}
    b = make_bans()
    with pytest.raises(ValueError, match="created must be a finite number"):
        b.apply(entry)
    with pytest.raises(ValueError, match="snapshot infraction 0: infraction created must be"):
        b.restore({"version": 1, "infractions": [entry]})
    assert b.score("192.0.2.1") == 0


def test_ban_manager_times_are_bounded_like_the_cores(make_bans: Make) -> None:
    b = make_bans()
    with pytest.raises(ValueError, match="now must be a finite number of seconds within"):
        b.ban("192.0.2.1", 60.0, now=2e15)
    with pytest.raises(ValueError, match="duration must be at most 1e\\+15 seconds, got 1e\\+300"):
        b.ban("192.0.2.1", 1e300, now=100.0)
    assert b.banned(now=100.0) == []


def test_a_replayed_guard_dates_limiter_bans_at_the_replayed_time(make_guard: Make) -> None:
    g = make_guard(limiter={"rate": 1.0, "burst": 1.0, "warn_after": 0, "abuse_after": 2},
                   bans={"penalties": {"rate_limit_abuse": (10, HOUR)}})
    for _ in range(3):
        g.accept("198.51.100.4", now=1e9)
        g.close("198.51.100.4", now=1e9)
    assert g.bans.is_banned("198.51.100.4", now=1e9) and g.is_banned("198.51.100.4", now=1e9)
    (ban,) = g.bans.banned(now=1e9)
    assert ban.until > 1e9


def test_a_window_too_small_for_the_time_range_is_refused(make_tracker: Make) -> None:
    with pytest.raises(ValueError, match="window must be finite and >= 0.001"):
        make_tracker(window=1e-300)


def test_only_the_limiter_may_be_false(core: ModuleType) -> None:
    Guard = on_core(cg.Guard, core)
    for name in ("tracker", "bans"):
        with pytest.raises(TypeError, match=f"{name} must be a connguard"):
            Guard(**{name: False})  # type: ignore[arg-type]
