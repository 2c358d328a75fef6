"""RedisFleet against a real redis-server on loopback, on both cores."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from connguard import Pseudonymizer, _core
from connguard._core import on_core
from connguard.bans import DEFAULT_KINDS, BanManager
from connguard.fleet.metrics import FleetCollector
from connguard.fleet.redis import RedisFleet

from .redis_server import (  # noqa: F401  (fixtures)
    FAST,
    MakeNode,
    RedisServer,
    client,
    free_port,
    make_node_fixture,
    redis_factory_fixture,
    redis_url_fixture,
    stream_fixture,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)

def scrape(fleet: RedisFleet) -> str:
    registry = CollectorRegistry()
    registry.register(FleetCollector(fleet, namespace="connguard"))
    return generate_latest(registry).decode()


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in the exposition"
    return float(match.group(1))


# --- propagation ------------------------------------------------------------------

def test_an_infraction_on_a_is_applied_on_b_and_c_within_a_second(make_node: MakeNode) -> None:
    a, fa = make_node("a")
    b, _ = make_node("b")
    c, _ = make_node("c")
    a.report("203.0.113.7", "impersonation")
    assert a.is_banned("203.0.113.7")
    assert wait_for(lambda: b.is_banned("203.0.113.7") and c.is_banned("203.0.113.7"), 1.0)
    assert b.score("203.0.113.7") == c.score("203.0.113.7") == 10
    assert wait_for(lambda: fa.stats().published == 1)


def test_ten_reports_in_one_millisecond_count_ten(make_node: MakeNode) -> None:
    a, _ = make_node("a")
    b, _ = make_node("b")
    now = _core.core.default_clock()                            # the BanManager's own timebase
    ids = {a.report("2001:db8::1", "malformed_message", now=now).id for _ in range(10)}
    assert len(ids) == 10                                       # one instant, ten infractions
    assert wait_for(lambda: b.score("2001:db8::1") == 10)
    assert b.is_banned("2001:db8::77")                           # the /64 is banned
    assert sorted(b.infraction_counts().items()) == sorted(a.infraction_counts().items())


def test_own_entries_are_skipped_and_remote_ones_not_published_again(
        make_node: MakeNode, redis_url: str, stream: str) -> None:
    a, fa = make_node("a")
    b, fb = make_node("b")
    for i in range(5):
        a.report(f"198.51.100.{i}", "malformed_message")
    b.report("198.51.100.200", "malformed_message")
    assert wait_for(lambda: fb.stats().applied == 5 and fa.stats().applied == 1)
    assert wait_for(lambda: fa.stats().skipped["own"] == 5 and fb.stats().skipped["own"] == 1)
    # A follower can read an entry before its publisher has counted it: wait for that.
    assert wait_for(lambda: fa.stats().published == 5 and fb.stats().published == 1)
    time.sleep(0.1)
    assert fa.stats().published == 5 and fb.stats().published == 1     # no echo
    assert client(redis_url).xlen(stream) == 6


def test_two_processes_under_one_node_id_still_share(
        make_node: MakeNode, redis_url: str, stream: str, caplog: pytest.LogCaptureFixture) -> None:
    """Each knows its own entries by its RedisFleet's token, not the node id: the
    other's are applied, counted as clashes and logged; its own are still skipped."""
    a, fa = make_node("same")
    b, fb = make_node("same")
    with caplog.at_level(logging.WARNING, logger="connguard.fleet"):
        a.report("198.51.100.7", "impersonation")
        b.ban("198.51.100.8", 600.0)
        assert wait_for(lambda: b.is_banned("198.51.100.7") and a.is_banned("198.51.100.8"))
    assert wait_for(lambda: fa.stats().skipped["own"] == 1 and fb.stats().skipped["own"] == 1)
    assert (fa.stats().clashes, fb.stats().clashes) == (1, 1)
    assert (fa.stats().applied, fb.stats().applied) == (1, 1)
    assert fa.stats().published == 1                          # the applied ban is not echoed
    warnings = [r.getMessage() for r in caplog.records if "another process" in r.getMessage()]
    assert len(warnings) == 2 and all("as node 'same'" in w for w in warnings)


