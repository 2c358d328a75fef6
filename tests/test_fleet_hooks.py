"""What the fleet needs from a BanManager: watch/unwatch and netblock, on both cores (no Redis)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connguard import Infraction
from connguard.bans import Watch

Make = Callable[..., Any]


def recorder() -> tuple[Watch, list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []
    watch = Watch(on_report=lambda i: seen.append(("report", i)),
                  on_ban=lambda c: seen.append(("ban", c)),
                  on_unban=lambda c: seen.append(("unban", c)))
    return watch, seen


def test_watch_sees_this_nodes_own_commands_only(make_bans: Make, clock: Any) -> None:
    b = make_bans(allow=["10.0.0.0/8"])
    watch, seen = recorder()
    b.watch(watch)
    infraction = b.report("203.0.113.1", "malformed_message")
    b.report("10.1.2.3", "malformed_message")                  # allow-listed: not recorded
    b.apply({"id": "peer:1", "source": "203.0.113.2", "kind": "impersonation",
             "created": clock.now, "node": "peer"})            # another node's: not ours
    b.restore({"version": 1, "infractions": [
        {"id": "peer:2", "source": "203.0.113.3", "kind": "impersonation",
         "created": clock.now, "node": "peer"}]})
    b.ban("2001:db8::1", 60.0)
    b.ban("2001:db8::1", 600.0)                                # lengthening: seen too
    assert b.unban("2001:db8::1")
    assert not b.unban("198.51.100.9")                         # nothing here: still seen
    assert seen == [
        ("report", infraction),
        ("ban", ("2001:db8::/64", 60.0, clock.now)),
        ("ban", ("2001:db8::/64", 600.0, clock.now)),
        ("unban", ("2001:db8::/64", clock.now)),
        ("unban", ("198.51.100.9", clock.now)),
    ]
    assert isinstance(seen[0][1], Infraction) and seen[0][1].node == "this-node"
    assert b.unwatch(watch) and not b.unwatch(watch)
    b.report("203.0.113.1", "malformed_message")
    assert len(seen) == 5


def test_a_watch_that_raises_is_logged_and_the_others_still_run(
        make_bans: Make, caplog: pytest.LogCaptureFixture) -> None:
    b = make_bans()
    watch, seen = recorder()

    def fail(_: object) -> None:
        raise RuntimeError("full")

    b.watch(Watch(on_report=fail))
    b.watch(watch)
    b.report("203.0.113.1", "malformed_message")
    assert [kind for kind, _ in seen] == ["report"]
    assert "a ban callback raised" in caplog.text


def test_watch_arguments_are_checked(make_bans: Make) -> None:
    b = make_bans()
    with pytest.raises(TypeError, match="watch must be a connguard.bans.Watch"):
        b.watch(lambda i: None)
    with pytest.raises(TypeError, match="on_ban must be callable"):
        b.watch(Watch(on_ban=5))                               # type: ignore[arg-type]


def test_netblock_names_a_source_as_records_do(make_bans: Make) -> None:
    b = make_bans(ipv4_prefix=24)
    assert b.netblock("203.0.113.77") == "203.0.113.0/24"
    assert b.netblock("2001:db8::1") == "2001:db8::/64"
    assert b.netblock("2001:db8::/48") == "2001:db8::/64"         # another node's text, re-masked
    with pytest.raises(ValueError):
        b.netblock("not-an-address")


def test_unban_before_forgives_only_what_came_before(make_bans: Make, clock: Any) -> None:
    b = make_bans()
    for _ in range(10):
        b.report("203.0.113.1", "malformed_message")
    cut = clock.now
    clock.advance(10.0)
    later = b.report("203.0.113.1", "impersonation")
    assert b.score("203.0.113.1") == 20
    assert b.unban("203.0.113.1", before=cut)
    assert b.is_banned("203.0.113.1") and b.score("203.0.113.1") == 10    # the later one stays
    (ban,) = b.banned()
    assert ban.until == pytest.approx(later.expires)
    assert b.apply({"id": b.snapshot()["infractions"][0]["id"], "source": "203.0.113.1",
                    "kind": "impersonation", "created": later.created, "node": "this-node"}) is False
    for _ in range(10):
        b.report("198.51.100.1", "malformed_message")
    assert b.unban("198.51.100.1", before=clock.now)                        # all of them: lifted
    assert not b.is_banned("198.51.100.1") and b.score("198.51.100.1") == 0
    with pytest.raises(ValueError, match="before must be a finite number"):
        b.unban("198.51.100.1", before=float("nan"))
