"""Print the README's benchmark table from a pytest-benchmark JSON file.

    python -m pytest benchmarks --benchmark-json=bench.json
    python benchmarks/report.py bench.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    pairs: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    interleaved: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "impl" in info:
            ns = bench["stats"]["median"] / info["pairs_per_round"] * 1e9
            pairs[(info["family"], info["sources"])][info["impl"]] = ns
        elif "ngit_over_compiled" in info:
            interleaved.append(info)
        elif "bytes_per_source" in info:
            memory = info
    machine = data.get("machine_info", {})
    print(f"Python {machine.get('python_version', '?')}, {machine.get('cpu', {}).get('brand_raw', '?')}; "
          "medians, ns per accept+close pair, Python loop included.\n")
    print("| sources | compiled | pure | ngit design | ngit / compiled | pure / compiled |")
    print("|---|---:|---:|---:|---:|---:|")
    for (family, count), ns in sorted(pairs.items()):
        print(f"| {count:,} {family} | {ns['compiled']:.0f} | {ns['pure']:,.0f} | {ns['ngit']:,.0f} "
              f"| {ns['ngit'] / ns['compiled']:.1f}x | {ns['pure'] / ns['compiled']:.0f}x |")
    if interleaved:
        print("\nInterleaved (the three timed round by round in turn):\n")
        print("| sources | compiled | pure | ngit design | ngit / compiled | pure / compiled |")
        print("|---|---:|---:|---:|---:|---:|")
        for info in interleaved:
            print(f"| {info['sources']:,} {info['family']} | {info['compiled_ns']:.0f} | {info['pure_ns']:,.0f} "
                  f"| {info['ngit_ns']:,.0f} | {info['ngit_over_compiled']:.1f}x | {info['pure_over_compiled']:.0f}x |")
    if memory:
        print(f"\nMemory at full capacity ({memory['capacity']:,} sources): "
              f"{memory['bytes_per_source']} bytes per tracked source by the table's accounting, "
              f"{memory['rss_bytes_per_source']} by resident-set growth.")


if __name__ == "__main__":
    main(sys.argv[1])
