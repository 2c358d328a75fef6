"""Replay labelled Zeek conn logs through a default Tracker; print the patterns raised per host.

    python benchmarks/detection.py [DATA_DIR] [--json]

DATA_DIR defaults to ../shared/data beside the repository (or
$CONNGUARD_DATA). Every conn log under it (TSV with a ``#fields`` header,
or JSON lines) is replayed on its own through ``connguard.Tracker()`` with
default settings and event time: a flow is accepted at its start and closed
at start + duration with its byte counts (``orig_bytes`` sent,
``resp_bytes`` received; ``-`` or absent: unknown) and its destination.

Each originating host is labelled from the log's ``label`` column
(Malicious if any of its flows is, else Benign/Background), or, for the
unlabelled captures, from the role their README gives the host. A host is
listed when it made at least 20 flows or is labelled malicious and flagged;
the other malicious sources of a file are summed in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import connguard as cg

# Hosts the unlabelled captures' READMEs name, and what they did.
ROLES = {
    ("port-scans/horizontal", "10.0.2.112"): "scanner (horizontal, README)",
    ("port-scans/vertical", "192.168.1.9"): "scanner (vertical, README)",
    ("002-zeek-scenario-port-scanning", "172.16.1.11"): "scanner (nmap, README)",
    ("003-zeek-scenario-malicious", "10.8.0.61"): "RAT on 1337/tcp (README)",
}
MIN_FLOWS = 20
# --check: the labelled scanners the defaults must flag port_scan (each probed
# more than 30 ports within an hour or two); every benign or background host
# must stay unflagged.
MUST_FLAG = {"192.168.1.9", "172.16.1.11", "104.156.155.13", "104.152.52.193",
             "51.89.192.233", "89.248.165.60"}


def _flows(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each flow of a Zeek conn log (TSV or JSON lines) as a dict of strings."""
    fields: list[str] | None = None
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("{"):
                yield {k: str(v) for k, v in json.loads(line).items()}
            elif line.startswith("#fields"):
                fields = line.split("\t")[1:]
            elif not line.startswith("#") and fields is not None:
                yield dict(zip(fields, line.split("\t"), strict=False))


def _number(value: str | None) -> float | None:
    if value in (None, "", "-", "(empty)"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _label(flow: dict[str, Any]) -> str | None:
    label = flow.get("label")
    if not label or label in ("-", "(empty)"):
        return None
    return label.split()[0].split("/")[0].rstrip(",").lower()


def replay(path: Path) -> dict[str, Any]:
    """Replay one log; return per-host flows, labels and the patterns raised."""
    events = []
    flows: Counter[str] = Counter()
    labels: dict[str, Counter[str]] = defaultdict(Counter)
    for flow in _flows(path):
        start, src, dst = _number(flow.get("ts")), flow.get("id.orig_h"), flow.get("id.resp_h")
        if start is None or not src or not dst:
            continue
        port = flow.get("id.resp_p")
        proto = flow.get("proto", "")
        host = f"[{dst}]" if ":" in dst else dst
        destination = f"{host}:{port}" if proto in ("tcp", "udp") and port else host
        sent, received = _number(flow.get("orig_bytes")), _number(flow.get("resp_bytes"))
        end = start + (_number(flow.get("duration")) or 0.0)
        events.append((start, 0, src, destination, None, None))
        events.append((end, 1, src, destination,
                       None if sent is None else int(sent),
                       None if received is None else int(received)))
        flows[src] += 1
        labels[src][_label(flow) or "unlabelled"] += 1
    events.sort(key=lambda e: (e[0], e[1]))
    raised: dict[str, set[str]] = defaultdict(set)
    tracker = cg.Tracker(capacity=100_000,
                         on_finding=lambda f: raised[f.source].add(f.pattern))
    for when, kind, src, destination, sent, received in events:
        try:
            if kind == 0:
                tracker.accept(src, destination, now=when)
            else:
                tracker.close(src, now=when, sent=sent, received=received,
                              destination=destination)
        except ValueError:                       # not an address (a broadcast name, say)
            continue
    return {"flows": flows, "labels": labels, "raised": raised, "tracker": tracker}


def _role(rel: str, host: str, labels: Counter[str]) -> str:
    for (where, ip), role in ROLES.items():
        if where in rel and ip == host:
            return role
    if labels.get("malicious"):
        return "malicious"
    if labels.get("benign") or labels.get("background"):
        return "benign" if labels.get("benign") else "background"
    return "unlabelled"


def evaluate(data: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(p for p in data.rglob("*") if p.is_file() and "conn" in p.name):
        rel = str(path.relative_to(data))
        result = replay(path)
        small: Counter[str] = Counter()
        for host, count in result["flows"].most_common():
            role = _role(rel, host, result["labels"][host])
            netblock = result["tracker"].stats(host)
            patterns = sorted(result["raised"].get(netblock.source if netblock else host, ()))
            if count >= MIN_FLOWS or (role != "benign" and role != "background" and patterns):
                rows.append({"log": rel, "host": host, "role": role, "flows": count,
                             "patterns": patterns})
            elif role == "malicious":
                small["sources"] += 1
                small["flagged"] += bool(patterns)
                for name in patterns:
                    small[name] += 1
        if small:
            rows.append({"log": rel, "host": f"{small['sources']} more malicious sources "
                         f"(< {MIN_FLOWS} flows each)", "role": "malicious",
                         "flows": None, "patterns": sorted(
                             f"{name} x{n}" for name, n in small.items()
                             if name not in ("sources", "flagged"))})
    return rows


def main() -> int:
    default = os.environ.get("CONNGUARD_DATA") or str(
        Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=default)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless every benign host is unflagged and every "
                             "scanner in MUST_FLAG is flagged port_scan")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        print(f"no data directory at {data}", file=sys.stderr)
        return 2
    rows = evaluate(data)
    if args.check:
        wrong = [f"{r['host']} ({r['role']}) flagged {r['patterns']}" for r in rows
                 if r["role"] in ("benign", "background") and r["patterns"]]
        flagged = {r["host"] for r in rows if "port_scan" in r["patterns"]}
        wrong += [f"{host} not flagged port_scan" for host in sorted(MUST_FLAG - flagged)]
        for line in wrong:
            print(line, file=sys.stderr)
        print(f"{len(rows)} rows; {'FAILED' if wrong else 'as expected'}")
        return 1 if wrong else 0
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| log | host | label | flows | patterns raised |")
    print("|---|---|---|---:|---|")
    for row in rows:
        flows = "" if row["flows"] is None else row["flows"]
        print(f"| {row['log']} | {row['host']} | {row['role']} | {flows} | "
              f"{', '.join(row['patterns']) or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
