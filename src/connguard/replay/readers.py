"""Flow-log readers: Zeek conn.log (TSV and JSON lines), Argus binetflow CSV, plain CSV.

Each reader turns a file into chunks of columns (start, duration, source,
destination, sent and received bytes, line number) ready for
``Tracker.replay``. A row that cannot be read is left out and recorded in a
:class:`Skipped` with its line number and the reason; only a file that
cannot be read at all (missing, not a flow log, no header) raises
:class:`FormatError`. A line with no value in any column a flow is read
from (a blank line, one of only separators) is no row.
Gzip input is recognised by its magic bytes.

Formats (``auto`` tells them apart from the first line):

* ``zeek``: conn.log TSV with a ``#fields`` header; ``#separator``,
  ``#unset_field`` (``-``) and ``#empty_field`` (``(empty)``) are honoured.
* ``zeek-json``: one JSON object per line; an absent key is unknown; ``ts``
  in seconds or ISO 8601.
* ``binetflow``: Argus CSV as in CTU-13 (``StartTime,Dur,Proto,SrcAddr,...``);
  ``StartTime`` like ``2011/08/16 10:01:46.972101`` (read as UTC); ports
  decimal or hex (``0x0303``) or empty; received = ``TotBytes - SrcBytes``.
* ``csv``: a header naming at least a start and a source column (see
  ``CSV_COLUMNS``); start in seconds or ISO 8601 (UTC unless it says); a row
  has as many fields as the header names, or more that are all empty.

The destination is ``host:port`` (``[v6]:port``) for TCP and UDP flows
(or when the protocol is not given), the bare host otherwise: an ICMP
"port" is a type, not a service.
"""

from __future__ import annotations

import bisect
import calendar
import copy
import csv
import datetime
import gzip
import io
import itertools
import json
import os
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import IO, Any, NamedTuple, cast

__all__ = ["CHUNK", "CSV_COLUMNS", "FORMATS", "Chunk", "FlowFile", "FormatError", "Skipped",
           "detect"]

FORMATS = ("zeek", "zeek-json", "binetflow", "csv")
CHUNK = 65_536                 #: flows per chunk handed to the tracker
EXAMPLES = 5                   #: skipped rows kept with their line number
HEADER_LINE = 1 << 20          #: bytes a header line may take on pyarrow's path

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
    """Rows left out: how many, why, and the first few of each file with their line."""

    def __init__(self) -> None:
        self.count = 0
        self._reasons: Counter[str] = Counter()
        self._first: dict[str, list[tuple[int, str]]] = {}

    def add(self, where: str, line: int, reason: str) -> None:
        self.count += 1
        self._reasons[reason] += 1
        first = self._first.setdefault(where, [])
        if len(first) < EXAMPLES or line < first[-1][0]:
            bisect.insort(first, (line, reason))
            del first[EXAMPLES:]

    @property
    def reasons(self) -> dict[str, int]:
        """Rows skipped per reason, the most frequent first."""
        return dict(sorted(self._reasons.items(), key=lambda item: (-item[1], item[0])))

    @property
    def examples(self) -> list[str]:
        """``file:line: reason`` of the first few rows skipped in each file (by line)."""
        return [f"{where}:{line}: {reason}"
                for where, first in self._first.items() for line, reason in first]


class _Bad(Exception):
    """One row's problem (the message is the reason recorded)."""


# start, duration, source, destination, sent, received
_Flow = tuple[float, "float | None", str, str, "int | None", "int | None"]


def _new_chunk() -> Chunk:
    return Chunk([], [], [], [], [], [], [])


def _add(out: Chunk, start: float, duration: float | None, source: str, target: str,
         sent: int | None, received: int | None, line: int) -> None:
    """Append one flow to a chunk."""
    out.starts.append(start)
    out.durations.append(duration)
    out.sources.append(source)
    out.destinations.append(target)
    out.sent.append(sent)
    out.received.append(received)
    out.lines.append(line)


def _no_flow(row: list[str], columns: Iterable[int]) -> bool:
    """No value in any column a flow is read from (-1: a column the file
    lacks): such a line is no row, as a blank one is."""
    return not any(row[i] for i in columns if 0 <= i < len(row))


# The protocols whose port names a service.
TRANSPORTS = ("tcp", "udp")


