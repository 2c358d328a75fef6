"""Flow-log readers: Zeek conn.log (TSV and JSON lines), Argus binetflow CSV, plain CSV.

Each reader turns a file into chunks of columns (start, duration, source,
destination, sent and received bytes, line number) ready for
``Tracker.replay``. A row that cannot be read is left out and recorded in a
:class:`Skipped` with its line number and the reason; only a file that
cannot be read at all (missing, not a flow log, no header) raises
:class:`FormatError`. Gzip input is recognised by its magic bytes.

Formats (``auto`` tells them apart from the first line):

* ``zeek``: conn.log TSV with a ``#fields`` header; ``#separator``,
  ``#unset_field`` (``-``) and ``#empty_field`` (``(empty)``) are honoured.
* ``zeek-json``: one JSON object per line; an absent key is unknown; ``ts``
  in seconds or ISO 8601.
* ``binetflow``: Argus CSV as in CTU-13 (``StartTime,Dur,Proto,SrcAddr,...``);
  ``StartTime`` like ``2011/08/16 10:01:46.972101`` (read as UTC); ports
  decimal or hex (``0x0303``) or empty; received = ``TotBytes - SrcBytes``.
* ``csv``: a header naming at least a start and a source column (see
  ``CSV_COLUMNS``); start in seconds or ISO 8601 (UTC unless it says).

The destination is ``host:port`` (``[v6]:port``) for TCP and UDP flows
(or when the protocol is not given), the bare host otherwise: an ICMP
"port" is a type, not a service.
"""

from __future__ import annotations

import calendar
import csv
import datetime
import gzip
import io
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple

__all__ = ["CHUNK", "CSV_COLUMNS", "FORMATS", "Chunk", "FlowFile", "FormatError", "Skipped",
           "detect"]

FORMATS = ("zeek", "zeek-json", "binetflow", "csv")
CHUNK = 65_536                 #: flows per chunk handed to the tracker
EXAMPLES = 5                   #: skipped rows kept with their line number

# Plain CSV: each field and the header names accepted for it (case-insensitive).
CSV_COLUMNS = {
    "start": ("start", "ts", "time", "timestamp", "starttime"),
    "source": ("source", "src", "src_ip", "srcaddr", "saddr"),
    "destination": ("destination", "dst", "dst_ip", "dstaddr", "daddr"),
    "port": ("port", "dport", "dst_port"),
    "proto": ("proto", "protocol"),
    "duration": ("duration", "dur"),
    "sent": ("sent", "src_bytes", "srcbytes"),
    "received": ("received", "dst_bytes", "dstbytes"),
}
_ZEEK_REQUIRED = ("ts", "id.orig_h")
_ARGUS_REQUIRED = ("StartTime", "SrcAddr", "DstAddr")


class FormatError(Exception):
    """A file that cannot be read as a flow log at all (the message says why)."""


class Chunk(NamedTuple):
    """Up to CHUNK flows as columns, with the line each came from."""

    starts: list[float]
    durations: list[float | None]
    sources: list[str]
    destinations: list[str]
    sent: list[int | None]
    received: list[int | None]
    lines: list[int]


class Skipped:
    """Rows left out: how many, why, and the first few with their place."""

    def __init__(self) -> None:
        self.count = 0
        self.reasons: Counter[str] = Counter()
        self.examples: list[str] = []

    def add(self, where: str, line: int, reason: str) -> None:
        self.count += 1
        self.reasons[reason] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"{where}:{line}: {reason}")


class _Bad(Exception):
    """One row's problem (the message is the reason recorded)."""


def _new_chunk() -> Chunk:
    return Chunk([], [], [], [], [], [], [])


def destination(host: str, port: int | None, proto: str | None) -> str:
    """``host:port`` for TCP/UDP or an unknown protocol, else the host; IPv6 bracketed."""
    if not host:
        return ""
    if ":" in host:
        host = f"[{host}]"
    if port is None or proto not in (None, "tcp", "udp"):
        return host
    return f"{host}:{port}"


def _number(text: str, name: str, unset: tuple[str, ...]) -> float | None:
    if text in unset:
        return None
    try:
        return float(text)
    except ValueError:
        raise _Bad(f"{name} is not a number: {text[:40]!r}") from None


