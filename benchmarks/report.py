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
    memory = []
    extra = []
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info.get("kind") == "limiter":
            c = info["compiled_ns"]
            extra.append(f"\nRateLimiter.allow over 1,000 keys: {c:.0f} ns per call; limits' "
                         f"FixedWindowRateLimiter {info['limits_ns']:,.0f} ns "
                         f"({info['limits_ns'] / c:.0f}x slower), pyrate-limiter "
                         f"{info['pyrate_ns']:,.0f} ns ({info['pyrate_ns'] / c:.0f}x slower).")
        elif info.get("kind") == "guard":
            g, t, f, n = (info[k] for k in ("guard_bans_ns", "tracker_ns", "guard_full_ns", "ngit_ns"))
            extra.append(f"\nGuard accept+close over 1,000 sources: {g:.0f} ns with the ban check "
                         f"({(g / t - 1) * 100:+.0f}% on the bare Tracker's {t:.0f} ns), {f:.0f} ns "
                         f"with the rate limiter too; {n / g:.0f}x and {n / f:.0f}x faster than "
                         f"the ngit design ({n:,.0f} ns).")
        elif info.get("kind") == "guard_handle":
            h, k = info["handle_ns"], info["keyed_ns"]
            extra.append(f"\nGuard.open(...).close() over 1,000 sources: {h:.0f} ns, against "
                         f"{k:.0f} ns for accept + close(source) ({(h / k - 1) * 100:+.0f}%).")
        elif info.get("kind") == "batch":
            b, p = info["batch_ns"], info["pair_ns"]
            order = " in a random order" if info.get("order") == "shuffled" else ""
            extra.append(f"\nTracker.accept_many + close_many in chunks of 256 over "
                         f"{info['sources']:,} sources{order}: {b:.0f} ns per pair, against "
                         f"{p:.0f} ns for accept + close one by one ({p / b:.1f}x).")
        elif info.get("kind") == "guard_batch":
            b, p, d = info["batch_ns"], info["pair_ns"], info["default_limiter_ns"]
            extra.append(f"\nGuard over 1,000,000 sources, its limiter sized to them: "
                         f"accept_many + close_many in chunks of 256 {b:.0f} ns per pair, one "
                         f"by one {p:.0f} ns ({p / b:.1f}x); one by one with the default "
                         f"limiter (100,000 netblocks) {d:.0f} ns.")
        elif info.get("kind") == "connection":
            extra.append(f"\nconnguard.connection() with a Guard listening (a handle): "
                         f"{info['handle_ns'] / 1000:.2f} us a pair; through events "
                         f"{info['events_ns'] / 1000:.2f} us.")
        elif info.get("kind") == "guard_accept":
            g, t = info["guard_bans_ns"], info["tracker_ns"]
            extra.append(f"\nGuard.accept alone: {g:.0f} ns with the ban check, "
                         f"{(g / t - 1) * 100:+.0f}% on Tracker.accept's {t:.0f} ns.")
        elif info.get("kind") == "scrape":
            extra.append(f"\nA Prometheus scrape of a Guard tracking {info['sources']:,} sources: "
                         f"{info['median_ms']:.2f} ms.")
        elif info.get("kind") == "is_banned_full":
            extra.append(f"\nWith all {10_000:,} BanManager records banned: is_banned "
                         f"{info['compiled_ns']:.0f} ns per call (the loop "
                         f"{info['loop_floor_ns']:.0f} ns of it)")
        elif info.get("kind") == "report_full":
            extra.append(f"report() that bans a new source, lifting the ban ending soonest: "
                         f"{info['report_us']:.1f} us.")
        elif info.get("kind") == "restore":
            extra.append(f"\nRestoring a 1,000,000-infraction snapshot (100,000 netblocks): "
                         f"{info['seconds']:.2f} s, {info['per_second']:,} infractions/s.")
        elif info.get("kind") == "is_banned":
            extra.append(f"\nBanManager.is_banned over 1,000 sources: {info['compiled_ns']:.0f} ns "
                         f"per call, of which {info['loop_floor_ns']:.0f} ns is the Python loop.")
        elif "compiled_ns" in info:
            c, p, n = info["compiled_ns"], info["pure_ns"], info["ngit_ns"]
            print(f"| {info['sources']:,} {info['family']} | {c:.0f} | {p:,.0f} | {n:,.0f} "
                  f"| {n / c:.1f}x faster | {p / c:.0f}x faster |")
        elif "bytes_per_source" in info:
            memory.append(f"\nMemory at full capacity ({info['capacity']:,} sources): "
                          f"{info['bytes_per_source']} bytes per tracked source by the table's "
                          f"own accounting, {info['rss_bytes_per_source']} by resident-set growth.")
    for line in memory:
        print(line)
    for line in extra:
        print(line)


if __name__ == "__main__":
    main(sys.argv[1])