def destination(host: str, port: int | None, proto: str | None,
                unset: tuple[str, ...] = ()) -> str:
    """``host:port`` for TCP/UDP (in any case) or when no protocol is given
    (None, or one of the format's ``unset`` markers), else the host; IPv6
    bracketed."""
    if not host:
        return ""
    if ":" in host:
        host = f"[{host}]"
    if port is None or proto is not None and proto not in unset \
            and proto.lower() not in TRANSPORTS:
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

    def many(self, texts: list[str]) -> list[float]:
        """Every text's time, as __call__ would read it; raises _Bad or ValueError."""
        for minute in {text[:16] for text in texts}:
            if minute not in self._minutes:
                self(minute + ":00")
        minutes = self._minutes
        seconds = [float(text[17:]) for text in texts]
        if any(text[16:17] != ":" for text in texts) or min(seconds) < 0.0 or \
                max(seconds) >= 61.0:
            raise ValueError("not YYYY/MM/DD HH:MM:SS")
        return [minutes[text[:16]] + second for text, second in zip(texts, seconds, strict=True)]


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
            self._binary = cast(IO[bytes], gzip.GzipFile(fileobj=self._raw)) \
                if magic == b"\x1f\x8b" else self._raw
            # utf-8-sig: a BOM the file starts with is no part of its first line.
            self._text = io.TextIOWrapper(self._binary, encoding="utf-8-sig", errors="replace",
                                          newline="")
            first = self._first_line()
        except OSError as exc:
            self.close_quietly()
            raise FormatError(f"{path}: cannot read it: {exc.strerror or exc}") from None
        except EOFError:
            self.close_quietly()
            raise FormatError(f"{path}: the gzip data is cut short") from None
        except FormatError:
            self.close()
            raise
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
            fast = self._arrow(skipped, size) if self.format in ("zeek", "binetflow") else None
            if fast is None:
                self._text.seek(0)               # the header the fast path read, again
            yield from reader(skipped, size) if fast is None else fast
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise FormatError(f"{self.path}: reading failed: {exc}") from None

    def _arrow(self, skipped: Skipped, size: int) -> Iterator[Chunk] | None:
        """The pyarrow path for Zeek TSV and binetflow, or None where the row readers must read.

        They must without pyarrow, for a Zeek separator of more than one
        character or not ASCII, and for a file whose lines end in a bare CR
        (the header is read up to LF). From where pyarrow's reading would
        differ from theirs (see _arrow.batches), they take over.
        """
        try:
            from . import _arrow
        except ImportError:
            return None
        binary = self._binary
        binary.seek(0)
        if binary.read(3) != b"\xef\xbb\xbf":     # a BOM first is no part of the header
            binary.seek(0)
        offset = 0
        if self.format == "binetflow":
            offset = 1
            line = _header_line(binary)
            if line is None:
                return None
            names = [name.strip() for name in next(csv.reader([line]))]
            index = _argus_index(names, self.path)
            clock = _ArgusClock()
            return self._then_rows(_arrow.batches(
                binary, self.path, names,
                {role: names[i] for role, i in zip(_arrow.ARGUS_ROLES, index, strict=True)
                 if i >= 0}, offset, ",", True, skipped, _arrow.argus,
                lambda parts, line, out: _argus_row(parts, line, index, len(names), clock,
                                                    out, skipped, self.path),
                size), lambda lines, lineno: self._binetflow(skipped, size, names, lines, lineno))
        header = _ZeekHeader(self.path)
        while True:                               # the directives before the first row
            where = binary.tell()
            line = _header_line(binary)
            if line is None:
                return None
            # Blank lines before #fields are the header's; from it on, rows'.
            if line and (line[0] == "#" or (header.index is None and not line.strip())):
                offset += 1
                header.row(line.rstrip("\r\n"), offset, _new_chunk(), skipped)
                continue
            if line and header.index is None:
                raise FormatError(f"{self.path}:{offset + 1}: a data line before the #fields "
                                  "header")
            binary.seek(where)
            break
        if header.index is None:
            raise FormatError(f"{self.path}: no #fields header")
        if len(header.sep) != 1 or not header.sep.isascii():   # as pyarrow takes it
            return None
        return self._then_rows(_arrow.batches(
            binary, self.path, header.names,
            {role: header.names[i] for role, i in zip(_arrow.ZEEK_ROLES, header.index,
                                                      strict=True) if i >= 0},
            offset, header.sep, False, skipped, lambda columns: _arrow.zeek(columns, header.unset),
            lambda parts, line, out: header.parts_row(parts, line, out, skipped), size,
            header.changes), lambda lines, lineno: self._zeek(skipped, size, header, lines, lineno))

    def _then_rows(self, batches: Generator[Chunk, None, Any],
                   rows: Callable[[Iterator[str], int], Iterator[Chunk]]) -> Iterator[Chunk]:
        """pyarrow's chunks, then the row reader's from the line pyarrow stopped at
        (an _arrow.Handover): the lines of the block it was in from that one on,
        then the rest of the file."""
        handover = yield from batches
        if handover is not None:
            lines = io.TextIOWrapper(io.BytesIO(handover.block), encoding="utf-8",
                                     errors="replace", newline="")
            skip = handover.line - handover.first - 1
            next(itertools.islice(lines, skip, skip), None)
            # The rest, from where the binary stream is: a block's end. (Not through
            # self._text: its decoder would take a BOM there for the file's own.)
            rest = io.TextIOWrapper(self._binary, encoding="utf-8", errors="replace",
                                    newline="")
            try:
                yield from rows(itertools.chain(lines, rest), handover.line - 1)
            finally:
                rest.detach()                    # the binary stream is close()'s to close

    def _zeek(self, skipped: Skipped, size: int, header: _ZeekHeader | None = None,
              lines: Iterator[str] | None = None, lineno: int = 0) -> Iterator[Chunk]:
        """The Zeek log by rows; or, given ``header``, its ``lines`` from line ``lineno + 1``."""
        header = header or _ZeekHeader(self.path)
        for block in _blocks(self._text if lines is None else lines, size):
            first = lineno + 1
            lineno += len(block)
            chunk = _zeek_fast(block, header, first) if header.index is not None else None
            if chunk is None:                    # directives, or a row to skip, inside
                chunk = _new_chunk()
                for n, line in enumerate(block, first):
                    header.row(line.rstrip("\r\n"), n, chunk, skipped)
            if chunk.starts:
                yield chunk
        if header.index is None:
            raise FormatError(f"{self.path}: no #fields header")

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
            _add(out, *flow, lineno)
            if len(out.starts) >= size:
                yield out
                out = _new_chunk()
        if out.starts:
            yield out

    def _binetflow(self, skipped: Skipped, size: int, header: list[str] | None = None,
                   lines: Iterator[str] | None = None, lineno: int = 1) -> Iterator[Chunk]:
        """The binetflow file by rows; or, given its ``header``, ``lines`` from line
        ``lineno + 1``."""
        if header is None:
            header = [name.strip() for name in next(csv.reader([next(self._text)]))]
        index = _argus_index(header, self.path)
        clock = _ArgusClock()
        for block in _blocks(self._text if lines is None else lines, size):
            first = lineno + 1
            lineno += len(block)
            chunk = _argus_fast(block, index, len(header), clock, first)
            if chunk is None:                    # quoted fields, or a row to skip, inside
                chunk = _new_chunk()
                for n, row in enumerate(csv.reader(block), first):
                    _argus_row(row, n, index, len(header), clock, chunk, skipped, self.path)
            if chunk.starts:
                yield chunk

    def _csv(self, skipped: Skipped, size: int) -> Iterator[Chunk]:
        where, out = self.path, _new_chunk()
        rows = csv.reader(self._text)
        header = [name.strip().lower() for name in next(rows)]
        index = {field: next((header.index(n) for n in names if n in header), -1)
                 for field, names in CSV_COLUMNS.items()}
        unset = ("", "-")
        for row in rows:
            if _no_flow(row, index.values()):
                continue
            # More fields than names shift no column only when the extra ones are empty.
            if len(row) < len(header) or any(row[len(header):]):
                skipped.add(where, rows.line_num, f"{len(row)} fields where the header "
                                                  f"names {len(header)}")
                continue
            try:
                flow = _csv_flow(row, index, unset)
            except _Bad as exc:
                skipped.add(where, rows.line_num, str(exc))
                continue
            _add(out, *flow, rows.line_num)
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
        try:
            return float(value)
        except OverflowError:                # an integer beyond any float
            raise _Bad(f"{key} is out of range: {str(value)[:40]!r}") from None
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