def _count(text: str, name: str, unset: tuple[str, ...]) -> int | None:
    if text in unset:
        return None
    try:
        value = int(text)
    except ValueError:
        raise _Bad(f"{name} is not a count: {text[:40]!r}") from None
    if value < 0:
        raise _Bad(f"{name} is negative: {value}")
    return value


def _port(text: str, name: str, unset: tuple[str, ...]) -> int | None:
    if text in unset:
        return None
    try:
        value = int(text, 16) if text[:2] in ("0x", "0X") else int(text)
    except ValueError:
        raise _Bad(f"{name} is not a port: {text[:40]!r}") from None
    if not 0 <= value <= 65535:
        raise _Bad(f"{name} is not a port: {value}")
    return value


def _iso_seconds(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time; UTC unless it names a zone."""
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _Bad(f"time is not ISO 8601: {text[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


class _ArgusClock:
    """Argus ``YYYY/MM/DD HH:MM:SS[.ffffff]`` as UTC seconds, one strptime per minute."""

    def __init__(self) -> None:
        self._minutes: dict[str, int] = {}

    def __call__(self, text: str) -> float:
        minute = text[:16]
        base = self._minutes.get(minute)
        if base is None:
            try:
                moment = datetime.datetime.strptime(minute, "%Y/%m/%d %H:%M")
            except ValueError:
                raise _Bad(f"StartTime is not YYYY/MM/DD HH:MM:SS: {text[:40]!r}") from None
            base = self._minutes[minute] = calendar.timegm(moment.timetuple())
        if text[16:17] != ":":
            raise _Bad(f"StartTime is not YYYY/MM/DD HH:MM:SS: {text[:40]!r}")
        try:
            seconds = float(text[17:])
        except ValueError:
            raise _Bad(f"StartTime is not YYYY/MM/DD HH:MM:SS: {text[:40]!r}") from None
        if not 0.0 <= seconds < 61.0:
            raise _Bad(f"StartTime is not YYYY/MM/DD HH:MM:SS: {text[:40]!r}")
        return base + seconds


def detect(first_line: str) -> str | None:
    """The format a file's first line announces, or None."""
    line = first_line.lstrip("\ufeff").strip()
    if line.startswith(("#separator", "#fields")):
        return "zeek"
    if line.startswith("{"):
        return "zeek-json"
    if not line or line.startswith("#"):
        return None
    header = {name.strip().lower() for name in next(csv.reader([line]))}
    if {"starttime", "srcaddr", "dstaddr"} <= header:
        return "binetflow"
    if header & set(CSV_COLUMNS["start"]) and header & set(CSV_COLUMNS["source"]):
        return "csv"
    return None


class FlowFile:
    """One flow-log file, opened for reading in chunks.

    ``position()`` is how far into the file (in its bytes on disk) reading has
    come, for progress. Raises FormatError when the file cannot be opened,
    is empty, or is not in a known format (or not in the one given).
    """

    def __init__(self, path: str, fmt: str = "auto") -> None:
        if fmt != "auto" and fmt not in FORMATS:
            raise FormatError(f"unknown format {fmt!r} (choose from auto, {', '.join(FORMATS)})")
        self.path = path
        try:
            self._raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by close()
            self.size = os.fstat(self._raw.fileno()).st_size
            magic = self._raw.read(2)
            self._raw.seek(0)
            binary: IO[bytes] = gzip.GzipFile(fileobj=self._raw) if magic == b"\x1f\x8b" \
                else self._raw
            self._text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace",
                                          newline="")
            first = self._first_line()
        except OSError as exc:
            self.close_quietly()
            raise FormatError(f"{path}: cannot read it: {exc.strerror or exc}") from None
        except EOFError:
            self.close_quietly()
            raise FormatError(f"{path}: the gzip data is cut short") from None
        found = detect(first)
        if fmt == "auto":
            if found is None:
                self.close()
                raise FormatError(f"{path}: cannot tell its format from the first line "
                                  f"({first.strip()[:60]!r}); pass --format")
            fmt = found
        self.format = fmt

    def _first_line(self) -> str:
        for line in self._text:
            if line.strip():
                self._text.seek(0)
                return line
        raise FormatError(f"{self.path}: the file is empty")

    def position(self) -> int:
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self._text.close()
        self._raw.close()

    def close_quietly(self) -> None:
        raw = getattr(self, "_raw", None)
        if raw is not None:
            raw.close()

    def chunks(self, skipped: Skipped, size: int = CHUNK) -> Iterator[Chunk]:
        """Yield the file's flows in chunks of up to ``size``; record skipped rows."""
        reader: Callable[[Skipped, int], Iterator[Chunk]] = {
            "zeek": self._zeek, "zeek-json": self._zeek_json, "binetflow": self._binetflow,
            "csv": self._csv}[self.format]
        try:
            yield from reader(skipped, size)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise FormatError(f"{self.path}: reading failed: {exc}") from None

    def _zeek(self, skipped: Skipped, size: int) -> Iterator[Chunk]:
        sep, unset_field, empty_field = "\t", "-", "(empty)"
        where, out, index = self.path, _new_chunk(), None
        unset = ("-", "(empty)", "")
        width = 0
        for lineno, line in enumerate(self._text, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            if line[0] == "#":
                directive, _, value = line.partition(" ")
                if directive == "#separator":
                    sep = value.encode().decode("unicode_escape") or "\t"
                    continue
                directive, _, value = line.partition(sep)
                if directive == "#unset_field":
                    unset_field = value
                elif directive == "#empty_field":
                    empty_field = value
                elif directive == "#fields":
                    names = value.split(sep)
                    missing = [n for n in _ZEEK_REQUIRED if n not in names]
                    if missing:
                        raise FormatError(f"{where}:{lineno}: #fields has no {missing[0]!r}")
                    index = [names.index(n) if n in names else -1 for n in (
                        "ts", "id.orig_h", "id.resp_h", "id.resp_p", "proto", "duration",
                        "orig_bytes", "resp_bytes")]
                    width = max(index) + 1
                    unset = (unset_field, empty_field, "")
                continue
            if index is None:
                raise FormatError(f"{where}:{lineno}: a data line before the #fields header")
            parts = line.split(sep)
            if len(parts) < width:
                skipped.add(where, lineno, f"{len(parts)} fields where #fields names {width}")
                continue
            its, isrc, idst, iport, iproto, idur, isent, irecv = index
            try:
                start = _number(parts[its], "ts", unset)
                if start is None:
                    raise _Bad("ts is unset")
                target = destination(
                    parts[idst] if idst >= 0 and parts[idst] not in unset else "",
                    _port(parts[iport], "id.resp_p", unset) if iport >= 0 else None,
                    parts[iproto] if iproto >= 0 else None)
                duration = _number(parts[idur], "duration", unset) if idur >= 0 else None
                sent = _count(parts[isent], "orig_bytes", unset) if isent >= 0 else None
                received = _count(parts[irecv], "resp_bytes", unset) if irecv >= 0 else None
            except _Bad as exc:
                skipped.add(where, lineno, str(exc))
                continue
            out.destinations.append(target)
            out.durations.append(duration)
            out.sent.append(sent)
            out.received.append(received)
            out.starts.append(start)
            out.sources.append(parts[isrc])
            out.lines.append(lineno)
            if len(out.starts) >= size:
                yield out
                out = _new_chunk()
        if index is None:
            raise FormatError(f"{where}: no #fields header")
        if out.starts:
            yield out

    def _zeek_json(self, skipped: Skipped, size: int) -> Iterator[Chunk]:
        where, out = self.path, _new_chunk()
        for lineno, line in enumerate(self._text, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                skipped.add(where, lineno, "not a JSON object")
                continue
            if not isinstance(row, dict):
                skipped.add(where, lineno, "not a JSON object")
                continue
            try:
                flow = _json_flow(row)
            except _Bad as exc:
                skipped.add(where, lineno, str(exc))
                continue
            for column, value in zip(out, (*flow, lineno), strict=True):
                column.append(value)
            if len(out.starts) >= size:
                yield out
                out = _new_chunk()
        if out.starts:
            yield out

    def _binetflow(self, skipped: Skipped, size: int) -> Iterator[Chunk]:
        where, out = self.path, _new_chunk()
        rows = csv.reader(self._text)
        header = [name.strip() for name in next(rows)]
        missing = [n for n in _ARGUS_REQUIRED if n not in header]
        if missing:
            raise FormatError(f"{where}:1: the header has no {missing[0]!r} column")
        index = [header.index(n) if n in header else -1 for n in (
            "StartTime", "SrcAddr", "DstAddr", "Dport", "Proto", "Dur", "SrcBytes", "TotBytes")]
        width = max(index) + 1
        its, isrc, idst, iport, iproto, idur, isent, itotal = index
        clock = _ArgusClock()
        unset = ("",)
        for row in rows:
            if len(row) < width:
                if row:
                    skipped.add(where, rows.line_num, f"{len(row)} columns where the header "
                                                      f"names {len(header)}")
                continue
            try:
                start = clock(row[its])
                proto = row[iproto] if iproto >= 0 else None
                port = _port(row[iport], "Dport", unset) if iport >= 0 else None
                duration = _number(row[idur], "Dur", unset) if idur >= 0 else None
                sent = _count(row[isent], "SrcBytes", unset) if isent >= 0 else None
                total = _count(row[itotal], "TotBytes", unset) if itotal >= 0 else None
                if sent is not None and total is not None and total < sent:
                    raise _Bad(f"TotBytes {total} is less than SrcBytes {sent}")
            except _Bad as exc:
                skipped.add(where, rows.line_num, str(exc))
                continue
            out.starts.append(start)
            out.durations.append(duration)
            out.sources.append(row[isrc])
            out.destinations.append(destination(row[idst], port, proto))
            out.sent.append(sent)
            out.received.append(None if sent is None or total is None else total - sent)
            out.lines.append(rows.line_num)
            if len(out.starts) >= size:
                yield out
                out = _new_chunk()
        if out.starts:
            yield out

    def _csv(self, skipped: Skipped, size: int) -> Iterator[Chunk]:
        where, out = self.path, _new_chunk()
        rows = csv.reader(self._text)
        header = [name.strip().lower() for name in next(rows)]
        index = {field: next((header.index(n) for n in names if n in header), -1)
                 for field, names in CSV_COLUMNS.items()}
        unset = ("", "-")
        for row in rows:
            if not row:
                continue
            if len(row) < len(header):
                skipped.add(where, rows.line_num, f"{len(row)} columns where the header "
                                                  f"names {len(header)}")
                continue
            try:
                flow = _csv_flow(row, index, unset)
            except _Bad as exc:
                skipped.add(where, rows.line_num, str(exc))
                continue
            for column, value in zip(out, (*flow, rows.line_num), strict=True):
                column.append(value)
            if len(out.starts) >= size:
                yield out
                out = _new_chunk()
        if out.starts:
            yield out


def _json_value(row: dict[str, Any], key: str, kind: str) -> Any:
    value = row.get(key)
    if value is None:
        return None
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"{key} is not a number: {str(value)[:40]!r}")
        return float(value)
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _Bad(f"{key} is not a count: {str(value)[:40]!r}")
        return value
    if kind == "port":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise _Bad(f"{key} is not a port: {str(value)[:40]!r}")
        return value
    if not isinstance(value, str):
        raise _Bad(f"{key} is not a string: {str(value)[:40]!r}")
    return value


def _json_flow(row: dict[str, Any]) -> tuple[Any, ...]:
    ts = row.get("ts")
    start = _iso_seconds(ts) if isinstance(ts, str) else _json_value(row, "ts", "number")
    if start is None:
        raise _Bad("ts is missing")
    source = _json_value(row, "id.orig_h", "text")
    if source is None:
        raise _Bad("id.orig_h is missing")
    host = _json_value(row, "id.resp_h", "text") or ""
    return (start, _json_value(row, "duration", "number"), source,
            destination(host, _json_value(row, "id.resp_p", "port"),
                        _json_value(row, "proto", "text")),
            _json_value(row, "orig_bytes", "count"), _json_value(row, "resp_bytes", "count"))


def _csv_flow(row: list[str], index: dict[str, int], unset: tuple[str, ...]) -> tuple[Any, ...]:
    text = row[index["start"]]
    try:
        start = float(text)
    except ValueError:
        start = _iso_seconds(text)
    source = row[index["source"]]
    if source in unset:
        raise _Bad("source is empty")
    host = row[index["destination"]] if index["destination"] >= 0 else ""
    port = _port(row[index["port"]], "port", unset) if index["port"] >= 0 else None
    proto = row[index["proto"]].lower() if index["proto"] >= 0 else None
    target = destination(host, port, proto) if port is not None else host
    return (start,
            _number(row[index["duration"]], "duration", unset) if index["duration"] >= 0 else None,
            source, target,
            _count(row[index["sent"]], "sent", unset) if index["sent"] >= 0 else None,
            _count(row[index["received"]], "received", unset) if index["received"] >= 0 else None)
