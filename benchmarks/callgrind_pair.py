"""Count instructions per accept+close pair with valgrind's callgrind.

Instruction counts are repeatable on noisy shared machines, where timings are
not: the same binary and inputs give the same count. The script runs the
workload twice under callgrind, with N and 2N pairs, and reports the
difference divided by N, so interpreter start-up and set-up cancel out.

    python benchmarks/callgrind_pair.py                 # print the counts
    python benchmarks/callgrind_pair.py --budget benchmarks/instruction_budget.json
                                                        # exit 1 over budget
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
if family == "ipv4":
    sources = [f"10.0.{{i >> 8}}.{{i & 255}}" for i in range(1000)]
else:
    sources = [f"2001:db8:{{i:x}}:1::{{i % 9 + 1}}" for i in range(1000)]
t = connguard.Tracker(clock=None)
accept, close = t.accept, t.close
destination = "www.example.com:443"
for s in sources:
    accept(s, destination); close(s)
sources = (sources * (n // len(sources) + 1))[:n]
for s in sources:
    accept(s, destination)
    close(s)
"""

SCENARIOS = ("ipv4", "ipv6")


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


def measure(expect_compiled: bool = True) -> dict[str, float]:
    script = WORKLOAD.format(expect_compiled=expect_compiled)
    return {family: (instructions(script, 2 * PAIRS, family)
                     - instructions(script, PAIRS, family)) / PAIRS
            for family in SCENARIOS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", help="JSON file of {scenario: max instructions per pair}")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    counts = measure()
    for family, count in counts.items():
        print(f"{family}: {count:.0f} instructions per accept+close pair")
    if args.budget:
        with open(args.budget) as f:
            budget = json.load(f)
        over = {k: v for k, v in counts.items() if v > budget[k]}
        for family, count in over.items():
            print(f"OVER BUDGET {family}: {count:.0f} > {budget[family]}", file=sys.stderr)
        return 1 if over else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
