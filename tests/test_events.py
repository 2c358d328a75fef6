"""The listener registry: lantern-box peerconn's cases, the split pair, raising listeners."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import connguard as cg
from connguard import events


@pytest.fixture(autouse=True)
def no_listener() -> Iterator[None]:
    cg.set_listener(None)
    yield
    cg.set_listener(None)


class Recorder:
    def __init__(self) -> None:
        self.events: list[cg.Event] = []

    def __call__(self, event: cg.Event) -> None:
        self.events.append(event)


# --- peerconn's cases -------------------------------------------------------------

def test_no_listener_is_a_noop() -> None:
    cg.notify_accept("203.0.113.1", "a:443")
    cg.notify_close("203.0.113.1")
    cg.notify(cg.Event(cg.ACCEPT, "203.0.113.1"))
    with cg.connection("203.0.113.1", "a:443"):
        pass
    assert cg.acquire() is None


def test_events_arrive_in_order_and_exactly() -> None:
    rec = Recorder()
    cg.set_listener(rec)
    cg.notify_accept("203.0.113.1", "a:443")
    cg.notify_accept("203.0.113.2", "b:25")
    cg.notify_close("203.0.113.1")
    cg.notify(cg.Event(cg.CLOSE, "203.0.113.2"))
    assert rec.events == [cg.Event(1, "203.0.113.1", "a:443"), cg.Event(1, "203.0.113.2", "b:25"),
                          cg.Event(-1, "203.0.113.1"), cg.Event(-1, "203.0.113.2")]


def test_last_writer_wins() -> None:
    first, second = Recorder(), Recorder()
    cg.set_listener(first)
    cg.set_listener(second)
    cg.notify_accept("203.0.113.1")
    assert first.events == [] and len(second.events) == 1


def test_none_unregisters() -> None:
    rec = Recorder()
    cg.set_listener(rec)
    cg.set_listener(None)
    cg.notify_accept("203.0.113.1")
    assert rec.events == [] and cg.acquire() is None


def test_acquire_returns_the_listener() -> None:
    assert cg.acquire() is None
    rec = Recorder()
    cg.set_listener(rec)
    assert cg.acquire() is rec


def test_pair_carries_destination_and_bytes() -> None:
    rec = Recorder()
    cg.set_listener(rec)
    with cg.connection("203.0.113.1", "mx.example:25") as conn:
        conn.sent = 1200
    assert rec.events == [cg.Event(cg.ACCEPT, "203.0.113.1", "mx.example:25"),
                          cg.Event(cg.CLOSE, "203.0.113.1", "mx.example:25", 1200, None)]
    conn.close(sent=5, received=5)                   # closed already: nothing more is sent
    cg.notify_close("203.0.113.2", sent=0, received=0)
    assert rec.events[2:] == [cg.Event(cg.CLOSE, "203.0.113.2", "", 0, 0)]


def test_listeners_take_close_bytes_and_drop_bad_ones(make_tracker: Callable[..., Any]) -> None:
    t = make_tracker()
    cg.set_listener(t)
    for i in range(3):
        with cg.connection("203.0.113.9", f"192.0.2.{i}:22") as conn:
            conn.sent, conn.received = 0, 0          # failed: the mark of a scan
    cg.notify_accept("203.0.113.9", "192.0.2.9:22")
    cg.notify_close("203.0.113.9", sent=-1, received="x")  # type: ignore[arg-type]
    stats = t.stats("203.0.113.9")
    assert stats is not None and stats.active == 0 and stats.total == 4
    assert t.unattributed == 0                       # the bad counts were read as unknown


def test_pair_survives_replacement() -> None:
    first, second = Recorder(), Recorder()
    cg.set_listener(first)
    conn = cg.connection("203.0.113.1", "a:443")
    cg.set_listener(second)
    conn.close()
    assert [e.direction for e in first.events] == [cg.ACCEPT, cg.CLOSE]
    assert second.events == []


def test_pair_completes_after_unregister() -> None:
    rec = Recorder()
    cg.set_listener(rec)
    with cg.connection("203.0.113.1"):
        cg.set_listener(None)
    assert [e.direction for e in rec.events] == [cg.ACCEPT, cg.CLOSE]


# --- the split pair and raising listeners -------------------------------------------

def test_two_separate_reads_split_a_pair_and_connection_does_not() -> None:
    first, second = Recorder(), Recorder()
    cg.set_listener(first)
    cg.notify_accept("203.0.113.1")                 # the Go original's way...
    cg.set_listener(second)
    cg.notify_close("203.0.113.1")                  # ...splits the pair
    assert [e.direction for e in first.events] == [cg.ACCEPT]
    assert [e.direction for e in second.events] == [cg.CLOSE]
    first.events.clear()
    second.events.clear()
    cg.set_listener(first)
    with cg.connection("203.0.113.2"):
        cg.set_listener(second)
    assert [e.direction for e in first.events] == [cg.ACCEPT, cg.CLOSE] and second.events == []


def test_close_is_idempotent_and_sent_on_exceptions() -> None:
    rec = Recorder()
    cg.set_listener(rec)
    conn = cg.connection("203.0.113.1")
    conn.close()
    conn.close()
    with pytest.raises(RuntimeError), cg.connection("203.0.113.2"):
        raise RuntimeError("the handler failed")
    assert [e.direction for e in rec.events] == [cg.ACCEPT, cg.CLOSE, cg.ACCEPT, cg.CLOSE]


def test_raising_listener_never_reaches_the_emitter(caplog: Any) -> None:
    calls = []

    def broken(event: cg.Event) -> None:
        calls.append(event)
        raise RuntimeError("listener bug")

    cg.set_listener(broken)
    before = events.listener_errors()
    with caplog.at_level(logging.ERROR, logger="connguard.events"):
        for _ in range(500):
            with cg.connection("203.0.113.1", "a:443"):
                cg.notify_accept("203.0.113.9")
    assert len(calls) == 1_500
    assert events.listener_errors() - before == 1_500
    records = [r for r in caplog.records if r.name == "connguard.events"]
    assert len(records) <= 1                        # rate-limited, not one per event
    if records:
        assert records[0].exc_info is not None


def test_set_listener_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="callable"):
        cg.set_listener("tracker")  # type: ignore[arg-type]


def test_event_is_frozen_cheap_and_comparable() -> None:
    e = cg.Event(cg.ACCEPT, "203.0.113.1", "a:443")
    with pytest.raises(AttributeError):
        e.direction = cg.CLOSE  # type: ignore[misc]
    assert not hasattr(e, "__dict__")
    assert e == cg.Event(1, "203.0.113.1", "a:443") and e < cg.Event(1, "203.0.113.2")
    assert cg.Event(cg.CLOSE, "x").destination == ""


def test_pairs_stay_whole_while_listeners_are_swapped_concurrently() -> None:
    recorders = [Recorder() for _ in range(4)]
    lock = threading.Lock()

    def counted(rec: Recorder) -> Callable[[cg.Event], None]:
        def listener(event: cg.Event) -> None:
            with lock:
                rec(event)
        return listener

    listeners = [counted(r) for r in recorders]
    stop = threading.Event()

    def swapper() -> None:
        i = 0
        while not stop.is_set():
            cg.set_listener(listeners[i % 4])
            i += 1

    def emitter() -> None:
        for _ in range(2_000):
            with cg.connection("203.0.113.1"):
                pass

    swap = threading.Thread(target=swapper)
    swap.start()
    workers = [threading.Thread(target=emitter) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    swap.join()
    for rec in recorders:                            # every listener saw whole pairs
        states = [e.direction for e in rec.events]
        assert states.count(cg.ACCEPT) == states.count(cg.CLOSE)
    assert sum(len(r.events) for r in recorders) == 4 * 2_000 * 2


# --- a Tracker is a listener ---------------------------------------------------------

def test_tracker_as_listener_counts_pairs(make_tracker: Callable[..., Any]) -> None:
    t = make_tracker()
    cg.set_listener(t)
    with cg.connection("203.0.113.1:5000", "mx.example:25"):
        with cg.connection("[2001:db8::1]:443", "a:443"):
            assert t.active_connections == 2
    assert t.active_connections == 0
    s = t.stats("203.0.113.1")
    assert s.total == 1 and s.by_class["smtp"] == 1


@pytest.mark.parametrize("event", [
    cg.Event(cg.ACCEPT, ""), cg.Event(cg.ACCEPT, "garbage"), cg.Event(cg.CLOSE, "999.1.1.1"),
    cg.Event(cg.ACCEPT, None), cg.Event(cg.ACCEPT, "203.0.113.1", 5),  # type: ignore[arg-type]
    cg.Event(0, "203.0.113.1"),
], ids=repr)
def test_tracker_counts_unattributed_events_and_never_raises(make_tracker: Callable[..., Any],
                                                             event: cg.Event) -> None:
    t = make_tracker()
    cg.set_listener(t)
    errors = events.listener_errors()
    cg.notify(event)
    assert t.unattributed == 1
    assert t.counters() == (0, 0, 0, 0, 0, 0)
    assert events.listener_errors() == errors       # handled by the tracker, not the registry
