"""Fleet over Redis Streams: propagation latency, and events lost across a Redis restart.

    python benchmarks/fleet_bench.py [--rate 1000] [--seconds 20] [--outage 5] [--quick]
                                     [--redis URL] [--check]

Starts a ``redis-server`` from PATH on a free loopback port (no persistence)
unless ``--redis`` names one, and two nodes in this process, A and B, each
a BanManager with a started RedisFleet. Two phases:

1. Propagation: A reports ``impersonation`` (a ban at once) about a new
   source ``--rate`` times a second for ``--seconds``; B's on_ban records
   when the ban reached B, at which point ``B.is_banned`` is true. Prints
   the latency percentiles from ``report()`` on A to the ban on B.
2. Restart (only with a server this script started): the same load for
   3 x ``--outage`` seconds; Redis is killed (SIGKILL: unpersisted data
   dies with it) after the first third and started again, empty, after
   the second. Prints the events reported on A and banned on B, the lost
   ones (reported, never reaching B), the outbox's peak, the drops, the
   events published again, and how soon after the restart the events the
   outage held reached B.

``--quick`` (CI): 3 s of propagation and a 2 s outage, under 20 s in all.
``--check`` exits 1 when p99 >= 100 ms or any event was lost.
Both nodes share one interpreter (and its GIL) with the load loop, which
is harder on latency than nodes on separate machines.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from connguard import BanManager
from connguard.fleet.redis import RedisFleet

# The fleet tests' server runner, from the checkout this script runs in.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.redis_server import RedisServer  # noqa: E402


class Pair:
    """Nodes A and B on one stream; B notes when each ban arrives."""

    def __init__(self, url: str, stream: str) -> None:
        self.arrived: dict[str, float] = {}
        self.a = BanManager(node_id="bench-a", capacity=1_000_000)
        self.b = BanManager(node_id="bench-b", capacity=1_000_000, on_ban=self._banned)
        options: dict[str, Any] = {"backoff": (0.02, 0.5), "timeout": 1.0}
        self.fa = RedisFleet(self.a, url, stream, **options)
        self.fb = RedisFleet(self.b, url, stream, **options)
        for fleet in (self.fa, self.fb):
            if not fleet.start(timeout=5.0):
                raise RuntimeError("no Redis")

    def _banned(self, ban: Any) -> None:
        self.arrived.setdefault(ban.source, time.perf_counter())

    def stop(self) -> None:
        self.fa.stop()
        self.fb.stop()


def load(pair: Pair, prefix: int, rate: float, seconds: float,
         at: dict[float, Any] | None = None) -> dict[str, float]:
    """Report a new source on A ``rate`` times a second; run ``at``'s actions on time."""
    sent: dict[str, float] = {}
    actions = sorted((at or {}).items())
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        while actions and actions[0][0] <= due - start:
            actions.pop(0)[1]()
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        source = f"{prefix}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        sent[source] = time.perf_counter()
        pair.a.report(source, "impersonation")
    for _, action in actions:
        action()
    return sent


def settle(pair: Pair, sent: dict[str, float], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(s in pair.arrived for s in sent):
        time.sleep(0.01)


def propagation(url: str, rate: float, seconds: float) -> dict[str, float]:
    pair = Pair(url, f"bench:{os.urandom(4).hex()}")
    try:
        sent = load(pair, 10, rate, seconds)
        settle(pair, sent, 5.0)
        latencies = sorted((pair.arrived[s] - t) * 1000 for s, t in sent.items()
                           if s in pair.arrived)
        assert all(pair.b.is_banned(s) for s in sent if s in pair.arrived)
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        return {"sent": len(sent), "received": len(latencies), "p50": q[49], "p90": q[89],
                "p99": q[98], "max": latencies[-1]}
    finally:
        pair.stop()


def restart(server: RedisServer, rate: float, outage: float) -> dict[str, float]:
    pair = Pair(server.url, f"bench:{os.urandom(4).hex()}")
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.01):
            peak[0] = max(peak[0], pair.fa.outbox_depth)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    times: dict[str, float] = {}
    try:
        sent = load(pair, 11, rate, 3 * outage, at={
            outage: lambda: (times.setdefault("kill", time.perf_counter()), server.kill()),
            2 * outage: lambda: (server.start(), times.setdefault("up", time.perf_counter()))})
        settle(pair, sent, 15.0)
        stats = pair.fa.stats()
        held = [s for s, t in sent.items() if times["kill"] <= t < times["up"]]   # in the outage
        recovered = max((pair.arrived[s] for s in held if s in pair.arrived), default=0.0)
        return {"sent": len(sent), "received": sum(s in pair.arrived for s in sent),
                "lost": sum(s not in pair.arrived for s in sent), "dropped": stats.dropped,
                "peak_outbox": peak[0], "outage_s": times["up"] - times["kill"],
                "caught_up_s": max(0.0, recovered - times["up"]),
                "republished": stats.published - len(sent)}
    finally:
        sampling.set()
        pair.stop()


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("connguard.bans").setLevel(logging.ERROR)     # a line per ban otherwise
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="infractions/s (1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="propagation run (20 s)")
    parser.add_argument("--outage", type=float, default=5.0,
                        help="seconds Redis is down in the restart run (5 s; run 3x that)")
    parser.add_argument("--quick", action="store_true", help="3 s run, 2 s outage (CI)")
    parser.add_argument("--redis", metavar="URL", help="use this server (no restart phase)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when p99 >= 100 ms or an event was lost")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.outage = 3.0, 2.0
    failed = False
    with tempfile.TemporaryDirectory() as workdir:
        server = None
        if args.redis is None:
            if shutil.which("redis-server") is None:
                sys.exit("fleet_bench: no redis-server on PATH (apt-get install redis-server), "
                         "or pass --redis URL")
            server = RedisServer(Path(workdir))
            server.start()
        try:
            url = args.redis or (server.url if server else "")
            p = propagation(url, args.rate, args.seconds)
            print(f"propagation, report() on A to is_banned() on B, {args.rate:,.0f} "
                  f"infractions/s for {args.seconds:g} s: p50 {p['p50']:.2f} ms, "
                  f"p90 {p['p90']:.2f} ms, p99 {p['p99']:.2f} ms, max {p['max']:.2f} ms "
                  f"({p['received']:,.0f} of {p['sent']:,.0f} arrived)")
            failed |= p["p99"] >= 100.0 or p["received"] < p["sent"]
            if server is not None:
                r = restart(server, args.rate, args.outage)
                print(f"restart, SIGKILL and an empty server {r['outage_s']:.1f} s later, under "
                      f"{args.rate:,.0f} infractions/s: {r['sent']:,.0f} reported on A, "
                      f"{r['received']:,.0f} banned on B, {r['lost']:,.0f} lost; outbox peak "
                      f"{r['peak_outbox']:,.0f}, dropped {r['dropped']:,.0f}, published again "
                      f"{r['republished']:,.0f}; what the outage held reached B "
                      f"{r['caught_up_s']:.2f} s after the restart")
                failed |= r["lost"] > 0
        finally:
            if server is not None:
                server.stop()
    if args.check and failed:
        print("fleet_bench: a bar was missed (p99 >= 100 ms or events lost)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
