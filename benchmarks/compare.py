"""Fail when a benchmark ratio regressed against an earlier run.

    python benchmarks/compare.py baseline.json current.json [--threshold 0.15]

Compares, case by case, how many times faster the compiled core is than the
ngit-design baseline (both measured interleaved in the same run, so the
ratio survives a noisy machine). A drop of more than ``threshold`` (15 % by
default: shared CI runners vary about that much between runs) fails.
"""

from __future__ import annotations

import argparse
import json
import sys


def ratios(path: str) -> dict[str, float]:
    with open(path) as f:
        data = json.load(f)
    out = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "compiled_ns" in info:
            out[f"{info['sources']} {info['family']}"] = info["ngit_ns"] / info["compiled_ns"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline")
    parser.add_argument("current")
    parser.add_argument("--threshold", type=float, default=0.15)
    args = parser.parse_args()
    before, after = ratios(args.baseline), ratios(args.current)
    failed = False
    for case in sorted(before.keys() & after.keys()):
        change = after[case] / before[case] - 1
        verdict = "REGRESSED" if change < -args.threshold else "ok"
        failed |= verdict != "ok"
        print(f"{case:>16}: {before[case]:5.1f}x -> {after[case]:5.1f}x faster than ngit "
              f"({change:+.0%}) {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
