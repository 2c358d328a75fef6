"""RateLimiter: tatanka's broadcast_rate_limiter_test.go cases, on both cores."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from connguard import RateDecision

Make = Callable[..., Any]


def drain(limiter: Any, key: str, n: int = 8) -> None:
    for i in range(n):
        assert limiter.allow(key), f"request {i + 1} of the burst was refused"


def test_token_bucket_refill(make_limiter: Make, clock: Any) -> None:
    limiter = make_limiter()
    assert limiter.allow("client")                # the first request is always allowed
    drain(limiter, "client", 7)
    assert not limiter.allow("client")            # the bucket is empty
    clock.advance(1.0)                             # 4 tokens come back
    assert limiter.allow("client")


def test_token_bucket_burst_allowance(make_limiter: Make) -> None:
    limiter = make_limiter()
    drain(limiter, "client", 8)
    assert not limiter.allow("client")


def test_token_bucket_rate_enforcement(make_limiter: Make, clock: Any) -> None:
    limiter = make_limiter()
    drain(limiter, "client")
    assert not limiter.allow("client")
    clock.advance(0.1)                             # 0.4 tokens
    assert not limiter.allow("client")
    clock.advance(0.2)                             # 1.2 tokens at +300 ms
    assert limiter.allow("client")


def test_violation_counting(make_limiter: Make) -> None:
    limiter = make_limiter()
    drain(limiter, "client")
    for i in range(3):                             # warnings first
        decision = limiter.check("client")
        assert not decision and decision.infraction is None, i
    assert limiter.check("client").infraction == "rate_limit_violation"


def test_violation_window_expiry(make_limiter: Make, clock: Any) -> None:
    limiter = make_limiter()
    drain(limiter, "client")
    for _ in range(5):
        limiter.allow("client")
    assert limiter.state("client")[1] == 5
    clock.advance(300.0 + 0.1)                     # past the 5-minute window
    drain(limiter, "client")                       # the bucket refilled
    assert limiter.check("client").infraction is None   # the count restarted: a warning
    assert limiter.state("client")[1] == 1


def test_violation_abuse_threshold(make_limiter: Make) -> None:
    limiter = make_limiter()
    drain(limiter, "client")
    decisions = [limiter.check("client") for _ in range(10)]
    assert [d.infraction for d in decisions] == [None] * 3 + ["rate_limit_violation"] * 6 + [
        "rate_limit_abuse"]
    assert limiter.check("client").infraction == "rate_limit_abuse"   # and later ones too


def test_new_client_first_broadcast(make_limiter: Make) -> None:
    decision = make_limiter().check("new-client")
    assert decision and decision.allowed and decision.infraction is None


def test_concurrent_broadcasts_allow_exactly_the_burst(make_limiter: Make) -> None:
    limiter = make_limiter()                       # the fake clock stands still: no refill
    allowed = []

    def work() -> None:
        allowed.append(sum(limiter.allow("client") for _ in range(100)))

    threads = [threading.Thread(target=work) for _ in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(allowed) == 8
    assert limiter.state("client")[1] == 1000 - 8


def test_multiple_independent_clients(make_limiter: Make) -> None:
    limiter = make_limiter()
    drain(limiter, "client1")
    assert not limiter.allow("client1")
    assert limiter.allow("client2")


# --- beyond tatanka ------------------------------------------------------------

def test_decision_is_truthy_only_when_allowed() -> None:
    assert RateDecision(True, None)
    assert not RateDecision(False, "rate_limit_abuse")


def test_keys_are_any_text_case_sensitive(make_limiter: Make) -> None:
    limiter = make_limiter(rate=1.0, burst=1.0)
    for key in ("QmPeer", "qmpeer", "198.51.100.7", "", "例え", "x" * 10_000):
        assert limiter.allow(key), key
        assert not limiter.allow(key), key


@pytest.mark.parametrize("key", [None, 5, b"peer"], ids=repr)
def test_non_str_key_is_a_type_error(make_limiter: Make, key: Any) -> None:
    limiter = make_limiter()
    with pytest.raises(TypeError, match="key"):
        limiter.allow(key)
    assert limiter.counters()[2] == 0


def test_memory_is_bounded_and_idle_keys_give_way(make_limiter: Make, clock: Any) -> None:
    limiter = make_limiter(capacity=64, shards=1)
    drain(limiter, "hot")
    for i in range(1_000):
        clock.advance(0.001)
        limiter.allow(f"spray-{i}")
        assert limiter.counters()[2] <= 64
    assert limiter.counters()[4] > 900             # evictions were counted


def test_time_going_backwards_refills_nothing(make_limiter: Make, clock: Any) -> None:
    limiter = make_limiter()
    drain(limiter, "client")
    assert not limiter.allow("client", now=clock.now - 50.0)
    assert limiter.state("client")[0] < 1.0


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"rate": 0}, ValueError, "rate"),
    ({"burst": 0.5}, ValueError, "burst"),
    ({"rate": "4"}, TypeError, "rate"),
    ({"abuse_after": 3}, ValueError, "abuse_after"),
    ({"violation_window": -1}, ValueError, "violation_window"),
    ({"capacity": 0}, ValueError, "capacity"),
])
def test_bad_configuration_is_named(make_limiter: Make, kwargs: dict[str, Any], error: type,
                                    match: str) -> None:
    with pytest.raises(error, match=match):
        make_limiter(**kwargs)