def test_a_late_node_is_ban_aware_when_start_returns(make_node: MakeNode) -> None:
    a, fa = make_node("a")
    for i in range(50):
        a.report(f"192.0.2.{i}", "impersonation")
    assert fa.flush(2.0)
    late, fl = make_node("late", start=False)
    assert not late.is_banned("192.0.2.1")
    assert fl.start(timeout=2.0) is True
    assert all(late.is_banned(f"192.0.2.{i}") for i in range(50))    # at once, no waiting
    assert fl.stats().replayed and fl.stats().applied == 50


def test_events_before_start_are_published_at_start(make_node: MakeNode) -> None:
    a, fa = make_node("a", start=False)
    a.report("192.0.2.9", "impersonation")
    assert fa.outbox_depth == 1
    fa.start(timeout=2.0)
    b, _ = make_node("b")
    assert wait_for(lambda: b.is_banned("192.0.2.9"))


# --- what receivers trust ----------------------------------------------------------

def test_a_forged_entry_with_a_huge_penalty_is_clamped(make_node: MakeNode, redis_url: str,
                                                      stream: str) -> None:
    b, fb = make_node("b")
    r = client(redis_url)
    now = time.time()
    r.xadd(stream, {"id": "evil:1", "source": "203.0.113.50", "kind": "malformed_message",
                    "created": repr(now + 10**6), "node": "evil", "penalty": "1000000",
                    "expires": "1e300"})
    r.xadd(stream, {"type": "ban", "id": "evil:2", "source": "203.0.113.51", "created": repr(now),
                    "node": "evil", "duration": "1e12"})
    assert wait_for(lambda: fb.stats().applied == 2)
    assert b.score("203.0.113.50") == 1                     # local policy's penalty
    assert not b.is_banned("203.0.113.50")
    infraction = b.snapshot()["infractions"][0]
    assert infraction["expires"] <= time.time() + 3600.0 + 1  # created from the future: now
    (ban,) = b.banned()
    assert ban.source == "203.0.113.51"
    assert ban.until <= now + max(life for _, life in DEFAULT_KINDS.values()) + 1   # max_ban


def test_commands_from_the_future_count_as_now(make_node: MakeNode, redis_url: str,
                                             stream: str) -> None:
    """A ban dated ahead lasts max_ban at most; an unban dated ahead does not shadow
    the offences after it."""
    b, fb = make_node("b")
    r = client(redis_url)
    ahead = repr(time.time() + 1e9)
    r.xadd(stream, {"type": "ban", "id": "evil:ban:1", "source": "203.0.113.60",
                    "created": ahead, "node": "evil", "duration": "60"})
    r.xadd(stream, {"type": "unban", "id": "evil:unban:1", "source": "203.0.113.61",
                    "created": ahead, "node": "evil"})
    assert wait_for(lambda: fb.stats().applied == 2)
    (ban,) = b.banned()
    assert ban.source == "203.0.113.60" and ban.until <= time.time() + 60.0 + 1
    for i in range(3):                                   # after the unban: 30 points
        r.xadd(stream, {"id": f"c:1:{i}", "source": "203.0.113.61", "kind": "impersonation",
                        "created": repr(time.time()), "node": "c"})
    assert wait_for(lambda: b.is_banned("203.0.113.61"))
    assert fb.stats().skipped["lifted"] == 0


def test_an_unban_older_than_a_manual_ban_leaves_it(make_node: MakeNode, redis_url: str,
                                                    stream: str) -> None:
    a, _ = make_node("a")
    b, fb = make_node("b")
    unbanned_at = time.time()
    time.sleep(0.05)                    # later by more than two BanManagers' clocks disagree
    a.ban("198.51.100.20", 3600.0)
    assert wait_for(lambda: b.is_banned("198.51.100.20"))
    # An unban node c made before the ban, delivered late (held in its outbox).
    client(redis_url).xadd(stream, {"type": "unban", "id": "c:unban:1", "node": "c",
                                    "source": "198.51.100.20", "created": repr(unbanned_at)})
    assert wait_for(lambda: fb.stats().applied == 2)
    assert a.is_banned("198.51.100.20") and b.is_banned("198.51.100.20")


