"""``connguard demo``: a loopback proxy front end watched by a Tracker.

A small asyncio server on 127.0.0.1 plays a proxy: each client sends the
destination it wants ("CONNECT host:port"), the server counts the connection
with connguard, and counts its close when the client hangs up. Real sockets
from several loopback addresses then behave as ordinary clients, one source
that holds hundreds of connections open, and one that hammers mail servers.
Only loopback addresses are ever used.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket

import connguard

ORDINARY = [f"www{i}.example:443" for i in range(8)] + ["api.example:8443", "cdn.example:80"]


async def serve(tracker: connguard.Tracker) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        source = f"{host}:{port}"
        line = await reader.readline()
        destination = line.decode("ascii", "replace").removeprefix("CONNECT ").strip()
        tracker.accept(source, destination)
        try:
            writer.write(b"200 OK\n")
            await reader.read()                 # until the client hangs up
        finally:
            tracker.close(source)
            writer.close()
            await writer.wait_closed()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def connect(port: int, source: str | None, destination: str) -> asyncio.StreamWriter:
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    writer.write(f"CONNECT {destination}\n".encode())
    await reader.readline()
    return writer


def loopback_sources(count: int) -> list[str | None]:
    """Distinct 127.0.0.x addresses where the OS lets clients bind them."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:                             # e.g. macOS: only 127.0.0.1 is up
        return [None] * count
    return [f"127.0.0.{10 + i}" for i in range(count)]


async def run(hold: int, mail: int) -> int:
    tracker = connguard.Tracker(concurrent_threshold=256, rate_threshold=20.0, window=10.0)
    server = await serve(tracker)
    port = server.sockets[0].getsockname()[1]
    ordinary, holder, mailer = loopback_sources(22)[:20], "127.0.0.66", "127.0.0.77"
    if ordinary[0] is None:
        holder = mailer = None                  # type: ignore[assignment]
    rng = random.Random(7)

    async def visit(source: str | None) -> None:
        for _ in range(5):
            writer = await connect(port, source, rng.choice(ORDINARY))
            writer.close()
            await writer.wait_closed()

    held = [await connect(port, holder, "game.example:443") for _ in range(hold)]
    await asyncio.gather(*(visit(s) for s in ordinary))
    for i in range(mail):
        writer = await connect(port, mailer, f"mx{i % 40}.example:25")
        writer.close()
        await writer.wait_closed()
    await asyncio.sleep(0.2)                    # let the server see the closes

    print(f"connguard {connguard.__version__} ({'compiled' if connguard.COMPILED else 'pure Python'} core)")
    print(f"active connections {tracker.active_connections}, active sources {tracker.active_sources}, "
          f"tracked sources {tracker.tracked_sources}, flagged sources {tracker.flagged_sources}")
    print("\ntop sources by total connections:")
    for s in tracker.top(5, by="total"):
        busiest = max(s.by_class, key=lambda c: s.by_class[c])
        print(f"  {s.source:<16} active {s.active:>4}  total {s.total:>4}  rate {s.rate:6.1f}/s  "
              f"mostly {busiest:<5} to {s.distinct_destinations:>3} hosts  "
              f"{'FLAGGED ' + ','.join(sorted(s.patterns)) if s.flagged else ''}")
    print("\nfindings (pattern, evidence):")
    for finding in tracker.findings():
        evidence = ", ".join(f"{k} {v}" for k, v in finding.evidence.items())
        print(f"  {finding.source:<16} {finding.pattern:<12} {evidence}")
    for writer in held:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for writer in held))
    await asyncio.sleep(0.2)
    after = tracker.stats(holder or "127.0.0.1")
    print(f"\nafter the holder lets go: active connections {tracker.active_connections}; "
          f"its patterns now: {', '.join(sorted(after.patterns)) if after and after.patterns else 'none'}")
    server.close()
    await server.wait_closed()
    return 0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``connguard demo``."""
    parser = commands.add_parser(
        "demo", help="run a loopback proxy front end and show what connguard catches",
        description="A loopback proxy front end watched by a Tracker: ordinary clients, "
                    "a source holding hundreds of connections, one hammering mail servers.")
    parser.add_argument("--hold", type=int, default=300, help="connections the greedy source holds open")
    parser.add_argument("--mail", type=int, default=400, help="connections the spammer makes to port 25")
    parser.set_defaults(run=lambda args: asyncio.run(run(args.hold, args.mail)))
