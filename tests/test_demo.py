"""The README's first command: connguard demo over real loopback sockets."""

from __future__ import annotations

import sys

import pytest

from connguard.cli import main


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="binds 127.0.0.x client addresses")
def test_demo_flags_the_holder_and_the_mailer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--hold", "260", "--mail", "250"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  127.")}
    assert "FLAGGED conn_flood,conn_rate" in lines["127.0.0.66"] and "active  260" in lines["127.0.0.66"]
    assert "FLAGGED conn_rate" in lines["127.0.0.77"] and "mostly smtp" in lines["127.0.0.77"]
    assert "FLAGGED" not in lines["127.0.0.10"]
    assert "active connections 0; its patterns now: conn_rate" in out   # the flood flag cleared at zero