def test_malformed_and_unknown_entries_are_counted_and_skipped(make_node: MakeNode, redis_url: str,
                                                               stream: str) -> None:
    b, fb = make_node("b")
    r = client(redis_url)
    good: dict[Any, Any] = {"id": "x:1", "source": "203.0.113.60", "kind": "impersonation", "created": "1",
            "node": "x"}
    bad: list[dict[Any, Any]] = [
        {**good, "id": "x:2", "source": b"\xff\xfe"},                   # not UTF-8
        {**good, "id": "x:3", "created": "soon"},                       # not a number
        {**good, "id": "x:4", "created": "nan"},
        {k: v for k, v in good.items() if k != "node"},                 # a field missing
        {**good, "id": "y" * 300},                                      # too long
        {**good, **{f"f{i}": "1" for i in range(20)}},                  # too many fields
        {**good, "id": "x:5", "source": "not-an-address"},
        {**good, "id": "x:6", "source": "203.0.113.60/64bits"},
        {"type": "ban", "id": "x:7", "source": "203.0.113.61", "created": "1", "node": "x",
         "duration": "-5"},
    ]
    unknown: list[dict[Any, Any]] = [{**good, "id": "x:8", "kind": "no_such_kind"},
                                     {**good, "id": "x:9", "type": "gossip"}]
    for fields in bad + unknown:
        r.xadd(stream, fields)
    r.xadd(stream, {**good, "created": repr(time.time())})
    assert wait_for(lambda: fb.stats().applied == 1)
    stats = fb.stats()
    assert stats.malformed == len(bad)
    assert stats.skipped["unknown"] == len(unknown)
    assert b.is_banned("203.0.113.60")                           # the good one after them
    assert wait_for(lambda: fb.stats().connected)                # the publisher's check too


# --- unban ---------------------------------------------------------------------------

def test_an_unban_on_b_lifts_the_ban_everywhere_and_a_resync_keeps_it_lifted(
        make_node: MakeNode) -> None:
    a, fa = make_node("a")
    b, fb = make_node("b")
    c, fc = make_node("c")
    for _ in range(10):
        a.report("203.0.113.9", "malformed_message")
    assert wait_for(lambda: b.is_banned("203.0.113.9") and c.is_banned("203.0.113.9"))
    time.sleep(0.05)                    # later by more than two BanManagers' clocks disagree
    assert b.unban("203.0.113.9")
    assert not b.is_banned("203.0.113.9")
    assert wait_for(lambda: not a.is_banned("203.0.113.9") and not c.is_banned("203.0.113.9"))
    for fleet in (fa, fb, fc):
        assert fleet.resync(timeout=2.0)
    assert not any(n.is_banned("203.0.113.9") for n in (a, b, c))
    assert fa.stats().resyncs == 1
    d, _ = make_node("d")                                        # replays infractions, then unban
    assert not d.is_banned("203.0.113.9") and d.score("203.0.113.9") == 0
    a.report("203.0.113.9", "impersonation")                     # a new offence counts again
    assert wait_for(lambda: b.is_banned("203.0.113.9") and d.is_banned("203.0.113.9"))


def test_a_late_infraction_from_before_an_unban_does_not_bring_the_ban_back(
        make_node: MakeNode, redis_url: str, stream: str) -> None:
    b, fb = make_node("b")
    c, _ = make_node("c")
    b.ban("203.0.113.10", 600.0)
    assert wait_for(lambda: c.is_banned("203.0.113.10"))
    before = time.time() - 5.0
    b.unban("203.0.113.10")
    assert wait_for(lambda: not c.is_banned("203.0.113.10"))
    r = client(redis_url)           # as a node whose outbox held it through an outage sends it
    r.xadd(stream, {"id": "late:1", "source": "203.0.113.10", "kind": "impersonation",
                    "created": repr(before), "node": "late"})
    assert wait_for(lambda: fb.stats().skipped["lifted"] == 1)
    assert not b.is_banned("203.0.113.10") and not c.is_banned("203.0.113.10")


def test_a_resync_does_not_apply_an_old_unban_to_later_offences(make_node: MakeNode) -> None:
    a, _ = make_node("a")
    b, fb = make_node("b")
    b.ban("203.0.113.11", 600.0)
    b.unban("203.0.113.11")
    time.sleep(0.05)                    # later by more than two BanManagers' clocks disagree
    a.report("203.0.113.11", "impersonation")           # after the unban: counts
    assert wait_for(lambda: b.is_banned("203.0.113.11"))
    assert fb.resync(timeout=2.0)                         # b's own ban and unban are not redone
    assert b.is_banned("203.0.113.11") and a.is_banned("203.0.113.11")
    assert fb.stats().skipped["noop"] >= 2


