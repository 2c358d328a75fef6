"""Time the accept+close pair loop of two built checkouts, alternating processes.

    python benchmarks/alternate.py BEFORE AFTER [--sources N] [--rounds R] [--shuffle]
        [--family ipv4|ipv6|guard|guard_limiter]

BEFORE and AFTER are checkouts whose compiled core is built in place
(``python setup.py build_ext --inplace`` in each). Two builds of one module
cannot share a process, so each round runs one fresh process per checkout,
in turns that swap order every round; each process times seven walks over
its sources and reports its fastest (in the order they were first tracked,
or with --shuffle in one random order, fixed by a seed, as clients arrive:
then no hardware prefetcher follows the entries). Noise on a shared machine comes in
bursts of seconds, so a single process is either quiet or not: compare the
fastest of all rounds first, the medians second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

WORKLOAD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import connguard
if not connguard.COMPILED or not connguard.__file__.startswith(sys.argv[1]):
    sys.exit(f"the compiled core of {sys.argv[1]} did not load")
family, n, shuffle = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "shuffle"
tracker = connguard.Tracker(capacity=max(n, 1000), clock=None)
accept, close = tracker.accept, tracker.close
if family.startswith("guard"):
    limiter = False
    if family == "guard_limiter":      # sized to the sources, allowing every accept
        limiter = connguard.RateLimiter(rate=1e6, burst=1e6, capacity=max(n, 1000))
    guard = connguard.Guard(tracker=tracker, limiter=limiter)
    accept, close = guard.accept, guard.close
if family == "ipv6":
    sources = [f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1" for i in range(n)]
else:
    sources = [f"{10 + (i >> 24)}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(n)]
destination = "www.example.com:443"
for s in sources:
    accept(s, destination)
    close(s)
if shuffle:
    import random
    random.Random(1).shuffle(sources)
walks = max(1, 200_000 // n)
times = []
for _ in range(7):
    start = time.perf_counter_ns()
    for _ in range(walks):
        for s in sources:
            accept(s, destination)
            close(s)
    times.append((time.perf_counter_ns() - start) / (walks * n))
print(min(times))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--family", choices=("ipv4", "ipv6", "guard", "guard_limiter"), default="ipv4")
    parser.add_argument("--shuffle", action="store_true",
                        help="walk the sources in a random order, not the order first tracked")
    args = parser.parse_args()
    paths = [os.path.join(os.path.abspath(p), "src") for p in (args.before, args.after)]
    times: dict[str, list[float]] = {p: [] for p in paths}
    for round_ in range(args.rounds):
        for path in paths if round_ % 2 == 0 else paths[::-1]:
            out = subprocess.run(
                [sys.executable, "-c", WORKLOAD, path, args.family, str(args.sources),
                 "shuffle" if args.shuffle else "in-order"],
                check=True, capture_output=True, text=True).stdout
            times[path].append(float(out))
    for name, path in zip(("before", "after"), paths, strict=True):
        print(f"{name}: fastest {min(times[path]):.0f} ns, median {statistics.median(times[path]):.0f} "
              f"ns a pair over {args.rounds} processes ({path})")
    before, after = (times[p] for p in paths)
    print(f"after/before: fastest {min(after) / min(before):.3f}, "
          f"median {statistics.median(after) / statistics.median(before):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