def _json_flow(row: dict[str, Any]) -> _Flow:
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


def _csv_flow(row: list[str], index: dict[str, int], unset: tuple[str, ...]) -> _Flow:
    text = row[index["start"]]
    if text in unset:
        raise _Bad("start is empty")
    try:
        start = float(text)
    except ValueError:
        start = _iso_seconds(text)
    source = row[index["source"]]
    if source in unset:
        raise _Bad("source is empty")
    host = row[index["destination"]] if index["destination"] >= 0 else ""
    port = _port(row[index["port"]], "port", unset) if index["port"] >= 0 else None
    proto = row[index["proto"]] if index["proto"] >= 0 else None
    target = destination(host, port, proto, unset) if port is not None else host
    return (start,
            _number(row[index["duration"]], "duration", unset) if index["duration"] >= 0 else None,
            source, target,
            _count(row[index["sent"]], "sent", unset) if index["sent"] >= 0 else None,
            _count(row[index["received"]], "received", unset) if index["received"] >= 0 else None)


def _blocks(text: Iterable[str], size: int) -> Iterator[list[str]]:
    """The remaining lines of ``text`` in lists of ``size``."""
    while True:
        block = list(itertools.islice(text, size))
        if not block:
            return
        yield block


def _column(rows: list[list[str]], i: int, convert: Callable[[str], Any],
            unset: tuple[str, ...]) -> list[Any]:
    """Column ``i`` converted (None where unset, or everywhere when i < 0); raises ValueError."""
    if i < 0:
        return [None] * len(rows)
    return [None if r[i] in unset else convert(r[i]) for r in rows]