class GatedFleet(RedisFleet):
    """A RedisFleet whose replays, while ``gated``, wait for a permit once they have begun."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gated = False
        self.begun = threading.Semaphore(0)     # released as each gated replay begins
        self.permits = threading.Semaphore(0)

    def _horizon_id(self, client: Any) -> str:  # a replay's first step (the follower's client)
        if self.gated and client is self._sub:
            self.begun.release()
            self.permits.acquire(timeout=10.0)
        return super()._horizon_id(client)


def test_a_resync_asked_during_a_replay_waits_for_the_next_one(
        core: ModuleType, redis_url: str, stream: str) -> None:
    # A replay that began before the request may miss what the requester
    # wants replayed: the request is served by the next replay.
    fleet = GatedFleet(on_core(BanManager, core)(node_id="b", seed=7), redis_url, stream, **FAST)
    answers: dict[str, bool] = {}

    def ask(name: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: answers.update({name: fleet.resync(10.0)}))
        thread.start()
        return thread

    # The stream exists, so a failed read never finds it lost (an unasked replay).
    client(redis_url).xadd(stream, {"type": "gossip"})
    try:
        assert fleet.start(timeout=2.0)
        fleet.gated = True
        first = ask("first")
        assert fleet.begun.acquire(timeout=5.0)          # the follower replays for the first
        second = ask("second")
        assert wait_for(lambda: fleet._asked == 2)
        first.join(0.3)
        assert first.is_alive()                          # answered when its replay completes
        fleet.permits.release()
        first.join(5.0)
        assert answers == {"first": True}
        assert fleet.begun.acquire(timeout=5.0)          # another replay, for the second
        second.join(0.3)
        assert second.is_alive() and "second" not in answers
        fleet.permits.release()
        second.join(5.0)
        assert answers == {"first": True, "second": True}
        assert fleet.stats().resyncs == 2
    finally:
        fleet.gated = False
        fleet.permits.release(2)
        fleet.stop()


def test_a_manual_ban_travels_and_lengthening_it_travels_too(make_node: MakeNode) -> None:
    a, _ = make_node("a")
    b, _ = make_node("b")
    a.ban("2001:db8:5::1", 60.0)
    assert wait_for(lambda: b.is_banned("2001:db8:5::2"))
    first = b.banned()[0].until
    a.ban("2001:db8:5::1", 600.0)
    assert wait_for(lambda: b.banned()[0].until > first + 500)


# --- Redis down ------------------------------------------------------------------------

def test_redis_killed_and_restarted_loses_nothing_within_the_outbox(
        core: ModuleType, redis_factory: Callable[[], RedisServer], stream: str) -> None:
    server = redis_factory()
    nodes = []
    for name in ("a", "b"):
        bans = on_core(BanManager, core)(node_id=name, seed=7)
        fleet = RedisFleet(bans, server.url, stream, outbox=1000, **FAST)
        assert fleet.start(timeout=2.0)
        nodes.append((bans, fleet))
    (a, fa), (b, fb) = nodes
    try:
        a.report("198.51.100.1", "impersonation")
        assert wait_for(lambda: b.is_banned("198.51.100.1"))
        server.kill()
        sources = [f"198.51.{i // 250 + 1}.{i % 250 + 2}" for i in range(500)]
        for s in sources:
            a.report(s, "impersonation")                 # local enforcement goes on
        assert all(a.is_banned(s) for s in sources)
        assert wait_for(lambda: not fa.stats().connected and not fb.stats().connected, 2.0)
        text = scrape(fa)
        assert sample(text, "connguard_fleet_connected") == 0
        assert sample(text, "connguard_fleet_outbox_depth") == 500
        server.start()                                   # empty: nothing was persisted
        assert wait_for(lambda: all(b.is_banned(s) for s in sources), 5.0)
        assert wait_for(lambda: fa.stats().connected and fb.stats().connected, 2.0)
        text = scrape(fa)
        assert sample(text, "connguard_fleet_connected") == 1
        assert sample(text, "connguard_fleet_outbox_depth") == 0
        # the 500 held, and the one sent before the kill again (the new server may lack it)
        assert sample(text, "connguard_fleet_published_total") == 502
        assert sample(text, "connguard_fleet_dropped_total") == 0
        assert sample(text, "connguard_fleet_reconnects_total") >= 1
        assert wait_for(lambda: fb.stats().skipped["noop"] == 1)           # a duplicate: no-op
        assert wait_for(lambda: fb.stats().applied == 501)    # counted just after it applies
        assert fb.stats().reconnects >= 1
    finally:
        fa.stop()
        fb.stop()


def test_events_a_restarted_redis_lost_are_published_again(
        core: ModuleType, redis_factory: Callable[[], RedisServer], stream: str) -> None:
    server = redis_factory()
    a = on_core(BanManager, core)(node_id="a", seed=7)
    fa = RedisFleet(a, server.url, stream, **FAST)
    try:
        assert fa.start(timeout=2.0)
        a.report("192.0.2.31", "impersonation")
        assert fa.flush(2.0)
        server.kill()                    # before any follower read it: gone with the server
        server.start()
        a.report("192.0.2.32", "impersonation")
        assert fa.flush(2.0)
        r = client(server.url)

        def sources() -> set[bytes]:
            entries: Any = r.xrange(stream)
            return {fields[b"source"] for _, fields in entries}

        assert wait_for(lambda: sources() == {b"192.0.2.31", b"192.0.2.32"}, 3.0)
        late = on_core(BanManager, core)(node_id="late", seed=7)
        with RedisFleet(late, server.url, stream, **FAST):
            assert late.is_banned("192.0.2.31") and late.is_banned("192.0.2.32")
    finally:
        fa.stop()


def test_overflow_beyond_the_outbox_is_counted_and_logged(
        make_node: MakeNode, caplog: pytest.LogCaptureFixture) -> None:
    a, fa = make_node("a", url=f"redis://127.0.0.1:{free_port()}/0", start=False, outbox=50)
    with caplog.at_level(logging.WARNING, logger="connguard.fleet"):
        for i in range(80):
            a.report(f"192.0.2.{i}", "malformed_message")
    assert fa.stats().dropped == 30 and fa.outbox_depth == 50
    assert "outbox full (50 events" in caplog.text
    assert sum("outbox full" in r.message for r in caplog.records) == 1    # once per outage


def test_every_event_is_held_or_published_in_each_stats_snapshot(make_node: MakeNode) -> None:
    a, fa = make_node("a", batch=1)                  # a batch of one: many hand-overs to watch
    for i in range(300):
        a.report(f"192.0.2.{i % 250}", "malformed_message")
    snapshots = []
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        stats = fa.stats()
        snapshots.append((stats.published, stats.outbox_depth))
        if stats.outbox_depth == 0:
            break
    assert all(published + depth == 300 for published, depth in snapshots), \
        [s for s in snapshots if sum(s) != 300][:5]
    assert len(snapshots) > 1 and snapshots[-1] == (300, 0)


def test_reporting_while_redis_is_unreachable_does_not_block(make_node: MakeNode) -> None:
    a, fa = make_node("a", url=f"redis://127.0.0.1:{free_port()}/0", start=False)
    started = time.monotonic()
    assert fa.start(timeout=0.1) is False                # no Redis: serves on local bans
    assert time.monotonic() - started < 1.0
    started = time.perf_counter()
    for i in range(100):
        a.report(f"203.0.113.{i}", "malformed_message")
    elapsed = time.perf_counter() - started
    assert elapsed < 0.1, f"100 reports took {elapsed:.3f} s"
    assert fa.outbox_depth == 100 and not fa.stats().connected
    started = time.monotonic()
    fa.stop()
    assert time.monotonic() - started < 1.5


def test_a_node_started_without_redis_replays_once_it_answers(
        core: ModuleType, redis_factory: Callable[[], RedisServer], stream: str) -> None:
    server = redis_factory()
    seed = on_core(BanManager, core)(node_id="seed", seed=7)
    with RedisFleet(seed, server.url, stream, **FAST):
        seed.report("192.0.2.77", "impersonation")
    server.stop()                                                   # nothing persisted: lost
    late = on_core(BanManager, core)(node_id="late", seed=7)
    fleet = RedisFleet(late, server.url, stream, **FAST)
    try:
        assert fleet.start(timeout=0.1) is False
        server.start()
        other = on_core(BanManager, core)(node_id="other", seed=7)
        with RedisFleet(other, server.url, stream, **FAST):
            other.report("192.0.2.78", "impersonation")
        assert wait_for(lambda: late.is_banned("192.0.2.78"), 3.0)
        # counted just after the replay that may have applied the ban above
        assert wait_for(lambda: fleet.stats().replayed and fleet.stats().reconnects >= 1)
    finally:
        fleet.stop()


def test_a_resync_asked_before_redis_answers_is_the_first_replay_and_counted(
        core: ModuleType, redis_factory: Callable[[], RedisServer], stream: str) -> None:
    server = redis_factory()
    server.stop()
    fleet = RedisFleet(on_core(BanManager, core)(node_id="b", seed=7), server.url, stream, **FAST)
    answers: list[bool] = []
    try:
        assert fleet.start(timeout=0.1) is False
        asking = threading.Thread(target=lambda: answers.append(fleet.resync(10.0)))
        asking.start()
        time.sleep(0.1)                              # asked while Redis is down
        server.start()
        asking.join(10.0)
        assert answers == [True]
        stats = fleet.stats()
        assert stats.replayed and stats.resyncs == 1     # True with the resync counted
    finally:
        fleet.stop()


def test_stop_ends_a_waiting_resync_at_once(
        core: ModuleType, redis_factory: Callable[[], RedisServer], stream: str) -> None:
    server = redis_factory()
    fleet = RedisFleet(on_core(BanManager, core)(node_id="b", seed=7), server.url, stream, **FAST)
    answers: list[bool] = []
    assert fleet.start(timeout=2.0)
    server.stop()                                    # no replay can serve it now
    asking = threading.Thread(target=lambda: answers.append(fleet.resync(30.0)))
    asking.start()
    time.sleep(0.1)
    started = time.monotonic()
    fleet.stop()
    asking.join(10.0)
    assert answers == [False]
    assert time.monotonic() - started < 5.0          # not the 30 s it asked to wait


# --- the stream's bounds ----------------------------------------------------------------

def test_the_stream_stays_under_its_cap(make_node: MakeNode, redis_url: str, stream: str) -> None:
    a, fa = make_node("a", maxlen=1000, batch=200)
    for i in range(5000):
        a.report(f"10.{i // 250}.{i % 250}.1", "malformed_message")
    assert fa.flush(5.0)
    assert fa.stats().published == 5000
    # MAXLEN ~ trims whole macro nodes (100 entries by default): at most one more
    assert 1000 <= client(redis_url).xlen(stream) <= 1000 + 100


def test_entries_older_than_the_longest_lifetime_are_trimmed(make_node: MakeNode, redis_url: str,
                                                              stream: str) -> None:
    short = {kind: (penalty, 0.5) for kind, (penalty, _) in DEFAULT_KINDS.items()}
    a, fa = make_node("a", bans={"penalties": short}, trim_every=0.05)
    for i in range(300):
        a.report(f"10.9.{i // 250}.{i % 250}", "malformed_message")
    assert fa.flush(2.0)
    r = client(redis_url)
    assert r.xlen(stream) > 0
    time.sleep(0.6)
    a.report("10.9.9.9", "malformed_message")            # the newest entry stays
    assert wait_for(lambda: r.xlen(stream) <= 100, 2.0)
    late, fl = make_node("late", bans={"penalties": short})
    assert fl.stats().applied <= 1


# --- metrics, logs, arguments, lifecycle ------------------------------------------------

def test_metrics_through_prometheus_client_carry_no_address(make_node: MakeNode) -> None:
    a, fa = make_node("edge-7f3a")
    b, fb = make_node("edge-91c2")
    sources = ["203.0.113.99", "2001:db8:77::1"]
    for s in sources:
        a.report(s, "impersonation")
    assert wait_for(lambda: fb.stats().applied == 2)
    # The publisher thread reports itself connected after its own first check, which
    # can come after the follower has applied both entries on a loaded machine.
    assert wait_for(lambda: fb.stats().connected)
    text = scrape(fb)
    assert sample(text, "connguard_fleet_connected") == 1
    assert sample(text, "connguard_fleet_applied_total") == 2
    assert sample(text, "connguard_fleet_published_total") == 0
    assert sample(text, "connguard_fleet_dropped_total") == 0
    assert sample(text, "connguard_fleet_outbox_depth") == 0
    assert sample(text, "connguard_fleet_malformed_total") == 0
    assert sample(text, "connguard_fleet_skipped_total", '{reason="own"}') == 0
    assert 0 <= sample(text, "connguard_fleet_lag_seconds") < 1.0
    for needle in (*sources, "203.0.113", "2001:db8", "127.0.0.1", fb.stream, "edge-"):
        assert needle not in text, needle
    assert wait_for(lambda: fa.stats().published == 2)           # counted after the XADD returns
    assert sample(scrape(fa), "connguard_fleet_published_total") == 2


def test_logs_show_pseudonyms_when_the_ban_manager_has_them(
        make_node: MakeNode, caplog: pytest.LogCaptureFixture) -> None:
    pseudonymizer = Pseudonymizer(b"k" * 32, rotate=None)
    a, _ = make_node("a")
    b, fb = make_node("b", bans={"pseudonymizer": pseudonymizer})
    with caplog.at_level(logging.INFO):
        a.ban("203.0.113.123", 60.0)
        assert wait_for(lambda: b.is_banned("203.0.113.123"))
        a.unban("203.0.113.123")
        assert wait_for(lambda: not b.is_banned("203.0.113.123"))
    lines = [r.getMessage() for r in caplog.records if r.name == "connguard.fleet"]
    assert any(pseudonymizer("203.0.113.123") in line for line in lines)
    fleet_and_b = [r.getMessage() for r in caplog.records
                   if r.name == "connguard.fleet" or "banned p-" in r.getMessage()]
    assert not any("203.0.113.123" in line for line in fleet_and_b)


def test_bad_arguments_are_named(core: ModuleType) -> None:
    b = on_core(BanManager, core)(node_id="n", seed=7)
    with pytest.raises(ValueError, match="url must be a redis://"):
        RedisFleet(b, "http://127.0.0.1:6379")
    for url in ("redis://127.0.0.1:6379/abc", "redis://127.0.0.1/1/2", "rediss://h/-1",
                "redis://h/ 3", "redis://h/\N{DIGIT THREE}\N{ARABIC-INDIC DIGIT ONE}",
                "REDIS://h/abc"):
        with pytest.raises(ValueError, match="url must name its database by number"):
            RedisFleet(b, url)
    for url in ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/", "redis://h:1/15", "redis://h/1/",
                "unix:///tmp/redis.sock?db=2"):
        RedisFleet(b, url).stop()                                    # no connection made
    with pytest.raises(TypeError, match="url must be a str"):
        RedisFleet(b, 6379)                                          # type: ignore[arg-type]
    with pytest.raises(ValueError, match="maxlen must be between 1"):
        RedisFleet(b, maxlen=0)
    with pytest.raises(ValueError, match="outbox must be between 1"):
        RedisFleet(b, outbox=0)
    with pytest.raises(TypeError, match="bans must be a connguard.BanManager, not dict"):
        RedisFleet({})                                               # type: ignore[arg-type]
    with pytest.raises(ValueError, match="node_id must be the BanManager's node_id"):
        RedisFleet(b, node_id="other")
    with pytest.raises(ValueError, match="stream must be a str of 1 to"):
        RedisFleet(b, stream="")
    with pytest.raises(ValueError, match="max_ban must be finite"):
        RedisFleet(b, max_ban=float("inf"))
    with pytest.raises(TypeError, match="fleet must be a RedisFleet"):
        FleetCollector(object())
    RedisFleet(b, node_id="n").stop()                                # the manager's own id: fine


def test_start_once_and_stop_is_prompt_and_idempotent(make_node: MakeNode) -> None:
    a, fa = make_node("a", block=0.25)
    with pytest.raises(RuntimeError, match="starts once"):
        fa.start()
    started = time.monotonic()
    fa.stop()
    fa.stop()
    assert time.monotonic() - started < 1.0
    a.report("192.0.2.200", "malformed_message")             # after stop: local only
    assert fa.outbox_depth == 0 and a.score("192.0.2.200") == 1


def test_asyncio_start_and_stop_do_not_block_the_loop(core: ModuleType, redis_url: str,
                                                       stream: str) -> None:
    async def main() -> int:
        a = on_core(BanManager, core)(node_id="a", seed=7)
        b = on_core(BanManager, core)(node_id="b", seed=7)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        async with RedisFleet(a, redis_url, stream, **FAST), \
                RedisFleet(b, redis_url, stream, **FAST):
            a.report("192.0.2.201", "impersonation")
            for _ in range(200):
                if b.is_banned("192.0.2.201"):
                    break
                await asyncio.sleep(0.005)
            assert b.is_banned("192.0.2.201")
        ticker.cancel()
        return ticks

    assert asyncio.run(main()) > 5
