"""``connguard bans`` end to end: nodes on both cores, a real redis-server, the command."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from connguard.cli import bans as cli

from .redis_server import (  # noqa: F401  (fixtures)
    MakeNode,
    client,
    free_port,
    make_node_fixture,
    redis_url_fixture,
    stream_fixture,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_list_and_show_read_the_fleets_state(make_node: MakeNode, redis_url: str, stream: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    a, fa = make_node("a")
    for _ in range(3):
        a.report("203.0.113.5", "malformed_message")
    a.report("2001:db8:1::9", "impersonation")
    a.ban("192.0.2.8", 600.0)
    assert fa.flush(2.0)
    status, out, _ = run(capsys, "list", "--redis", redis_url, "--stream", stream, "--json")
    assert status == 0
    listed = json.loads(out)
    assert [b["source"] for b in listed["bans"]] == ["192.0.2.8", "2001:db8:1::/64"]
    assert listed["entries"] == 5
    # The BanManager's wall clock is time.time() to within a coarse clock tick or two.
    assert 590 < listed["bans"][0]["seconds_left"] <= 600.05
    status, out, _ = run(capsys, "list", "--redis", redis_url, "--stream", stream)
    assert status == 0 and "2001:db8:1::/64" in out and "2 bans in force" in out
    status, out, _ = run(capsys, "show", "203.0.113.5", "--redis", redis_url, "--stream", stream,
                         "--json")
    shown = json.loads(out)
    assert status == 0 and shown["banned"] is False and shown["score"] == 3
    assert [i["kind"] for i in shown["infractions"]] == ["malformed_message"] * 3
    assert {i["node"] for i in shown["infractions"]} == {"a"}
    status, out, _ = run(capsys, "show", "2001:db8:1::1", "--redis", redis_url, "--stream", stream)
    assert status == 0 and out.startswith("2001:db8:1::/64: banned until ")


def test_unban_and_ban_reach_every_node(make_node: MakeNode, redis_url: str, stream: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = make_node("a")
    b, _ = make_node("b")
    a.report("203.0.113.77", "impersonation")
    assert wait_for(lambda: b.is_banned("203.0.113.77"))
    time.sleep(0.05)                    # later than the infraction by more than clocks disagree
    status, out, _ = run(capsys, "unban", "203.0.113.77", "--redis", redis_url, "--stream", stream)
    assert status == 0 and "unban of 203.0.113.77 written" in out
    assert wait_for(lambda: not a.is_banned("203.0.113.77") and not b.is_banned("203.0.113.77"))
    status, out, _ = run(capsys, "list", "--redis", redis_url, "--stream", stream, "--json")
    assert json.loads(out)["bans"] == []                    # and the stream says so too
    status, out, _ = run(capsys, "ban", "198.51.100.3", "120", "--redis", redis_url,
                         "--stream", stream, "--json")
    assert status == 0 and json.loads(out) == {"action": "ban", "source": "198.51.100.3",
                                                "stream": stream, "seconds": 120.0}
    assert wait_for(lambda: a.is_banned("198.51.100.3") and b.is_banned("198.51.100.3"))
    until = a.banned()[0].until          # (a BanManager's wall clock is time.time() +- a little)
    assert time.time() + 110 < until <= time.time() + 121


def test_errors_exit_2_with_a_message(redis_url: str, stream: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    cases = [
        (["list", "--redis", "http://nowhere"], "--redis/--stream: url must be a redis://"),
        (["list", "--redis", down], "cannot use connguard:infractions at 127.0.0.1:"),
        (["ban", "not-an-address", "60", "--redis", redis_url], "SOURCE: "),
        (["ban", "192.0.2.1", "0", "--redis", redis_url], "SECONDS must be a number > 0"),
        (["ban", "192.0.2.1", "inf", "--redis", redis_url], "SECONDS must be a number > 0"),
        (["ban", "192.0.2.1", "1e300", "--redis", redis_url], "and at most 1e+15, got 1e+300"),
        (["show", "nope", "--redis", redis_url, "--stream", stream], "SOURCE: "),
    ]
    for argv, message in cases:
        status, _, err = run(capsys, *argv)
        assert status == 2, argv
        assert err.startswith("connguard bans: ") and message in err, err
    assert client(redis_url).xlen("connguard:infractions") == 0    # nothing was written
    with pytest.raises(SystemExit):
        cli.main(["list"])                                          # --redis is required
    capsys.readouterr()


def test_the_command_in_a_subprocess(make_node: MakeNode, redis_url: str, stream: str) -> None:
    a, fa = make_node("a")
    a.report("192.0.2.44", "impersonation")
    assert fa.flush(2.0)
    result = subprocess.run(
        [sys.executable, "-m", "connguard", "bans", "list", "--redis", redis_url,
         "--stream", stream, "--json"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert [b["source"] for b in json.loads(result.stdout)["bans"]] == ["192.0.2.44"]
    assert result.stderr == ""          # not the BanManager's "banned" line per ban read


def test_a_failed_ban_says_only_that_it_failed() -> None:
    """The throwaway BanManager logs "banned" as the ban starts, before the
    write to Redis: that line is not the command's to print."""
    down = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [sys.executable, "-m", "connguard", "bans", "ban", "192.0.2.45", "60", "--redis", down],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("connguard bans: cannot use connguard:infractions at ")
    assert result.stderr.count("\n") == 1, result.stderr