def _numbers(rows: list[list[str]], index: tuple[int, ...], port: Callable[[str], int],
             unset: tuple[str, ...]) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """Ports, durations and the two byte columns of a block, checked; raises ValueError."""
    ports = _column(rows, index[3], port, unset)
    durations = _column(rows, index[5], float, unset)
    first, second = _column(rows, index[6], int, unset), _column(rows, index[7], int, unset)
    _check_counts(first, second)
    _check_ports(ports)
    return ports, durations, first, second


def _check_counts(*columns: list[int | None]) -> None:
    for column in columns:
        if min((v for v in column if v is not None), default=0) < 0:
            raise ValueError("a negative count")


def _check_ports(ports: list[int | None]) -> None:
    known = [p for p in ports if p is not None]
    if known and (min(known) < 0 or max(known) > 65535):
        raise ValueError("a port out of range")


def _header_line(binary: IO[bytes]) -> str | None:
    """The next line of a header, or None when the row readers must read the
    file: a line with a bare CR (lines may end in one) or longer than any
    header (no line end found in HEADER_LINE bytes)."""
    raw = binary.readline(HEADER_LINE)
    if len(raw) == HEADER_LINE and not raw.endswith(b"\n"):
        return None
    line = raw.decode("utf-8", "replace")
    return None if "\r" in line.rstrip("\r\n") else line


def _argus_index(header: list[str], where: str) -> tuple[int, ...]:
    """Where each field of a flow is in a binetflow header; FormatError without the required."""
    missing = [n for n in _ARGUS_REQUIRED if n not in header]
    if missing:
        raise FormatError(f"{where}:1: the header has no {missing[0]!r} column")
    return tuple(header.index(n) if n in header else -1 for n in (
        "StartTime", "SrcAddr", "DstAddr", "Dport", "Proto", "Dur", "SrcBytes", "TotBytes"))


