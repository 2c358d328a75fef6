"""End-to-end replay speed: a CTU-13-sized binetflow file and a Zeek conn.log.

    python benchmarks/replay_bench.py [--flows N] [--runs R] [--keep DIR] [--plain]

Writes synthetic logs (to a temporary directory, or DIR), shaped like the
real ones: a binetflow file of 550,000 flows (about 77 MB, as CTU-13's
scenario files) and a Zeek conn.log TSV of 550,000 flows written in end
order (as Zeek writes them), at 550,000 flows in three hours (fewer flows
cover less time at the same rates). Background traffic from 20,000 sources to web,
DNS and mail ports, plus a vertical scanner, a horizontal scanner and a
spam relay. Each file is replayed by the real command, ``connguard replay
FILE --json``, in a fresh interpreter; the wall time of each run (parse,
track, report; interpreter start included) is printed, with the median, the
flows/s, and the findings, which must include the three planted sources.
``--plain`` runs the command as without the ``cli`` extra: pyarrow and rich
made unimportable, so the stdlib readers and the plain table serve.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLANTED = {"10.66.0.1": "port_scan", "10.66.0.2": "port_scan", "10.66.0.3": "spam_relay"}
START = 1_313_000_000.0              # 2011-08-10, as CTU-13


def flows(n: int, seed: int = 7) -> list[tuple[float, float, str, str, str, int, int, int]]:
    """(start, duration, proto, source, destination host, port, sent, received), start order."""
    rng = random.Random(seed)
    out = []
    t = START
    step = 3 * 3600 / 550_000              # 550,000 flows in three hours, whatever n is
    servers = [f"147.32.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(3000)]
    for i in range(n):
        t += rng.expovariate(1 / step)
        kind = i % 100
        if kind == 0:                                      # vertical scan: one host, many ports
            out.append((t, 0.0, "tcp", "10.66.0.1", "147.32.84.165", rng.randrange(1, 65536), 60, 0))
        elif kind == 1:                                    # horizontal scan of :22
            out.append((t, 0.0, "tcp", "10.66.0.2", f"147.32.{i % 250}.{i // 250 % 250}", 22, 60, 0))
        elif kind == 2:                                    # spam relay: port 25, many hosts
            out.append((t, 1.5, "tcp", "10.66.0.3", f"192.0.{i % 200}.{i // 200 % 250}", 25,
                        1200, 300))
        else:
            port = rng.choice((443, 443, 443, 80, 53, 993))
            proto = "udp" if port == 53 else "tcp"
            out.append((t, rng.expovariate(1 / 20), proto, f"147.32.{rng.randrange(80)}."
                        f"{rng.randrange(250)}", rng.choice(servers), port,
                        rng.randrange(100, 5000), rng.randrange(100, 50000)))
    return out


def write_binetflow(path: Path, rows: list[tuple[float, float, str, str, str, int, int, int]]) -> None:
    with path.open("w") as f:
        f.write("StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,"
                "TotBytes,SrcBytes,Label\n")
        for start, dur, proto, src, dst, port, sent, received in rows:
            stamp = time.strftime("%Y/%m/%d %H:%M:", time.gmtime(start)) + f"{start % 60:09.6f}"
            f.write(f"{stamp},{dur:.6f},{proto},{src},{40000 + port % 20000},   ->,{dst},"
                    f"{hex(port) if port % 7 == 0 else port},FSPA_FSPA,0,0,{4 + sent % 20},"
                    f"{sent + received},{sent},flow=Background-TCP-Established-synthetic\n")


def write_zeek(path: Path, rows: list[tuple[float, float, str, str, str, int, int, int]]) -> None:
    fields = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto",
              "service", "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig",
              "local_resp", "missed_bytes", "history", "orig_pkts", "orig_ip_bytes",
              "resp_pkts", "resp_ip_bytes", "tunnel_parents"]
    with path.open("w") as f:
        f.write("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
                "#path\tconn\n#fields\t" + "\t".join(fields) + "\n")
        # Zeek writes a line when the connection ends: end order.
        for start, dur, proto, src, dst, port, sent, received in sorted(
                rows, key=lambda r: r[0] + r[1]):
            f.write(f"{start:.6f}\tCx{int(start * 1e6) % 10**9}\t{src}\t{40000 + port % 20000}\t"
                    f"{dst}\t{port}\t{proto}\t-\t{dur:.6f}\t{sent}\t{received}\tSF\t-\t-\t0\t"
                    f"ShADadFf\t{4 + sent % 20}\t{sent + 200}\t{5}\t{received + 200}\t(empty)\n")


def run(path: Path, runs: int, env: dict[str, str]) -> tuple[list[float], dict[str, object]]:
    times, document = [], {}
    for _ in range(runs):
        began = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "connguard", "replay", str(path), "--json"],
                             check=True, capture_output=True, text=True, env=env).stdout
        times.append(time.perf_counter() - began)
        document = json.loads(out)
    return times, document


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=550_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", help="write the logs here and keep them")
    parser.add_argument("--plain", action="store_true",
                        help="run without the cli extra (pyarrow and rich unimportable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(args.keep or tmp)
        where.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if args.plain:
            for name in ("pyarrow", "rich"):
                (Path(tmp) / "blocked" / name).mkdir(parents=True, exist_ok=True)
                (Path(tmp) / "blocked" / name / "__init__.py").write_text(
                    f"raise ImportError('{name} is blocked')\n")
            env["PYTHONPATH"] = str(Path(tmp) / "blocked")
        files = {"binetflow": where / "synthetic.binetflow", "zeek": where / "conn.log"}
        if not all(p.exists() for p in files.values()):
            rows = flows(args.flows)
            write_binetflow(files["binetflow"], rows)
            write_zeek(files["zeek"], rows)
        failed = False
        for name, path in files.items():
            times, document = run(path, args.runs, env)
            median = statistics.median(times)
            summary = document["summary"]
            flagged = {f["source"]: f["patterns"] for f in document["findings"]}   # type: ignore[index]
            missing = [s for s, p in PLANTED.items() if p not in flagged.get(s, [])]
            failed |= bool(missing) or summary["flows"] != args.flows               # type: ignore[index]
            print(f"{name}: {path.stat().st_size / 1e6:.0f} MB, {summary['flows']:,} flows; "  # type: ignore[index]
                  f"runs {', '.join(f'{t:.2f}' for t in times)} s; median {median:.2f} s = "
                  f"{args.flows / median:,.0f} flows/s end to end; flagged {len(flagged)} "
                  f"sources; planted ones {'all found' if not missing else f'MISSED {missing}'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
