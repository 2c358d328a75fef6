"""Privacy: addresses reach logs only for flagged or banned sources, pseudonymised with a key."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from connguard import Pseudonymizer

Make = Callable[..., Any]
KEY = b"0123456789abcdef-test-key"
ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+|[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,}")


def traffic(g: Any) -> tuple[list[str], list[str], list[str]]:
    """Ordinary sources, a flooder and a reported source; returns their texts."""
    ordinary = [f"198.51.100.{i}" for i in range(100)] + [f"2001:db8:{i:x}::1" for i in range(100)]
    for source in ordinary:
        g.accept(source, "www.example:443")
        g.close(source)
    flooders = ["203.0.113.7", "2001:db8:ffff::9"]
    for source in flooders:
        for _ in range(3):
            g.accept(source, "www.example:443")
    banned = ["192.0.2.44", "2001:db8:eeee::4"]
    for source in banned:
        g.report(source, "impersonation")
    return ordinary, flooders, banned


def guard_logs(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("connguard")]


def test_logs_name_only_flagged_and_banned_sources(make_guard: Make, caplog: Any) -> None:
    g = make_guard(tracker={"concurrent_threshold": 3}, limiter=False)
    with caplog.at_level(logging.WARNING, logger="connguard"):
        ordinary, flooders, banned = traffic(g)
        for _ in range(3):                            # flagged once, not again
            g.accept(flooders[0])
    text = "\n".join(guard_logs(caplog))
    for source in ordinary:
        assert source not in text
    assert "203.0.113.7 flagged conn_flood" in text and text.count("203.0.113.7 flagged") == 1
    assert "2001:db8:ffff::/64 flagged conn_flood" in text
    assert "threshold 3" in text and "active 3" in text
    assert "banned 192.0.2.44 until" in text and "banned 2001:db8:eeee::/64 until" in text
    assert len(guard_logs(caplog)) == 4


def test_with_a_key_logs_show_pseudonyms_only(make_guard: Make, caplog: Any, clock: Any) -> None:
    pseudonymizer = Pseudonymizer(KEY, clock=clock)
    g = make_guard(tracker={"concurrent_threshold": 3}, limiter=False,
                   bans={"pseudonymizer": pseudonymizer}, pseudonymizer=pseudonymizer)
    with caplog.at_level(logging.WARNING, logger="connguard"):
        traffic(g)
    lines = guard_logs(caplog)
    assert len(lines) == 4
    for line in lines:
        assert not ADDRESS.search(line), line
        assert re.search(r"\bp-[0-9a-f]{16}\b", line), line
    assert pseudonymizer("203.0.113.7") in lines[0]


def test_pseudonyms_are_stable_within_a_period_and_unlinkable_across(clock: Any) -> None:
    p = Pseudonymizer(KEY, rotate="daily", clock=clock)
    first = p("203.0.113.7")
    assert p("203.0.113.7") == first != p("203.0.113.8")
    clock.advance(86_400)
    assert p("203.0.113.7") != first                  # a new day, a new pseudonym
    assert Pseudonymizer(b"another-secret-key!!", clock=clock)("203.0.113.7") != p("203.0.113.7")
    fixed = Pseudonymizer(KEY, rotate=None)
    assert fixed("203.0.113.7", now=0) == fixed("203.0.113.7", now=10**9)
    assert "0123456789" not in repr(p)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"key": b"short"}, "16 bytes"), ({"key": KEY, "rotate": "yearly"}, "rotate"),
    ({"key": KEY, "length": 4}, "length"),
])
def test_bad_pseudonymizer_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Pseudonymizer(**kwargs)


def test_with_a_key_a_failing_on_finding_logs_no_address(make_guard: Make, caplog: Any,
                                                         clock: Any) -> None:
    """The callback's own error may carry the address (a KeyError of the source does):
    counted and logged, but neither its message nor its traceback."""
    pseudonymizer = Pseudonymizer(KEY, clock=clock)
    seen: dict[str, int] = {}

    def on_finding(finding: Any) -> None:
        seen[finding.source] += 1                     # KeyError: '203.0.113.7'

    g = make_guard(tracker={"concurrent_threshold": 3}, limiter=False,
                   bans={"pseudonymizer": pseudonymizer}, pseudonymizer=pseudonymizer,
                   on_finding=on_finding)
    with caplog.at_level(logging.WARNING, logger="connguard"):
        traffic(g)
    assert g.tracker.finding_errors == 2              # both flooders' findings
    assert "on_finding raised KeyError (not shown: a pseudonymizer is set)" in caplog.text
    assert not ADDRESS.search(caplog.text), caplog.text
