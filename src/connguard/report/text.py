"""Findings as text: a table of flagged sources and a summary, with or without rich.

Takes the plain document a replay builds (``summary``, ``findings``); rich,
when installed (``connguard[cli]``), draws the table; otherwise it is
written as aligned plain text.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["evidence_text", "moment", "render_text"]


def moment(t: float | None) -> str:
    """A log time for people: UTC date and time, or seconds for relative clocks
    and for times outside the calendar's years 1 to 9999 (a capture stamped in
    milliseconds reads as a time thousands of years on)."""
    if t is None:
        return "-"
    if abs(t) < 1e9:                     # a capture that counts from its own start
        return f"{t:.1f} s"
    try:
        when = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    except (OverflowError, ValueError, OSError):
        return f"{t:.0f} s"
    return when.strftime("%Y-%m-%d %H:%M:%SZ")


def evidence_text(evidence: Mapping[str, Mapping[str, Any]]) -> str:
    """``pattern: key=value ...`` per pattern, one line each."""
    lines = []
    for pattern, values in evidence.items():
        items = " ".join(f"{k}={v:g}s" if k == "window" else f"{k}={v}"
                         for k, v in values.items())
        lines.append(f"{pattern}: {items}")
    return "\n".join(lines)


def _summary_lines(summary: Mapping[str, Any]) -> list[str]:
    files = ", ".join(f"{f['path']} ({f['format']}, {f['flows']:,} flows)"
                      for f in summary["files"])
    found = ", ".join(f"{p} {n:,}" for p, n in summary["findings"].items()) or "none"
    skipped = summary["skipped"]
    rate = summary["flows_per_second"]
    lines = [
        f"files: {files}",
        f"flows: {summary['flows']:,} from {summary['sources']:,} sources, "
        f"{moment(summary['first_flow'])} to {moment(summary['last_flow'])}",
        f"flagged sources: {summary['flagged_sources']:,} (per pattern: {found})",
        f"late flows (arrived after the reorder buffer): {summary['late']:,}",
        f"rows skipped: {skipped['rows']:,}",
    ]
    lines += [f"  {reason}: {n:,}" for reason, n in skipped["reasons"].items()]
    lines += [f"  e.g. {example}" for example in skipped["first"]]
    lines.append(f"replayed in {summary['seconds']:.2f} s"
                 + (f" ({rate:,} flows/s)" if rate else ""))
    return lines


def render_text(document: Mapping[str, Any], out: TextIO, *, rich: bool | None = None) -> None:
    """Write the findings table, then the summary, to ``out``.

    ``rich=None`` uses rich when it is installed; False forces plain text.
    """
    findings = document["findings"]
    rows: list[tuple[str, ...]] = [(f["source"], ", ".join(f["patterns"]), evidence_text(f["evidence"]),
             moment(f["first_seen"]), moment(f["last_seen"])) for f in findings]
    header = ("source", "patterns", "evidence", "first seen", "last seen")
    summary = document["summary"]
    hidden = summary["flagged_sources"] - len(findings)
    console = None
    if rich is not False:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            if rich:
                raise
        else:
            # Not a terminal (a pipe, a file): wide enough for the evidence.
            console = Console(file=out, width=None if out.isatty() else 160)
            table = Table(title="Findings", show_lines=True)
            for name in header:
                table.add_column(name, overflow="fold")
            for row in rows:
                table.add_row(*row)
            if rows:
                console.print(table)
    if console is None and rows:
        _plain_table(header, rows, out)
    if hidden > 0:
        print(f"... and {hidden:,} more flagged sources (raise --top to list them)", file=out)
    if not rows:
        print("No findings.", file=out)
    print("", file=out)
    for line in _summary_lines(summary):
        print(line, file=out)


def _plain_table(header: tuple[str, ...], rows: list[tuple[str, ...]], out: TextIO) -> None:
    cells = [header, *rows]
    widths = [max(max(len(part) for part in str(row[i]).split("\n")) for row in cells)
              for i in range(len(header))]
    for row in cells:
        parts = [str(cell).split("\n") for cell in row]
        for k in range(max(len(p) for p in parts)):
            print("  ".join((p[k] if k < len(p) else "").ljust(w)
                            for p, w in zip(parts, widths, strict=True)).rstrip(), file=out)
        if row is header:
            print("  ".join("-" * w for w in widths), file=out)