class _ZeekHeader:
    """The directives read so far from a Zeek TSV log, and its row reader."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.sep, self.unset_field, self.empty_field = "\t", "-", "(empty)"
        self.unset: tuple[str, ...] = ("-", "(empty)", "")
        self.index: tuple[int, ...] | None = None
        self.names: list[str] = []
        self.columns = 0                         # fields #fields names

    def row(self, line: str, lineno: int, out: Chunk, skipped: Skipped) -> None:
        """Take one line: a directive, a flow (added to ``out``) or a row to skip."""
        if not line.strip(self.sep):             # a blank line, or only separators
            return
        if line[0] == "#":
            self._directive(line, lineno)
            return
        if self.index is None:
            raise FormatError(f"{self.where}:{lineno}: a data line before the #fields header")
        self.parts_row(line.split(self.sep), lineno, out, skipped)

    def parts_row(self, parts: list[str], lineno: int, out: Chunk, skipped: Skipped) -> None:
        """Take one data line split into its fields."""
        assert self.index is not None
        if len(parts) != self.columns:
            skipped.add(self.where, lineno, f"{len(parts)} fields where the header names "
                                            f"{self.columns}")
            return
        if _no_flow(parts, self.index):
            return
        its, isrc, idst, iport, iproto, idur, isent, irecv = self.index
        unset = self.unset
        try:
            start = _number(parts[its], "ts", unset)
            if start is None:
                raise _Bad("ts is unset")
            target = destination(
                parts[idst] if idst >= 0 and parts[idst] not in unset else "",
                _port(parts[iport], "id.resp_p", unset) if iport >= 0 else None,
                parts[iproto] if iproto >= 0 else None, unset)
            duration = _number(parts[idur], "duration", unset) if idur >= 0 else None
            sent = _count(parts[isent], "orig_bytes", unset) if isent >= 0 else None
            received = _count(parts[irecv], "resp_bytes", unset) if irecv >= 0 else None
        except _Bad as exc:
            skipped.add(self.where, lineno, str(exc))
            return
        _add(out, start, duration, parts[isrc], target, sent, received, lineno)

    def changes(self, line: str) -> bool:
        """Whether the directive ``line`` would change how the rows after it read
        (or make them unreadable: a #fields without ts)."""
        probe = copy.copy(self)
        try:
            probe._directive(line.rstrip("\r\n"), 0)
        except FormatError:
            return True
        return (probe.sep, probe.unset, probe.names) != (self.sep, self.unset, self.names)

    def _directive(self, line: str, lineno: int) -> None:
        directive, _, value = line.partition(" ")
        if directive == "#separator":
            try:
                self.sep = value.encode().decode("unicode_escape") or "\t"
            except UnicodeDecodeError:
                raise FormatError(f"{self.where}:{lineno}: #separator {value} is not "
                                  "a separator") from None
            return
        directive, _, value = line.partition(self.sep)
        if directive == "#unset_field":
            self.unset_field = value
        elif directive == "#empty_field":
            self.empty_field = value
        elif directive == "#fields":
            names = self.names = value.split(self.sep)
            missing = [n for n in _ZEEK_REQUIRED if n not in names]
            if missing:
                raise FormatError(f"{self.where}:{lineno}: #fields has no {missing[0]!r}")
            self.index = tuple(names.index(n) if n in names else -1 for n in (
                "ts", "id.orig_h", "id.resp_h", "id.resp_p", "proto", "duration",
                "orig_bytes", "resp_bytes"))
            self.columns = len(names)
        self.unset = (self.unset_field, self.empty_field, "")


def _zeek_fast(block: list[str], header: _ZeekHeader, first: int) -> Chunk | None:
    """A block of plain data lines, column by column; None when any line needs the row path.

    Accepts exactly what the row path accepts: the same conversions, and any
    line the row path would skip or read as a directive makes this give up.
    """
    assert header.index is not None
    its, isrc, idst, _, iproto, _, _, _ = header.index
    unset = header.unset
    if any(line[:1] == "#" for line in block):
        return None
    try:
        rows = [line.rstrip("\r\n").split(header.sep) for line in block]
        if set(map(len, rows)) != {header.columns}:
            return None
        starts = [float(r[its]) for r in rows]
        ports, durations, sent, received = _numbers(rows, header.index, int, unset)
    except ValueError:
        return None
    hosts = ["" if idst < 0 or r[idst] in unset else r[idst] for r in rows]
    protos = [None] * len(rows) if iproto < 0 else [r[iproto] for r in rows]
    return Chunk(starts, durations, [r[isrc] for r in rows],
                 [destination(h, p, t, unset) for h, p, t in zip(hosts, ports, protos, strict=True)],
                 sent, received, list(range(first, first + len(rows))))


def _argus_port(text: str) -> int:
    return int(text, 16) if text[:2] in ("0x", "0X") else int(text)


def _argus_fast(block: list[str], index: tuple[int, ...], columns: int, clock: _ArgusClock,
                first: int) -> Chunk | None:
    """A block of plain binetflow lines, column by column; None when any needs the row path."""
    its, isrc, idst, _, iproto, _, _, _ = index
    unset = ("",)
    try:
        if any('"' in line for line in block):
            return None
        rows = [line.rstrip("\r\n").split(",") for line in block]
        if set(map(len, rows)) != {columns}:
            return None
        starts = clock.many([r[its] for r in rows])
        ports, durations, sent, total = _numbers(rows, index, _argus_port, unset)
        received = [None if s is None or t is None else t - s
                    for s, t in zip(sent, total, strict=True)]
        _check_counts(received)
    except (ValueError, _Bad):
        return None
    protos = [None] * len(rows) if iproto < 0 else [r[iproto] for r in rows]
    return Chunk(starts, durations, [r[isrc] for r in rows],
                 [destination(r[idst], p, t, unset)
                  for r, p, t in zip(rows, ports, protos, strict=True)],
                 sent, received, list(range(first, first + len(rows))))


def _argus_row(row: list[str], lineno: int, index: tuple[int, ...], columns: int,
               clock: _ArgusClock, out: Chunk, skipped: Skipped, where: str) -> None:
    """Take one binetflow row: a flow (added to ``out``) or a row to skip."""
    its, isrc, idst, iport, iproto, idur, isent, itotal = index
    unset = ("",)
    if not any(row):                             # a blank line, or only separators
        return
    if len(row) != columns:
        skipped.add(where, lineno, f"{len(row)} fields where the header names {columns}")
        return
    if _no_flow(row, index):
        return
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
        skipped.add(where, lineno, str(exc))
        return
    _add(out, start, duration, row[isrc], destination(row[idst], port, proto, unset), sent,
         None if sent is None or total is None else total - sent, lineno)
