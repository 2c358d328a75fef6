"""``connguard proxy`` in a subprocess and ``connguard demo``: real sockets on loopback only.

Clients bind distinct loopback sources (127.0.0.x) where the OS allows it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

TIMEOUT = 10.0


def _loopback_aliases() -> bool:
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _loopback_aliases(),
                                reason="this OS binds only 127.0.0.1 (needs 127.0.0.0/8)")


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture(scope="module")
def target() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class Proxy:
    def __init__(self, tmp: Path, *args: str, config: str = "") -> None:
        cmd = [sys.executable, "-m", "connguard", "proxy", "--listen", "127.0.0.1:0",
               "--metrics", "127.0.0.1:0", "--drain", "1", *args]
        if config:
            (tmp / "proxy.toml").write_text(config)
            cmd += ["--config", str(tmp / "proxy.toml")]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.err = ""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        self.port = int(match.group(1))
        metrics = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/", line)   # none unguarded
        self.metrics_port = int(metrics.group(1)) if metrics else 0

    def tunnel(self, source: str, destination: str) -> tuple[socket.socket, bytes]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT,
                                        source_address=(source, 0))
        sock.sendall(f"CONNECT {destination} HTTP/1.1\r\nHost: {destination}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            if not chunk:
                break
            head += chunk
        return sock, head

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return str(response.read().decode())

    def value(self, name: str) -> float:
        match = re.search(rf"^{re.escape(name)} (\S+)$", self.metrics(), re.MULTILINE)
        assert match, name
        return float(match.group(1))

    def wait_for(self, name: str, expected: float) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.value(name) != expected:
            assert time.monotonic() < deadline, f"{name} never reached {expected}"
            time.sleep(0.02)

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit status and stdout. stderr is kept in ``self.err``."""
        self.process.send_signal(signal.SIGTERM)
        out, self.err = self.process.communicate(timeout=TIMEOUT)
        return self.process.returncode, out


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[list[Proxy]]:
    started: list[Proxy] = []
    yield started
    for proxy in started:
        if proxy.process.poll() is None:
            proxy.process.kill()
            proxy.process.wait(TIMEOUT)


def test_tunnels_carry_bytes_and_flag_a_flood(tmp_path: Path, target: int,
                                              proxies: list[Proxy]) -> None:
    proxy = Proxy(tmp_path, config="[tracker]\nconcurrent_threshold = 20\n")
    proxies.append(proxy)
    sock, head = proxy.tunnel("127.0.0.2", f"127.0.0.1:{target}")
    assert head.startswith(b"HTTP/1.1 200")
    payload = os.urandom(1 << 20)
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        got += sock.recv(65536)
    assert got == payload
    sock.close()
    held = [proxy.tunnel("127.0.0.3", f"127.0.0.1:{target}")[0] for _ in range(25)]
    proxy.wait_for("connguard_active_connections", 25)
    text = proxy.metrics()
    assert 'connguard_findings_total{pattern="conn_flood"} 1.0' in text
    assert "127.0.0." not in text                  # never an address in metrics
    for sock in held:
        sock.close()
    proxy.wait_for("connguard_active_connections", 0)
    status, out = proxy.stop()
    assert status == 0 and "draining" in out


def test_enforce_refuses_a_banned_source_and_serves_others(tmp_path: Path, target: int,
                                                           proxies: list[Proxy]) -> None:
    # The echo target's port counts as mail; four names of 127.0.0.1 are four mail hosts.
    config = (f"[tracker]\nport_classes = {{smtp = [25, {target}]}}\n"
              "[spam_relay]\nconnections = 5\nhosts = 3\nmin_closed = 3\n")
    proxy = Proxy(tmp_path, "--enforce", "--max-open", "3", config=config)
    proxies.append(proxy)
    spammer = "127.0.0.4"
    hosts = ["127.0.0.1", "localhost", "127.1", "2130706433"]
    head = b""
    for i in range(12):                 # mail to many hosts, each answered: spam_relay
        sock, head = proxy.tunnel(spammer, f"{hosts[i % 4]}:{target}")
        if not head.startswith(b"HTTP/1.1 200"):
            break
        sock.sendall(b"HELO x\r\n")
        assert sock.recv(100) == b"HELO x\r\n"
        sock.close()
        time.sleep(0.02)                # let the proxy count the close
    assert head.startswith(b"HTTP/1.1 403"), head     # spam_relay costs 10 points: banned
    sock.close()
    held = [proxy.tunnel("127.0.0.5", f"127.0.0.1:{target}") for _ in range(3)]
    assert all(head.startswith(b"HTTP/1.1 200") for _, head in held)
    sock, head = proxy.tunnel("127.0.0.5", f"127.0.0.1:{target}")
    assert head.startswith(b"HTTP/1.1 503")       # max_open: flood
    sock.close()
    text = proxy.metrics()
    assert 'connguard_rejected_total{reason="banned"}' in text
    assert re.search(r'connguard_rejected_total\{reason="flood"\} [1-9]', text)
    assert "127.0.0." not in text
    for sock, _ in held:
        sock.close()
    proxy.wait_for("connguard_active_connections", 0)
    assert proxy.stop()[0] == 0


def test_sigterm_drains_open_tunnels(tmp_path: Path, target: int, proxies: list[Proxy]) -> None:
    proxy = Proxy(tmp_path)
    proxies.append(proxy)
    sock, head = proxy.tunnel("127.0.0.6", f"127.0.0.1:{target}")
    assert head.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    status, out = proxy.stop()          # --drain 1: the open tunnel is cut after a second
    assert status == 0 and "draining" in out
    assert time.monotonic() - started < 5
    assert "Traceback" not in proxy.err, proxy.err    # a cancelled tunnel ends quietly
    sock.close()


def test_bad_requests_get_400(tmp_path: Path, proxies: list[Proxy]) -> None:
    proxy = Proxy(tmp_path)
    proxies.append(proxy)
    for request in (b"HELLO\r\n\r\n", b"CONNECT nohost HTTP/1.1\r\n\r\n",
                    b"GET https://x.invalid/ HTTP/1.1\r\n\r\n",
                    # hosts and ports the resolver or int() would choke on
                    b"CONNECT " + b"a" * 64 + b".example.com:443 HTTP/1.1\r\n\r\n",
                    b"CONNECT a\x00b:443 HTTP/1.1\r\n\r\n",
                    b"CONNECT [zz]:443 HTTP/1.1\r\n\r\n",
                    b"CONNECT [::1%" + b"x" * 300 + b"]:443 HTTP/1.1\r\n\r\n",
                    b"GET http://[::1/ HTTP/1.1\r\n\r\n",
                    b"GET http://[::1]x:8080/ HTTP/1.1\r\n\r\n",
                    b"CONNECT h:" + b"9" * 5000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            assert sock.recv(100).startswith(b"HTTP/1.1 400"), request
    assert proxy.value("connguard_accepted_total") == 0
    assert proxy.stop()[0] == 0
    assert "Traceback" not in proxy.err, proxy.err


def test_demo_runs_and_leaves_nothing_running(tmp_path: Path) -> None:
    html = tmp_path / "demo.html"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "connguard", "demo", "--html", str(html)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    for pattern in ("conn_flood", "spam_relay", "port_scan"):
        assert re.search(rf"127\.0\.0\.\d+ +{pattern}", result.stdout), pattern
    assert "connguard_accepted_total" in result.stdout
    assert html.read_text().startswith("<!DOCTYPE html>")
