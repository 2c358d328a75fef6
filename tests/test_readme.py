"""The README's Python examples run, each on its own, on each core.

Each block may use what its prose takes as given (a peer address, a socket
to serve, a ``guard``); those names are made anew for every block, nothing
else, so a block that needs a name only another block defines fails. The
examples' fixed ports become free ones and the fleet's Redis URL a real
redis-server's on loopback. The blocks run in a fresh interpreter, so the
global registry and the process-wide listener they set do not outlive the
test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .redis_server import redis_url_fixture  # noqa: F401  (fixture)

README = Path(__file__).resolve().parent.parent / "README.md"

RUNNER = r'''
import ast, asyncio, json, logging, re, sys, urllib.request

import connguard as cg

blocks, redis_url = json.loads(sys.argv[1]), sys.argv[2]
if {"pure": cg.COMPILED, "compiled": not cg.COMPILED}[sys.argv[3]]:
    sys.exit(f"not on the {sys.argv[3]} core")
logged = []
handler = logging.Handler()
handler.emit = lambda record: logged.append(record.getMessage())
logging.getLogger("connguard").addHandler(handler)


async def app(scope, receive, send):                      # the ASGI app a block wraps
    pass


async def handle_stream(reader, writer):                  # an asyncio connection handler
    writer.close()


published, started = [], []


def given():
    """What the prose takes as given, made anew for each block."""
    return {
        "cg": cg, "asyncio": asyncio, "peer": "203.0.113.7", "destination": "mail.example.net:25",
        "sock": None, "reject": lambda sock: None, "serve": lambda sock: None,
        "handle": lambda connection: None, "n_in": 4_200, "n_out": 380, "app": app,
        "guard": cg.Guard(), "tracker": cg.Tracker(), "secret_key": "readme-example-secret-key",
        "publish": published.append, "peer_node": cg.BanManager(), "other": cg.BanManager(),
        "infraction": cg.BanManager(node_id="elsewhere").report("198.51.100.9", "malformed_message"),
        "peer_id": "peer-42", "started": started}


for line, code in blocks:
    ns = given()
    if "asyncio.start_server" in code:
        ns["handle"] = handle_stream
    code = (code.replace('start_http_server(9108, addr="127.0.0.1")',
                         'started.append(start_http_server(0, addr="127.0.0.1"))')
                .replace('"127.0.0.1", 8080)', '"127.0.0.1", 0)')
                .replace("redis://127.0.0.1:6379/0", redis_url))
    compiled = compile(code, f"README.md:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, ns)
    if asyncio.iscoroutine(result):
        async def run(awaited):
            await awaited
            reader, writer = await asyncio.open_connection(
                *ns["server"].sockets[0].getsockname()[:2])
            assert await reader.read() == b""                  # handled: closed by the handler
            writer.close()
            ns["server"].close()
            await ns["server"].wait_closed()
        asyncio.run(run(result))
    if "Pseudonymizer" in code:
        # The log line the block shows, with its pseudonym any pseudonym.
        shown = re.search(r"# (connguard: .*)", code).group(1)
        pattern = re.escape(shown).replace(re.escape(re.search(r"p-[0-9a-f]{16}", shown).group()),
                                           r"p-[0-9a-f]{16}")
        opened = [ns["guard"].open("192.0.2.1", "") for _ in range(256)]   # a flood
        assert any(re.fullmatch(pattern, m) for m in logged), (shown, logged)
        assert not any("192.0.2.1" in m for m in logged), logged
for server, thread in started:                           # the metrics block's exposition
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics") as page:
        assert b"connguard_accepted_total" in page.read()
    server.shutdown()
print(json.dumps({"blocks": len(blocks), "published": len(published)}))
'''


def python_blocks(text: str) -> list[tuple[int, str]]:
    """Every fenced python block: (the line of its first code line, its code)."""
    found = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        found.append((text.count("\n", 0, match.start(1)) + 1, match.group(1)))
    return found


@pytest.mark.timeout(120)
def test_the_readme_examples_run(core: ModuleType, redis_url: str) -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 10
    name = "pure" if core.__name__.endswith("_core_py") else "compiled"
    env = dict(os.environ)
    if name == "pure":
        env["CONNGUARD_NO_EXTENSIONS"] = "1"
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(blocks), redis_url, name],
                          capture_output=True, text=True, timeout=110, env=env, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"blocks": len(blocks), "published": 1}    # the Bans block's one ban
