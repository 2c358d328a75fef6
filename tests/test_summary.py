"""Summarizer: bounded, JSON-able interval summaries, on both cores."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from connguard import _core
from connguard.privacy import Pseudonymizer
from connguard.summary import Summarizer

from .conftest import FakeClock

Make = Callable[..., Any]


def traffic(t: Any, now: float) -> None:
    for i in range(30):                              # 30 sources, 1 to 30 connections each
        for _ in range(i + 1):
            t.accept(f"198.51.100.{i}", "www.example:443", now=now)
    for i in range(60):                              # and a relay
        t.accept("203.0.113.25", f"mx{i % 12}.example.net:25", now=now)


def test_interval_summary_counts_classes_ranks_and_is_json(make_tracker: Make) -> None:
    clock = FakeClock(1_200.0)
    t = make_tracker(clock=clock, window=300.0)     # the top list covers the whole interval
    s = Summarizer(t, interval=300, top=5, clock=clock)
    traffic(t, 1_200.0)
    clock.advance(299)
    summary = s.summarize()
    assert summary is not None
    assert json.loads(json.dumps(summary)) == summary
    assert (summary["start"], summary["end"]) == (1_200.0, 1_499.0)
    assert summary["accepts"]["https"] == sum(range(1, 31)) and summary["accepts"]["smtp"] == 60
    assert summary["total_accepts"] == 465 + 60
    assert summary["findings"]["spam_relay"] == 1
    assert summary["flagged_sources"]["spam_relay"] == 1
    top = summary["top"]
    assert [e["source"] for e in top] == ["203.0.113.25"] + [f"198.51.100.{i}" for i in (29, 28, 27, 26)]
    assert top[0]["patterns"] == ["spam_relay"] and top[1]["by_class"]["https"] == 30
    # The next interval saw nothing: no summary; then only what is new counts.
    clock.advance(300)
    assert s.summarize() is None
    t.accept("198.51.100.1", "a.example:53", now=clock.now)
    clock.advance(1)
    again = s.summarize()
    assert again is not None and again["total_accepts"] == 1 and again["accepts"]["dns"] == 1
    assert again["start"] == 1_799.0


def test_a_tracker_on_its_default_clock_gets_wall_clock_stamps(make_tracker: Make) -> None:
    """Monotonic seconds since boot mean nothing to a collector of many hosts."""
    t = make_tracker(clock=None)
    before = time.time()
    s = Summarizer(t)
    t.accept("192.0.2.1", "a:443")
    summary = s.summarize()
    assert summary is not None
    assert before - 0.1 <= summary["start"] <= summary["end"] <= time.time() + 0.1
    t.accept("192.0.2.1", "a:443")
    later = s.summarize(now=_core.core.default_clock() + 10.0)   # now= in the tracker's time
    assert later is not None and later["start"] == summary["end"]
    assert later["end"] == pytest.approx(time.time() + 10.0, abs=1.0)


@pytest.mark.parametrize(("now", "error", "match"), [
    ("12", TypeError, "now must be a real number of seconds, not str"),
    (float("nan"), ValueError, "now must be a finite number of seconds"),
    (10**400, ValueError, "now must be a finite number of seconds"),
], ids=["text", "nan", "beyond-a-float"])
def test_now_is_checked_as_the_tracker_checks_it(make_tracker: Make, now: Any,
                                                 error: type[Exception], match: str) -> None:
    """With top=0 the tracker never sees now=: the Summarizer checks it itself."""
    t = make_tracker()
    s = Summarizer(t, top=0)
    t.accept("192.0.2.1", "a:443", now=0.0)
    with pytest.raises(error, match=match):
        s.summarize(now=now)
    assert s.summarize(now=5.0) is not None            # the interval was not closed


def test_top_is_bounded_and_ranked_like_top(make_tracker: Make) -> None:
    t = make_tracker(shards=8)
    s = Summarizer(t, top=7)
    for i in range(500):
        for _ in range(i % 13 + 1):
            t.accept(f"10.1.{i // 256}.{i % 256}", "x.example:443", now=50.0)
    summary = s.summarize(now=50.0)
    assert summary is not None
    expected = [st.source for st in t.top(7, by="rate", now=50.0)]
    assert [e["source"] for e in summary["top"]] == expected
    t.accept("10.9.9.9", now=50.0)
    assert s.summarize(now=50.0)["top"][0]["source"] == "10.1.0.12"   # type: ignore[index]
    empty = Summarizer(t, top=0)
    t.accept("10.9.9.9", now=50.0)
    assert empty.summarize(now=50.0)["top"] == []   # type: ignore[index]


def test_sources_are_pseudonymised(make_tracker: Make) -> None:
    t = make_tracker()
    pseudonym = Pseudonymizer(b"k" * 32, rotate=None)
    s = Summarizer(t, top=3, pseudonymizer=pseudonym)
    traffic(t, 10.0)
    text = json.dumps(s.summarize(now=20.0))
    assert "198.51.100" not in text and "203.0.113" not in text
    assert pseudonym("203.0.113.25") in text


def test_thread_emits_and_stop_emits_the_last(make_tracker: Make) -> None:
    t = make_tracker(clock=None)
    got: list[dict[str, Any]] = []
    emitted = threading.Event()

    def collect(summary: dict[str, Any]) -> None:
        got.append(summary)
        emitted.set()

    s = Summarizer(t, interval=0.05, on_summary=collect).start()
    with pytest.raises(RuntimeError):
        s.start()
    t.accept("192.0.2.1", "a:443")
    assert emitted.wait(5)
    t.accept("192.0.2.2", "b:443")
    s.stop()
    assert sum(summary["total_accepts"] for summary in got) == 2


def test_callback_errors_are_logged_and_counted(make_tracker: Make,
                                               caplog: pytest.LogCaptureFixture) -> None:
    t = make_tracker()

    def broken(summary: dict[str, Any]) -> None:
        raise RuntimeError("collector down")

    s = Summarizer(t, on_summary=broken)
    t.accept("192.0.2.1", now=1.0)
    with caplog.at_level(logging.ERROR, logger="connguard.summary"):
        assert s.stop() is not None
    assert s.errors == 1 and "on_summary" in caplog.text


def test_async_summary_matches(make_tracker: Make) -> None:
    t = make_tracker()
    s = Summarizer(t, top=3)
    traffic(t, 5.0)
    summary = asyncio.run(s.asummarize(now=6.0))
    assert summary is not None and summary["top"][0]["source"] == "203.0.113.25"


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"interval": 0}, ValueError), ({"top": -1}, ValueError), ({"top": 10**6}, ValueError),
    ({"on_summary": 3}, TypeError), ({"pseudonymizer": "k"}, TypeError)])
def test_bad_arguments_name_the_field(make_tracker: Make, kwargs: dict[str, Any],
                                      error: type[Exception]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(error, match=name):
        Summarizer(make_tracker(), **kwargs)
    with pytest.raises(TypeError, match="tracker"):
        Summarizer(object())  # type: ignore[arg-type]
