"""Print the README's benchmark table from a pytest-benchmark JSON file.

    python -m pytest benchmarks --benchmark-json=bench.json
    python benchmarks/report.py bench.json
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    machine = data.get("machine_info", {})
    print(f"Python {machine.get('python_version', '?')} on {machine.get('cpu', {}).get('brand_raw', '?')}, "
          "2 cores; medians in ns per accept+close pair, the Python loop included.\n")
    print("| sources | compiled | pure | ngit design | compiled vs ngit | compiled vs pure |")
    print("|---|---:|---:|---:|---:|---:|")
    memory = ""
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "compiled_ns" in info:
            c, p, n = info["compiled_ns"], info["pure_ns"], info["ngit_ns"]
            print(f"| {info['sources']:,} {info['family']} | {c:.0f} | {p:,.0f} | {n:,.0f} "
                  f"| {n / c:.1f}x faster | {p / c:.0f}x faster |")
        elif "bytes_per_source" in info:
            memory = (f"\nMemory at full capacity ({info['capacity']:,} sources): "
                      f"{info['bytes_per_source']} bytes per tracked source by the table's own "
                      f"accounting, {info['rss_bytes_per_source']} by resident-set growth.")
    print(memory)


if __name__ == "__main__":
    main(sys.argv[1])
