"""The README's first command: connguard demo over real loopback sockets."""

from __future__ import annotations

import sys

import pytest

from connguard.cli import main


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="binds 127.0.0.x client addresses")
def test_demo_flags_the_holder_and_the_mailer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--hold", "260", "--mail", "250"]) == 0
    out = capsys.readouterr().out
    top, _, findings = out.partition("findings (pattern, evidence):")
    lines = {line.split()[0]: line for line in top.splitlines() if line.startswith("  127.")}
    assert "FLAGGED conn_flood,conn_rate" in lines["127.0.0.66"] and "active  260" in lines["127.0.0.66"]
    assert "FLAGGED conn_rate,spam_relay" in lines["127.0.0.77"] and "mostly smtp" in lines["127.0.0.77"]
    assert "FLAGGED" not in lines["127.0.0.10"]
    found = {tuple(line.split()[:2]) for line in findings.splitlines() if line.startswith("  127.")}
    assert ("127.0.0.77", "spam_relay") in found and ("127.0.0.66", "conn_flood") in found
    assert not any(source == "127.0.0.10" for source, _ in found)
    assert "active connections 0; its patterns now: conn_rate" in out   # the flood flag cleared at zero
