"""``connguard demo``: the proxy on loopback, a bounded mix of traffic, what it caught.

Starts ``connguard proxy``'s server (monitor mode) and a local target on
127.0.0.1, then drives traffic through it from distinct loopback sources:
ordinary clients, one source flooding connections, a spam relay to many
port-25 hosts and a port scanner. Every tunnel reaches the local target
whatever it asked for; the Guard sees what was asked. It prints the
findings and the metrics the proxy exposed, writes the flows it made and
their HTML report (``connguard replay`` over that log), and stops
everything it started. Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import csv
import os
import socket
import tempfile
import time
import urllib.request
from typing import Any

import connguard

from ..integrations.proxy import ConnectProxy
from .proxy import build_guard, serve_metrics

_ORDINARY = [f"www{i}.example:443" for i in range(8)] + ["api.example:8443", "cdn.example:80"]


def add_parser(commands: Any) -> None:
    """Register ``connguard demo``."""
    parser = commands.add_parser(
        "demo", help="run the proxy on loopback with a mix of traffic and show what it caught",
        description=__doc__.splitlines()[0])
    parser.add_argument("--html", default=os.path.join(tempfile.gettempdir(),
                                                       "connguard-demo.html"),
                        help="where to write the HTML report (default: in the temp directory)")
    parser.set_defaults(run=lambda args: asyncio.run(run(args.html)))


def loopback_sources(count: int) -> list[str | None]:
    """Distinct 127.0.0.x addresses where the OS lets clients bind them."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:                             # e.g. macOS: only 127.0.0.1 is up
        return [None] * count
    return [f"127.0.0.{2 + i}" for i in range(count)]


async def _target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer whatever a client says once; hang up when it does."""
    try:
        if await reader.read(1024):
            writer.write(b"250 ok\r\n")
        await reader.read()
    except ConnectionError:
        pass
    finally:
        writer.close()


class _Client:
    """Opens tunnels through the proxy and logs each one as a flow."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.flows: list[tuple[float, str, str, float, int, int]] = []

    async def tunnel(self, source: str | None, destination: str, say: bytes | None,
                     hold: asyncio.Event | None = None) -> None:
        start = time.time()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(source, 0) if source else None)
        writer.write(f"CONNECT {destination} HTTP/1.1\r\nHost: {destination}\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        received = 0
        if say:
            writer.write(say)
            received = len(await reader.read(1024))
        if hold is not None:
            await hold.wait()
        writer.close()
        await writer.wait_closed()
        self.flows.append((start, source or "127.0.0.1", destination, time.time() - start,
                           len(say or b""), received))


async def run(html: str) -> int:
    guard = build_guard(None, enforce=False, max_open=None)
    stop_metrics, metrics_port = serve_metrics(guard, ("127.0.0.1", 0))
    target = await asyncio.start_server(_target, "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]
    proxy = ConnectProxy(guard, route=lambda host, port: ("127.0.0.1", target_port))
    server = await proxy.start("127.0.0.1", 0)
    client = _Client(server.sockets[0].getsockname()[1])
    sources = loopback_sources(13)
    ordinary, flooder, spammer, scanner = sources[:10], sources[10], sources[11], sources[12]
    try:
        for round_ in range(3):
            await asyncio.gather(*(client.tunnel(s, _ORDINARY[(i + round_) % 10], b"GET /\r\n")
                                   for i, s in enumerate(ordinary)))
        release = asyncio.Event()
        held = [asyncio.create_task(client.tunnel(flooder, "game.example:7777", None, release))
                for _ in range(300)]
        for _ in range(100):                    # until the proxy holds them all (<= 5 s)
            stats = guard.tracker.stats(flooder or "127.0.0.1")
            if stats is not None and stats.active >= len(held):
                break
            await asyncio.sleep(0.05)
        for i in range(120):
            await client.tunnel(spammer, f"mx{i % 40}.example:25", b"HELO demo\r\n")
        for port in range(1, 201):
            await client.tunnel(scanner, f"10.9.8.7:{port}", None)
        await asyncio.sleep(0.1)
        findings = guard.findings()
        release.set()
        await asyncio.gather(*held)
        await asyncio.sleep(0.1)                # let the proxy see the last closes
        metrics = await asyncio.to_thread(_scrape, metrics_port)
    finally:
        await proxy.drain(5.0)
        target.close()
        await target.wait_closed()
        stop_metrics()
    core = "compiled" if connguard.COMPILED else "pure Python"
    print(f"connguard {connguard.__version__} ({core} core): {len(client.flows)} tunnels "
          f"through the proxy from {len(set(sources))} loopback sources\n")
    print("findings (source, pattern, evidence):")
    for finding in sorted(findings, key=lambda f: (f.source, f.pattern)):
        evidence = ", ".join(f"{k} {v}" for k, v in finding.evidence.items())
        print(f"  {finding.source:<12} {finding.pattern:<12} {evidence}")
    print("\nmetrics the proxy exposed (non-zero; no address is ever a label):")
    for line in metrics.splitlines():
        if line.startswith("connguard_") and not line.endswith((" 0.0", "_created")) \
                and "_created" not in line:
            print(f"  {line}")
    _report(client.flows, html)
    print(f"\nflows written and replayed: HTML report at {html}")
    return 0


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _report(flows: list[tuple[float, str, str, float, int, int]], html: str) -> None:
    """Write the flows as a CSV flow log next to ``html`` and replay them into it."""
    from ..replay.engine import replay_files
    from ..report.html import render_html

    log_path = os.path.splitext(html)[0] + ".flows.csv"
    with open(log_path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["start", "source", "destination", "port", "duration", "sent", "received"])
        for start, source, destination, duration, sent, received in sorted(flows):
            host, _, port = destination.rpartition(":")
            out.writerow([f"{start:.6f}", source, host, port, f"{duration:.6f}", sent, received])
    result = replay_files([log_path], fmt="csv")
    with open(html, "w", encoding="utf-8") as f:
        f.write(render_html(result.document()))
