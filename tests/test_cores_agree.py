"""Random operation sequences give the same observables on both cores."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connguard import _core_py
from connguard._core import on_core
from connguard.patterns import CredentialStuffing, DnsTunnel, PortScan, SpamRelay
from connguard.tracker import Tracker

from .conftest import import_compiled

pytestmark = pytest.mark.c_extension

SOURCES = ["192.0.2.1", "192.0.2.2", "192.0.2.1:5000", "::ffff:192.0.2.3", "2001:db8::1",
           "2001:db8::2", "[2001:db8:0:1::9]:443", "fe80::1%eth0", "198.51.100.7",
           "203.0.113.200", "10.0.0.1", "10.0.0.2"]
# Enough distinct netblocks (also under /24 and /48) to keep small tables evicting.
SOURCES += [f"10.{i}.{i}.1" for i in range(24)] + [f"2001:db8:{i:x}::1" for i in range(12)]
DESTINATIONS = ["", "mx.example:25", "a:443", "b:443", "[2001:db8::53]:853", "c:53", "d:22",
                "e:8080", "bare-host", "broken:99999", "x:1", "x:2", "x:3", "mx2.example:25",
                "mx3.example:25", "login.example:443", "LOGIN.example:443", "y:4", "z:5", "w:53"]
# Byte counts a close may carry: unknown, nothing (a failed connection), some, a lot.
BYTES = [None, 0, 1, 300, 5000, 2**40]

operation = st.tuples(
    st.sampled_from(["accept", "accept", "close", "close_bytes", "stats", "top", "findings"]),
    st.integers(0, len(SOURCES) - 1),
    st.integers(0, len(DESTINATIONS) - 1),
    # Mostly small steps (replayed logs go back a little); now and then a
    # clock reset or a timestamp far in the future or past.
    st.one_of(st.floats(-1.0, 7.0, allow_nan=False), st.sampled_from([-5e3, 5e3, -1e9, 1e9])),
)
configs = st.fixed_dictionaries({
    "capacity": st.sampled_from([1, 2, 3, 5, 8, 1000]),
    "shards": st.sampled_from([1, 2, 4]),
    "window": st.sampled_from([1.0, 2.5, 10.0]),
    "concurrent_threshold": st.integers(1, 4),
    "rate_threshold": st.sampled_from([None, 0.5, 2.0]),
    "overflow": st.sampled_from(["permissive", "deny"]),
    "ipv4_prefix": st.sampled_from([32, 24]),
    "ipv6_prefix": st.sampled_from([64, 128, 48]),
    "seed": st.integers(0, 2**64 - 1),
    # Thresholds low enough for short sequences to raise and clear patterns.
    "spam_relay": st.one_of(st.none(), st.builds(
        SpamRelay, connections=st.integers(1, 4), hosts=st.integers(1, 3),
        min_closed=st.integers(1, 3), window=st.sampled_from([1.0, 5.0, 30.0]))),
    "port_scan": st.one_of(st.none(), st.builds(
        PortScan, ports=st.integers(2, 5), vertical_max_hosts=st.integers(1, 3),
        hosts=st.integers(2, 5), horizontal_max_ports=st.integers(1, 3),
        min_closed=st.integers(1, 3), window=st.sampled_from([1.0, 5.0, 30.0]))),
    "credential_stuffing": st.one_of(st.none(), st.builds(
        CredentialStuffing, connections=st.integers(1, 5), max_hosts=st.integers(1, 3),
        mean_received=st.sampled_from([0, 500, 10_000]), min_closed=st.integers(1, 3),
        login_hosts=st.sampled_from([(), ("login.example",)]),
        login_connections=st.integers(1, 4), window=st.sampled_from([1.0, 5.0, 30.0]))),
    "dns_tunnel": st.one_of(st.none(), st.builds(
        DnsTunnel, connections=st.integers(1, 3), bytes=st.sampled_from([1, 2000, 10**6]),
        mean_bytes=st.sampled_from([0, 100, 4000]), window=st.sampled_from([1.0, 5.0, 30.0]))),
})


@pytest.fixture(scope="module")
def both(pytestconfig: pytest.Config) -> tuple[type, type]:
    _core_c = import_compiled()
    return on_core(Tracker, _core_c), on_core(Tracker, _core_py)


def observe(t: Any, now: float) -> Any:
    return (t.counters(), t.untracked(), t.flagged_by(), t.raised_by(), t.class_accepts(),
            t.pattern_state(), [t.stats(s, now=now) for s in SOURCES],
            t.top(100, by="active", now=now), t.top(100, by="total", now=now),
            t.top(100, by="rate", now=now), t.findings(now))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, ops=st.lists(operation, max_size=120))
def test_random_operations_agree(both: tuple[type, type], config: dict[str, Any],
                                 ops: list[tuple[str, int, int, float]]) -> None:
    compiled, pure = (cls(clock=lambda: 0.0, **config) for cls in both)
    now = 100.0
    for name, si, di, dt in ops:
        now += dt                                   # dt < 0: replayed logs go backwards
        source = SOURCES[si]
        if name == "accept":
            results = [t.accept(source, DESTINATIONS[di], now=now) for t in (compiled, pure)]
        elif name == "close":
            results = [t.close(source, now=now) for t in (compiled, pure)]
        elif name == "close_bytes":
            # di picks the bytes and whether the close names its destination.
            sent, received = BYTES[di % len(BYTES)], BYTES[(di * 7 + 3) % len(BYTES)]
            destination = DESTINATIONS[di] if di % 3 else None
            results = [t.close(source, now=now, sent=sent, received=received,
                               destination=destination) for t in (compiled, pure)]
        elif name == "stats":
            results = [t.stats(source, now=now) for t in (compiled, pure)]
        elif name == "findings":
            results = [t.findings(now) for t in (compiled, pure)]
        else:
            results = [t.top(3, by="rate", now=now) for t in (compiled, pure)]
        assert results[0] == results[1], (name, source)
        compiled.check_consistency()
        pure.check_consistency()
    assert observe(compiled, now) == observe(pure, now)


batch_op = st.tuples(st.sampled_from(["accept_many", "close_many", "accept", "close"]),
                     st.lists(st.integers(0, len(SOURCES) - 1), max_size=20),
                     st.integers(0, len(DESTINATIONS) - 1), st.floats(-1.0, 7.0, allow_nan=False))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, ops=st.lists(batch_op, max_size=40))
def test_batches_agree_with_each_other_and_with_single_calls(
        both: tuple[type, type], config: dict[str, Any],
        ops: list[tuple[str, list[int], int, float]]) -> None:
    """accept_many and close_many on either core do what the same calls one
    by one do (at one time), with the same results."""
    compiled, pure = (cls(clock=lambda: 0.0, **config) for cls in both)
    singles = [cls(clock=lambda: 0.0, **config) for cls in both]
    now = 100.0
    for name, indices, di, dt in ops:
        now += dt
        batch = [SOURCES[i] for i in indices]
        destination = DESTINATIONS[di]
        if name == "accept_many":
            results = [t.accept_many(batch, destination, now=now) for t in (compiled, pure)]
            expected = [[t.accept(s, destination, now=now) for s in batch] for t in singles]
        elif name == "close_many":                 # di picks the bytes, or none
            sent = [BYTES[(di + k) % len(BYTES)] for k in range(len(batch))] if di % 2 else None
            received = [BYTES[(di * 3 + k) % len(BYTES)] for k in range(len(batch))]
            results = [t.close_many(iter(batch), now=now, sent=sent, received=received)
                       for t in (compiled, pure)]
            expected = [[t.close(s, now=now, sent=sent[k] if sent else None, received=received[k])
                         for k, s in enumerate(batch)] for t in singles]
        else:                                   # one by one on every tracker
            results = [[getattr(t, name)(s, *((destination,) if name == "accept" else ()),
                                         now=now) for s in batch] for t in (compiled, pure)]
            expected = [[getattr(t, name)(s, *((destination,) if name == "accept" else ()),
                                          now=now) for s in batch] for t in singles]
        assert results[0] == results[1] == expected[0] == expected[1], (name, batch)
    for t in (compiled, pure, *singles):
        t.check_consistency()
    assert observe(compiled, now) == observe(pure, now) == observe(singles[0], now)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, len(SOURCES) - 1)), max_size=200))
def test_active_counts_match_a_reference_model(both: tuple[type, type],
                                               ops: list[tuple[bool, int]]) -> None:
    trackers = [cls(clock=lambda: 0.0, seed=1) for cls in both]
    key_of = {s: trackers[0].source_key(s) for s in SOURCES}
    model: Counter[Any] = Counter()
    for is_accept, si in ops:
        key = key_of[SOURCES[si]]
        for t in trackers:
            if is_accept:
                t.accept(SOURCES[si], now=1.0)
            else:
                t.close(SOURCES[si], now=1.0)
        if is_accept:
            model[key] += 1
        elif model[key] > 0:
            model[key] -= 1
    for t in trackers:
        assert t.active_connections == sum(model.values())
        assert t.active_sources == sum(1 for v in model.values() if v)
        for s in SOURCES:
            stats = t.stats(s)
            assert (stats.active if stats else 0) == model[key_of[s]]


@given(st.text(max_size=50))
def test_parsers_agree_on_any_text(both: tuple[type, type], text: str) -> None:
    from connguard import _core_c

    outcomes = []
    for core in (_core_c, _core_py):
        try:
            outcomes.append(core.parse_source(text))
        except ValueError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


@given(st.text(alphabet=st.sampled_from("0123456789abcdef:.[]%"), max_size=45))
def test_parsers_agree_on_address_like_text(both: tuple[type, type], text: str) -> None:
    test_parsers_agree_on_any_text.hypothesis.inner_test(both, text)  # type: ignore[attr-defined]


# Dotted quads of every length from 7 to 15 bytes (the compiled parser copies
# text under 16 bytes into a padded buffer), then one byte more or a port.
_QUADS = ["1.2.3.4", "1.2.3.45", "1.2.34.56", "1.23.45.67", "12.34.56.78", "123.45.67.89",
          "123.145.67.89", "123.145.167.89", "123.145.167.189"]


@pytest.mark.parametrize("text", [quad + tail for quad in _QUADS
                                  for tail in ("", "0", "5", ".", ":", ":8080", "x", "%")])
def test_parsers_agree_at_every_quad_length(both: tuple[type, type], text: str) -> None:
    """Both cores parse as the standard library does: the address, or ValueError."""
    import ipaddress

    from connguard import _core_c

    host, sep, port = text.partition(":")
    try:
        expected: tuple[int, int] | None = (4, int(ipaddress.IPv4Address(host)))
    except ValueError:
        expected = None
    if sep and not (port.isdigit() and int(port) <= 65535):
        expected = None
    for core in (_core_c, _core_py):
        if expected is not None:
            assert core.parse_source(text) == expected
        else:
            with pytest.raises(ValueError):
                core.parse_source(text)


@pytest.mark.parametrize("seed", range(4))
def test_long_random_workload_agrees(both: tuple[type, type], seed: int) -> None:
    import random

    rng = random.Random(seed)
    pool = SOURCES + [f"172.16.{i}.{i % 7}" for i in range(200)]
    config = {"capacity": rng.choice([16, 50, 64]), "shards": rng.choice([1, 4]),
              "window": 5.0, "rate_threshold": 1.5, "concurrent_threshold": 3, "seed": seed}
    compiled, pure = (cls(clock=lambda: 0.0, **config) for cls in both)
    now = 0.0
    for _ in range(20_000):
        now += rng.random() * 0.3
        source = rng.choice(pool)
        draw = rng.random()
        if draw < 0.7:                            # most connections close again soon
            destination = rng.choice(DESTINATIONS)
            assert compiled.accept(source, destination, now=now) == pure.accept(source, destination, now=now)
        if draw < 0.6 or draw >= 0.7:
            assert compiled.close(source, now=now + 0.1) == pure.close(source, now=now + 0.1)
    assert compiled.evictions > 500          # the sampler's choices matter here
    compiled.check_consistency()
    pure.check_consistency()
    assert observe(compiled, now) == observe(pure, now)
    assert [compiled.stats(s, now=now) for s in pool] == [pure.stats(s, now=now) for s in pool]


destination_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("aZ.é例:[]%0123456789"), max_size=30),
    st.builds(lambda h, p: f"{h}:{p}", st.text(max_size=20), st.integers(-5, 70_000)),
    st.builds(lambda h, p: f"[{h}]:{p}", st.text(max_size=20), st.integers(0, 65_535)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(destination_text, min_size=1, max_size=12))
def test_destination_classification_agrees(both: tuple[type, type], destinations: list[str]) -> None:
    trackers = [cls(clock=lambda: 0.0, seed=3) for cls in both]
    for t in trackers:
        for i, destination in enumerate(destinations):
            t.accept(f"192.0.2.{i}", destination, now=1.0)   # one sketch bit each
            t.accept("198.51.100.1", destination, now=1.0)   # all in one sketch
    assert [t.top(20, by="total", now=1.0) for t in trackers][0] == \
        [t.top(20, by="total", now=1.0) for t in trackers][1]


limiter_ops = st.lists(st.tuples(st.integers(0, 5), st.one_of(
    st.floats(0.0, 2.0, allow_nan=False), st.sampled_from([-0.5, -30.0, -1e6, 1e6]))), max_size=200)


@settings(max_examples=200, deadline=None)
@given(ops=limiter_ops, capacity=st.sampled_from([2, 3, 100]), rate=st.sampled_from([0.5, 4.0]),
       burst=st.sampled_from([1.0, 8.0]))
def test_rate_limiters_agree(both: tuple[type, type], ops: list[tuple[int, float]], capacity: int,
                             rate: float, burst: float) -> None:
    from connguard import _core_c
    from connguard.ratelimit import RateLimiter

    limiters = [on_core(RateLimiter, core)(rate, burst, capacity=capacity, shards=1, seed=5,
                                           warn_after=2, abuse_after=4, violation_window=3.0)
                for core in (_core_c, _core_py)]
    now = 0.0
    keys = ["a", "b", "Peer", "é", "例", "198.51.100.1"]
    for key_index, dt in ops:
        now += dt
        decisions = [limiter.check(keys[key_index], now=now) for limiter in limiters]
        assert decisions[0] == decisions[1]
    assert limiters[0].counters() == limiters[1].counters()
    assert [limiters[0].state(k) for k in keys] == [limiters[1].state(k) for k in keys]
    for limiter in limiters:
        limiter.check_consistency()


ban_ops = st.lists(st.tuples(st.sampled_from(["set", "clear", "check"]), st.integers(0, 7),
                             st.floats(-5.0, 50.0, allow_nan=False)), max_size=150)


@settings(max_examples=200, deadline=None)
@given(ops=ban_ops, capacity=st.sampled_from([2, 4, 100]))
def test_ban_tables_agree(both: tuple[type, type], ops: list[tuple[str, int, float]],
                          capacity: int) -> None:
    from connguard import _core_c

    tables = [core.BanTable(capacity=capacity, shards=1, ipv4_prefix=32, ipv6_prefix=64,
                            clock=lambda: 0.0, seed=9) for core in (_core_c, _core_py)]
    sources = [f"203.0.113.{i}" for i in range(4)] + [f"2001:db8:{i}::1" for i in range(4)]
    for op, i, t in ops:
        _, hi, lo = tables[0].source_key(sources[i])
        if op == "set":
            results = [table.set_until(hi, lo, t) for table in tables]
        elif op == "clear":
            results = [table.clear(hi, lo) for table in tables]
        else:
            results = [table.is_banned(sources[i], now=t / 2) for table in tables]
        assert results[0] == results[1], op
    assert tables[0].counters() == tables[1].counters()
    assert [t.active(now=10.0) for t in tables][0] == [t.active(now=10.0) for t in tables][1]
    for table in tables:
        table.check_consistency()


guard_ops = st.lists(st.tuples(
    st.sampled_from(["accept", "accept", "accept", "close", "close", "open", "open", "handle_close",
                     "report", "ban", "unban", "accept_many", "close_many"]),
    st.integers(0, len(SOURCES) - 1),
    st.integers(0, len(DESTINATIONS) - 1),
    st.floats(0.0, 3.0, allow_nan=False),
), max_size=150)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=guard_ops, enforce=st.booleans(), capacity=st.sampled_from([3, 8, 1000]),
       overflow=st.sampled_from(["permissive", "deny"]), with_limiter=st.booleans(),
       threshold=st.integers(1, 4), max_open=st.sampled_from([None, 1, 2]))
def test_guards_agree(both: tuple[type, type], ops: list[tuple[str, int, int, float]],
                      enforce: bool, capacity: int, overflow: str, with_limiter: bool,
                      threshold: int, max_open: int | None) -> None:
    """Two Guards, one per core, give the same verdicts, counts and bans for any
    operations, keyed, in batches or through connection handles."""
    from connguard import _core_c
    from connguard.bans import BanManager
    from connguard.guard import Guard
    from connguard.ratelimit import RateLimiter

    clock = [1000.0]
    guards = []
    for core in (_core_c, _core_py):
        limiter: RateLimiter | bool = False
        if with_limiter:
            limiter = on_core(RateLimiter, core)(2.0, 3.0, capacity=capacity, shards=1, seed=13,
                                                 warn_after=1, abuse_after=3, clock=lambda: clock[0])
        guards.append(on_core(Guard, core)(
            enforce=enforce, limiter=limiter, max_open=max_open,
            tracker=on_core(Tracker, core)(capacity=capacity, shards=1, seed=11, window=2.0,
                                           overflow=overflow, concurrent_threshold=threshold,
                                           rate_threshold=3.0, clock=lambda: clock[0]),
            bans=on_core(BanManager, core)(capacity=capacity, shards=1, seed=12, node_id="n",
                                           clock=lambda: clock[0])))
    results: list[object]
    handles: tuple[list[Any], list[Any]] = ([], [])
    for name, si, di, dt in ops:
        clock[0] += dt
        source = SOURCES[si]
        if name == "accept":
            results = [g.accept(source, DESTINATIONS[di]) for g in guards]
        elif name == "open":
            opened = [g.open(source, DESTINATIONS[di]) for g in guards]
            for held, conn in zip(handles, opened, strict=True):
                held.append(conn)
            results = [(bool(c), c.reason, c.closed) for c in opened]
        elif name == "handle_close":
            # the handle at a position the op picks; closing one twice is part of the test
            results = [held[di % len(held)].close(sent=si, received=di) if held else None
                       for held in handles]
        elif name == "close":
            results = [g.close(source) for g in guards]
        elif name in ("accept_many", "close_many"):      # a few sources from si on
            batch = SOURCES[si:si + di % 5 + 1]
            results = [g.accept_many(batch, DESTINATIONS[di]) if name == "accept_many"
                       else g.close_many(batch) for g in guards]
        elif name == "report":
            results = [g.report(source, "malformed_message").kind for g in guards]
        elif name == "ban":
            for g in guards:
                g.bans.ban(source, 1.0 + di)
            results = [g.is_banned(source) for g in guards]
        else:
            results = [g.bans.unban(source) for g in guards]
        assert results[0] == results[1], (name, source)
    compiled, pure = guards
    assert compiled.verdict_counts() == pure.verdict_counts()
    assert observe(compiled.tracker, clock[0]) == observe(pure.tracker, clock[0])
    assert [b.source for b in compiled.bans.banned()] == [b.source for b in pure.bans.banned()]
    assert [compiled.is_banned(s) for s in SOURCES] == [pure.is_banned(s) for s in SOURCES]
    assert compiled.bans.counters() == pure.bans.counters()
    for g in guards:
        g.tracker.check_consistency()
        g.bans.check_consistency()
        if g.limiter is not None:
            g.limiter.check_consistency()
            assert g.limiter.counters() == guards[0].limiter.counters()  # type: ignore[union-attr]


flow = st.tuples(
    # Starts mostly in order, sometimes behind (late once the clock passed them) or malformed.
    st.one_of(st.floats(0.0, 40.0, allow_nan=False), st.sampled_from([float("nan"), "x", 2**80])),
    st.one_of(st.none(), st.floats(0.0, 8.0, allow_nan=False), st.sampled_from([-1.0, 1e300])),
    st.integers(0, len(SOURCES) + 1),                 # the last two are not addresses
    st.integers(0, len(DESTINATIONS)),                # the last one is not a string
    st.sampled_from(BYTES + [-3, True]),
    st.sampled_from(BYTES),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, batches=st.lists(st.tuples(st.lists(flow, max_size=40),
                                                  st.integers(0, 30)), max_size=5))
def test_replays_agree(both: tuple[type, type], config: dict[str, Any],
                       batches: list[tuple[list[tuple[Any, ...]], int]]) -> None:
    """Batches of flows, in any order and with malformed ones, replay alike on both cores."""
    raised: list[list[tuple[str, str, float]]] = [[], []]
    trackers = [cls(clock=lambda: 0.0, **config) for cls in both]
    for t, seen in zip(trackers, raised, strict=True):
        t.add_finding_callback(lambda f, seen=seen: seen.append((f.source, f.pattern, f.first_seen)))
    sources = SOURCES + ["not an address", 7]
    destinations: list[object] = [*DESTINATIONS, None]
    for i, (flows, keep) in enumerate(batches + [([], 0)]):
        columns = list(zip(*flows, strict=True)) if flows else [(), (), (), (), (), ()]
        starts, durations, si, di, sent, received = columns
        args = (list(starts), list(durations), [sources[k] for k in si],
                [destinations[k] for k in di], list(sent), list(received))
        results = [t.replay(*args, keep=None if i == len(batches) else keep) for t in trackers]
        assert results[0] == results[1]
        assert trackers[0].replay_clock == trackers[1].replay_clock
        assert observe(trackers[0], 50.0) == observe(trackers[1], 50.0)
    assert raised[0] == raised[1]
    named = [d for d in DESTINATIONS if d] + [None]
    assert trackers[0].destination_classes(named) == trackers[1].destination_classes(named)
    for t in trackers:
        t.check_consistency()
        assert t.active_connections == 0           # every accepted flow was closed at the end


def _around(t: float, steps: int = 2) -> list[float]:
    """t and its ``steps`` neighbouring doubles on each side."""
    out = [t]
    for direction in (-math.inf, math.inf):
        near = t
        for _ in range(steps):
            near = math.nextafter(near, direction)
            out.append(near)
    return out


@pytest.mark.parametrize("window", [0.1, 0.3, 1 / 3, 2.5, 7.7, 1e-3])
def test_window_buckets_agree_at_their_edges(both: tuple[type, type], window: float) -> None:
    """Times on either side of bucket edges k * window (where the product and
    the quotient round differently) roll the windows alike on both cores; so
    do times so large that whole buckets lie between neighbouring doubles,
    and times that run back."""
    edges = sorted({t for k in (1, 2, 3, 7, 1000, 10**6, 10**9)
                    for t in _around(k * window)})
    far = [t for k in range(4) for t in _around(1e14 + k * window)]
    trackers = [cls(window=window, clock=lambda: 0.0, seed=5) for cls in both]
    sources = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    # Then back down through the same edges, and up again: times before the
    # table's latest bucket take the other way to the same answer.
    for step, now in enumerate(edges + far + edges[::-1] + edges):
        for t in trackers:
            # The first source comes at every time, the others now and then,
            # so their last-seen times lag one bucket or more behind.
            for i, source in enumerate(sources):
                if step % (i + 1) == 0:
                    t.accept(source, "mx.example:25", now=now)
                    t.close(source, now=now)
        compiled, pure = ([t.stats(s, now=now) for s in sources] + t.top(3, by="rate", now=now)
                          for t in trackers)
        assert compiled == pure, now
