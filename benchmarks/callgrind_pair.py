"""Count instructions per accept+close pair with valgrind's callgrind.

Instruction counts are repeatable on noisy shared machines, where timings are
not: the same binary and inputs give the same count. The script runs the
workload twice under callgrind, with N and 2N pairs, and reports the
difference divided by N, so interpreter start-up and set-up cancel out. A
third scenario runs the same loop around two no-op C calls: its count is
the share of each pair that is Python calling, not connguard working.

    python benchmarks/callgrind_pair.py                 # print the counts
    python benchmarks/callgrind_pair.py --budget benchmarks/instruction_budget.json
                                                        # exit 1 over budget (on the
                                                        # share above the loop floor)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

PAIRS = 20_000

WORKLOAD = r"""
import sys
import connguard
if {expect_compiled} and not connguard.COMPILED:
    sys.exit("the compiled core did not load")
n, family = int(sys.argv[1]), sys.argv[2]
# Ordinary sources: at most 2 * PAIRS / 4000 + 1 = 11 HTTPS connections each
# in the window, below TRIGGER_COUNT, so none earns pattern state. The
# pattern-state scenario's 1000 sources make 20-40 each, to one host: every
# one is a credential-stuffing candidate with a record updated per event.
count = 1000 if family == "ipv4_pattern_state" else 4000
if family in ("ipv4", "guard", "guard_handle", "floor", "ipv4_pattern_state"):
    sources = [f"10.{{i >> 16}}.{{(i >> 8) & 255}}.{{i & 255}}" for i in range(count)]
else:
    sources = [f"2001:db8:{{i:x}}:1::{{i % 9 + 1}}" for i in range(count)]
t = connguard.Tracker(clock=None)
accept, close = t.accept, t.close
if "{scenario}" in ("guard", "guard_handle"):   # the ban check on top of the tracker
    g = connguard.Guard(tracker=t, limiter=False)
    accept, close = g.accept, g.close
if "{scenario}" == "floor":                     # the same loop around two no-op C calls
    accept = close = {{}}.get
destination = "www.example.com:443"
for s in sources:
    accept(s, destination); close(s)
sources = (sources * (n // len(sources) + 1))[:n]


def run(sources, accept, close, destination):
    for s in sources:                           # local names: as a caller's loop would be
        accept(s, destination)
        close(s)


if "{scenario}" == "guard_handle":              # the same pairs through Connection handles
    def run(sources, accept, close, destination):
        open = g.open
        for s in sources:
            open(s, destination).close()


run(sources, accept, close, destination)
"""

SCENARIOS = ("ipv4", "ipv6", "guard", "guard_handle", "ipv4_pattern_state", "floor")


def instructions(script: str, pairs: int, family: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, "-c", script, str(pairs), family],
            check=True, capture_output=True,
            env=dict(os.environ, PYTHONHASHSEED="0"))
        with open(out) as f:
            text = f.read()
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("callgrind wrote no instruction total")
    return int(match.group(1))


def measure(scenarios: tuple[str, ...] = SCENARIOS) -> dict[str, float]:
    counts = {}
    for scenario in scenarios:
        script = WORKLOAD.format(expect_compiled=True, scenario=scenario)
        counts[scenario] = (instructions(script, 2 * PAIRS, scenario)
                            - instructions(script, PAIRS, scenario)) / PAIRS
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", help="JSON file of {scenario: max instructions per pair}")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    counts = measure()
    floor = counts.pop("floor")
    print(f"loop floor (two no-op C calls): {floor:.0f} instructions per iteration")
    net = {family: count - floor for family, count in counts.items()}
    for family, count in counts.items():
        print(f"{family}: {count:.0f} instructions per accept+close pair "
              f"({net[family]:.0f} above the loop floor)")
    # A pair does more than two no-op calls: a count at or below the floor
    # means the workload did not run as intended (it raised, or measured
    # something else), never that connguard got faster.
    broken = [family for family, count in net.items() if count <= 0]
    if broken:
        print(f"MEASUREMENT FAILED for {', '.join(broken)}: not above the loop floor",
              file=sys.stderr)
        return 1
    if args.budget:
        # The budget is on connguard's own share: the loop floor moves with
        # the Python version, connguard's work much less.
        with open(args.budget) as f:
            budget = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
        over = {k: v for k, v in net.items() if v > budget[k]}
        if over:
            # A count is repeatable to a few instructions, but a one-off in
            # one of the two runs (seen once: a 2.3x count for one scenario,
            # normal again on the next run) can still land in the
            # difference: measure an over-budget scenario once more and keep
            # the lower count.
            again = measure(tuple(over))
            for family in over:
                net[family] = min(net[family], again[family] - floor)
            over = {k: v for k, v in net.items() if v > budget[k]}
        for family, count in over.items():
            print(f"OVER BUDGET {family}: {count:.0f} > {budget[family]}", file=sys.stderr)
        if over:
            return 1
        print("within the instruction budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
