"""Replay flow logs through a Tracker and collect what it would have flagged.

One pass over the files: readers parse chunks of flows, the tracker's batch
path (``Tracker.replay``) orders accepts and closes by event time, and the
findings raised are gathered per source with their evidence. Several files
are merged in time: the next chunk always comes from the file that is
furthest behind. A bounded reorder buffer (``reorder`` flows) puts rows
written out of start order (Zeek writes a line when the connection ends)
back in order; a flow that arrives after the replay clock has passed its
start is counted ``late`` and played at the clock.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..patterns import CredentialStuffing, DnsTunnel, Finding, PortScan, SpamRelay
from ..tracker import Tracker
from .readers import CHUNK, Chunk, FlowFile, FormatError, Skipped

__all__ = ["ConfigError", "FormatError", "ReplayResult", "SourceFindings", "build_tracker",
           "replay_files"]

REORDER = 100_000              #: flows held back to be put in start order
MINUTE = 60                    #: the histogram's resolution, seconds

_PATTERNS: dict[str, type] = {"spam_relay": SpamRelay, "port_scan": PortScan,
                              "credential_stuffing": CredentialStuffing, "dns_tunnel": DnsTunnel}
_TRACKER_KEYS = ("ipv4_prefix", "ipv6_prefix", "capacity", "window", "concurrent_threshold",
                 "rate_threshold", "overflow", "port_classes", "shards", "seed")


class ConfigError(ValueError):
    """A replay configuration that cannot be used (the message names the key)."""


def build_tracker(config: Mapping[str, Any] | None = None, window: float | None = None,
                  on_finding: Callable[[Finding], object] | None = None) -> Tracker:
    """A Tracker from a configuration mapping (as read from TOML).

    ``config["tracker"]`` takes Tracker keywords (``capacity``, ``window``,
    ``ipv4_prefix``, ...); ``config["port_scan"]`` and the other patterns
    take their configuration class's fields, or ``enabled = false`` to turn
    the pattern off. ``window`` (seconds), when given, replaces the
    tracker's window and every pattern's. Raises ConfigError naming what is
    wrong.
    """
    config = dict(config or {})
    unknown = sorted(set(config) - {"tracker", *_PATTERNS})
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}] (known: tracker, "
                          f"{', '.join(_PATTERNS)})")
    kwargs: dict[str, Any] = {}
    for section in config.values():
        if not isinstance(section, Mapping):
            raise ConfigError("every section must be a table of keys")
    tracker_keys = dict(config.get("tracker", {}))
    bad = sorted(set(tracker_keys) - set(_TRACKER_KEYS))
    if bad:
        raise ConfigError(f"[tracker] has no key {bad[0]!r} (known: {', '.join(_TRACKER_KEYS)})")
    kwargs.update(tracker_keys)
    for name, cls in _PATTERNS.items():
        fields = dict(config.get(name, {}))
        enabled = fields.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"[{name}] enabled must be true or false")
        if not enabled:
            kwargs[name] = None
            continue
        if window is not None:
            fields["window"] = window
        try:
            kwargs[name] = cls(**fields)
        except TypeError as exc:
            known = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"[{name}]: {exc} (known: {known}, enabled)") from None
        except ValueError as exc:
            raise ConfigError(f"[{name}]: {exc}") from None
    if window is not None:
        kwargs["window"] = window
    try:
        return Tracker(on_finding=on_finding, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[tracker]: {exc}") from None


@dataclasses.dataclass
class SourceFindings:
    """Everything raised on one source: patterns, their latest evidence, when."""

    source: str
    evidence: dict[str, dict[str, Any]]
    first_seen: float
    last_seen: float

    def add(self, finding: Finding) -> None:
        self.evidence[finding.pattern] = finding.evidence
        self.first_seen = min(self.first_seen, finding.first_seen)
        self.last_seen = max(self.last_seen, finding.last_seen)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "patterns": sorted(self.evidence),
                "evidence": {p: self.evidence[p] for p in sorted(self.evidence)},
                "first_seen": self.first_seen, "last_seen": self.last_seen}


@dataclasses.dataclass
class ReplayResult:
    """What a replay found: the summary, findings per source, and chart data."""

    summary: dict[str, Any]
    findings: list[SourceFindings]
    raised: list[tuple[float, str]]                 # (time, pattern) of every raise
    histogram: dict[str, Counter[tuple[int, int]]]  # flagged source -> (minute, class) -> n
    class_names: tuple[str, ...]

    def document(self, top: int | None = None,
                 pseudonymize: Callable[[str], str] | None = None) -> dict[str, Any]:
        """The result as plain data: ``summary``, ``findings`` (one per source,
        the first ``top`` by first seen), and ``charts`` for the report.

        ``pseudonymize(netblock)``, when given, replaces every source.
        """
        name = pseudonymize or (lambda source: source)
        shown = self.findings if top is None else self.findings[:top]
        findings = [{**entry.as_dict(), "source": name(entry.source)} for entry in shown]
        charts = {"classes": list(self.class_names),
                  "sources": [dict(source=name(entry.source),
                                   **_bars(self.histogram.get(entry.source, {}),
                                           len(self.class_names)))
                              for entry in shown],
                  "overview": _overview(self.raised, self.summary["first_flow"],
                                        self.summary["last_flow"])}
        return {"summary": {**self.summary, "shown": len(findings)}, "findings": findings,
                "charts": charts}


def replay_files(paths: Sequence[str], *, fmt: str = "auto", tracker: Tracker | None = None,
                 config: Mapping[str, Any] | None = None, window: float | None = None,
                 reorder: int = REORDER, chunk: int = CHUNK,
                 progress: Callable[[int, int], object] | None = None) -> ReplayResult:
    """Replay flow-log files (merged in time) and return what was flagged.

    Every file is opened before any is read, so a missing or unknown one
    fails fast with FormatError. ``progress(done, total)`` is told the bytes
    read so far after each chunk.
    """
    began = time.perf_counter()
    found: dict[str, SourceFindings] = {}
    raised: list[tuple[float, str]] = []

    def on_finding(finding: Finding) -> None:
        raised.append((finding.first_seen, finding.pattern))
        merge(finding)

    def merge(finding: Finding) -> None:
        entry = found.get(finding.source)
        if entry is None:
            found[finding.source] = SourceFindings(finding.source, {finding.pattern: finding.evidence},
                                                   finding.first_seen, finding.last_seen)
        else:
            entry.add(finding)

    if tracker is None:
        tracker = build_tracker(config, window, on_finding)
    else:
        tracker.add_finding_callback(on_finding)
    files: list[FlowFile] = []
    # Millions of short-lived, acyclic objects (columns, strings, tuples): the
    # cyclic collector would walk them again and again and find nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for path in paths:
            files.append(FlowFile(path, fmt))
        skipped = Skipped()
        streams = [f.chunks(skipped, chunk) for f in files]
        behind = [-math.inf] * len(files)         # the latest start read from each file
        counts = [0] * len(files)
        seen = _Seen()
        late = 0
        first, last = math.inf, -math.inf
        total = sum(f.size for f in files)
        live = list(range(len(files)))
        while live:
            i = min(live, key=behind.__getitem__)
            block = next(streams[i], None)
            if block is None:
                live.remove(i)
                continue
            played_late, bad = _push(tracker, block, reorder, skipped, files[i].path)
            late += played_late
            counts[i] += len(block.starts) - len(bad)
            seen.add(block, bad)
            # The starts of the flows played (a skipped one may be anything).
            starts = [s for k, s in enumerate(block.starts) if k not in bad] if bad \
                else block.starts
            if starts:
                behind[i] = max(behind[i], max(starts))
                first, last = min(first, min(starts)), max(last, max(starts))
            _refresh(tracker, merge)
            if progress is not None:
                progress(sum(f.position() for f in files), total)
        tracker.replay([], [], [], [])                  # the end: every pending event plays
        _refresh(tracker, merge)
    finally:
        for f in files:
            f.close()
        if collecting:
            gc.enable()
    elapsed = time.perf_counter() - began
    return _result(tracker, files, counts, skipped, late, found, raised, seen,
                   first, last, elapsed)


def _push(tracker: Tracker, block: Chunk, reorder: int, skipped: Skipped,
          where: str) -> tuple[int, set[int]]:
    _, late, bad = tracker.replay(block.starts, block.durations, block.sources,
                                  block.destinations, block.sent, block.received, keep=reorder)
    for index, reason in bad:
        skipped.add(where, block.lines[index], reason)
    return late, {index for index, _ in bad}


class _Seen:
    """Every flow's source, start and destination, kept until the end, when the
    flagged sources' connections are counted for their charts.

    Counting every (source, minute, class) as flows arrive would cost a tuple,
    a classification and a dict update per flow; keeping each chunk's columns
    (references to lists the readers built anyway) and picking out the few
    flagged sources at the end costs a set lookup per flow, and classifies
    only their destinations.
    """

    def __init__(self) -> None:
        self.sources: set[str] = set()
        self.chunks: list[tuple[list[str], list[float], list[str]]] = []

    def add(self, block: Chunk, bad: set[int]) -> None:
        sources, starts, destinations = block.sources, block.starts, block.destinations
        if bad:
            keep = [i for i in range(len(starts)) if i not in bad]
            sources = [sources[i] for i in keep]
            starts = [starts[i] for i in keep]
            destinations = [destinations[i] for i in keep]
        self.sources.update(sources)
        self.chunks.append((sources, starts, destinations))

    def histograms(self, tracker: Tracker,
                   wanted: dict[str, str]) -> dict[str, Counter[tuple[int, int]]]:
        """(minute, class) counts per netblock, for the sources in ``wanted`` (source -> netblock)."""
        picked = [(wanted[source], int(start // MINUTE), target)
                  for sources, starts, destinations in self.chunks
                  for source, start, target in zip(sources, starts, destinations, strict=True)
                  if source in wanted]
        classes = tracker.destination_classes([target for _, _, target in picked])
        out: dict[str, Counter[tuple[int, int]]] = {}
        for (netblock, minute, _), cls in zip(picked, classes, strict=True):
            out.setdefault(netblock, Counter())[minute, cls] += 1
        return out


BARS = 60                      #: bars per chart at most


def _bars(counts: Mapping[tuple[int, int], int], columns: int,
          span: tuple[int, int] | None = None) -> dict[str, Any]:
    """Counts per (minute, column) as at most BARS bars of whole minutes each,
    over ``span`` (first and last minute) or the minutes counted."""
    if not counts:
        return {"start": None, "bucket": MINUTE, "counts": []}
    low, high = span or (min(minute for minute, _ in counts),
                         max(minute for minute, _ in counts))
    width = max(1, -(-(high - low + 1) // BARS))          # minutes per bar
    bars = [[0] * columns for _ in range((high - low) // width + 1)]
    for (minute, column), n in counts.items():
        bars[(minute - low) // width][column] += n
    return {"start": low * MINUTE, "bucket": width * MINUTE, "counts": bars}


def _overview(raised: list[tuple[float, str]], first: float | None,
              last: float | None) -> dict[str, Any]:
    """Patterns raised over time, across the whole log."""
    patterns = sorted({p for _, p in raised})
    counts = Counter((int(when // MINUTE), patterns.index(p)) for when, p in raised)
    if not counts or first is None or last is None:
        return {"patterns": patterns, **_bars(counts, len(patterns))}
    span = (
        min(int(first // MINUTE), *(m for m, _ in counts)),
        max(int(last // MINUTE), *(m for m, _ in counts)))
    return {"patterns": patterns, **_bars(counts, len(patterns), span)}


def _refresh(tracker: Tracker, merge: Callable[[Finding], None]) -> None:
    """Fold the live findings (their evidence now, and last_seen) into the results."""
    now = tracker.replay_clock
    if now != -math.inf:
        for finding in tracker.findings(now):
            merge(finding)


def _result(tracker: Tracker, files: list[FlowFile], counts: list[int], skipped: Skipped,
            late: int, found: dict[str, SourceFindings], raised: list[tuple[float, str]],
            seen: _Seen, first: float, last: float,
            elapsed: float) -> ReplayResult:
    netblocks = {source: tracker.netblock(source) for source in seen.sources}
    per_source = seen.histograms(tracker, {source: netblock for source, netblock in netblocks.items()
                                  if netblock in found})
    flows = sum(counts)
    by_pattern = Counter(p for entry in found.values() for p in entry.evidence)
    summary = {
        "files": [{"path": f.path, "format": f.format, "flows": n}
                  for f, n in zip(files, counts, strict=True)],
        "flows": flows,
        "sources": len(set(netblocks.values())),
        "flagged_sources": len(found),
        "findings": dict(sorted(by_pattern.items())),
        "late": late,
        "skipped": {"rows": skipped.count, "reasons": skipped.reasons,
                    "first": skipped.examples},
        "first_flow": first if flows else None,
        "last_flow": last if flows else None,
        "seconds": round(elapsed, 3),
        "flows_per_second": round(flows / elapsed) if elapsed > 0 else None,
    }
    ordered = sorted(found.values(), key=lambda e: (e.first_seen, e.source))
    return ReplayResult(summary, ordered, sorted(raised), per_source, tracker.class_names)

