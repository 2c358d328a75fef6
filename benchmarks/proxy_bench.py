"""Throughput of ``connguard proxy`` with the Guard on, against the same proxy with it off.

    python benchmarks/proxy_bench.py                 # 6 rounds of 5 s each way
    python benchmarks/proxy_bench.py --quick         # 1 round of 1 s each way (a smoke run)

The proxy runs in its own process (``connguard proxy``, monitor mode, or
``--no-guard``), an echo target in another, and this process is the load:
``--workers`` asyncio clients from distinct loopback sources, each opening
a CONNECT tunnel, sending 1 KiB, reading it back and closing, again and
again. Rounds alternate on and off, each with a fresh proxy; the figure is
the ratio of the median tunnels per second. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import statistics
import subprocess
import sys
import time

ECHO = """
import asyncio, sys
async def echo(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except ConnectionError:
        pass
    w.close()
async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

PAYLOAD = b"x" * 1024


def _start(cmd: list[str], pattern: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    match = re.search(pattern, process.stdout.readline())
    if match is None:
        process.kill()
        raise SystemExit(f"could not start: {' '.join(cmd)}")
    return process, int(match.group(1))


def _sources(n: int) -> list[str]:
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        return ["127.0.0.1"]
    return [f"127.0.{i // 250}.{2 + i % 250}" for i in range(n)]


async def _load(proxy_port: int, target_port: int, workers: int, seconds: float) -> float:
    sources = _sources(workers)
    request = f"CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\n\r\n".encode()
    done = 0
    end = time.perf_counter() + seconds

    async def worker(source: str) -> None:
        nonlocal done
        while time.perf_counter() < end:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", proxy_port, local_addr=(source, 0))
            writer.write(request)
            await reader.readuntil(b"\r\n\r\n")
            writer.write(PAYLOAD)
            await reader.readexactly(len(PAYLOAD))
            writer.close()
            await writer.wait_closed()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(sources[i % len(sources)]) for i in range(workers)))
    return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s each way")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1.0
    echo, target_port = _start([sys.executable, "-c", ECHO], r"(\d+)")
    rates: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for _ in range(args.rounds):
            for mode in ("on", "off"):
                cmd = [sys.executable, "-m", "connguard", "proxy", "--listen", "127.0.0.1:0",
                       "--metrics", "off", *(["--no-guard"] if mode == "off" else [])]
                proxy, port = _start(cmd, r"listening on 127\.0\.0\.1:(\d+)")
                try:
                    rates[mode].append(asyncio.run(
                        _load(port, target_port, args.workers, args.seconds)))
                finally:
                    proxy.terminate()
                    proxy.wait(10)
    finally:
        echo.kill()
        echo.wait(10)
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    print(f"tunnels/s, median of {args.rounds} alternated rounds of {args.seconds:g} s, "
          f"{args.workers} clients: guard on {on:,.0f}, guard off {off:,.0f}, "
          f"ratio {on / off:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
