"""The fast path for Zeek TSV and binetflow: pyarrow's CSV reader, column by column.

Used when pyarrow is installed (``connguard[cli]``); it gives the same flows
as the row readers in readers.py. Every column is read as text; a batch is
converted with pyarrow's compute functions, and a batch where any value does
not convert cleanly goes row by row through the row readers, which say what
was wrong. A line with the wrong number of fields is skipped with its line
number (pyarrow reports it). In a Zeek log a directive that changes nothing
(``#close``, or the same header again in logs joined end to end) is no row;
from one that changes how rows read (a new ``#fields``), or a row whose first
field starts with '#', the row reader takes over, as it reads directives; so
it does from bytes that are not UTF-8, which it replaces.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections import deque
from collections.abc import Callable, Generator
from typing import IO, Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from .readers import TRANSPORTS, Chunk, Skipped, _argus_port, _new_chunk

BLOCK = 4 << 20                 # bytes pyarrow parses at a time

# The columns a flow is made of, by role, in the order of the readers' column indexes.
ZEEK_ROLES = ("start", "source", "host", "port", "proto", "duration", "sent", "received")
ARGUS_ROLES = ("start", "source", "host", "port", "proto", "duration", "sent", "total")


class _NotUtf8(Exception):
    """Raised out of pyarrow's reader by _Utf8: the row reader takes over."""


class _Utf8:
    """A binary stream as pyarrow reads it, stopped with _NotUtf8 where it is not
    UTF-8: pyarrow would report such a line of the wrong length to the row
    handler through an exception of its own, which it prints and ignores."""

    closed = False

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        try:
            self._decoder.decode(data, final=not data)
        except UnicodeDecodeError:
            raise _NotUtf8 from None
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        pass                                 # the stream is the caller's to close


class _Lines:
    """Line numbers of the rows pyarrow returns: the stream's lines, less the
    invalid ones it handed to the handler (which numbers lines from 1)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset                 # lines before the stream starts
        self.next = 1                        # stream line of the next returned row
        self.invalid: deque[int] = deque()   # stream lines handed to the handler, ascending

    def take(self, n: int) -> list[int]:
        upper = self.next + n
        while self.invalid and self.invalid[0] < self.next:
            self.invalid.popleft()
        if not self.invalid or self.invalid[0] >= upper:
            lines = list(range(self.offset + self.next, self.offset + upper))
            self.next = upper
            return lines
        lines, line, gaps = [], self.next, set(self.invalid)
        while len(lines) < n:
            if line not in gaps:
                lines.append(self.offset + line)
            line += 1
        self.next = line
        return lines


def batches(stream: IO[bytes], where: str, names: list[str], fields: dict[str, str],
            offset: int, delimiter: str, quoted: bool, skipped: Skipped,
            convert: Callable[[dict[str, Any]], Chunk | None],
            row: Callable[[list[str], int, Chunk], None], size: int,
            directive: Callable[[str], bool] | None = None) -> Generator[Chunk, None, int | None]:
    """Read ``stream`` (its header already consumed: ``offset`` lines) in chunks.

    ``fields`` maps each role to its column name (absent roles are left out);
    ``quoted``: fields may be quoted with '"' (CSV), else nothing is quoted;
    ``convert`` turns a batch's text columns (by role) into a Chunk without
    lines, or None to take the batch row by row through ``row(parts, line,
    out)``, parts being the row's fields in file order.

    ``directive`` is given for a format whose lines starting with '#' are
    directives (Zeek): it tells whether one would change how the rows after
    it read. Returns None at the end, or the number of the first line it did
    not take, for the row reader to go on from: a row whose first field
    starts with '#', a directive that changes how rows read, or bytes that
    are not UTF-8 are at that line or after it; a UTF-8 BOM first (pyarrow
    would drop it) at once.

    Important: the stream is given up then, not closed, and pyarrow may go
    on reading it ahead in a thread of its own: read on through a new handle.
    """
    ahead = cast(io.BufferedReader, stream).peek(3)
    if not ahead:                            # no row after the header: pyarrow would
        return None                          # call the file empty and fail
    if ahead.startswith(b"\xef\xbb\xbf"):      # pyarrow would drop this BOM, the row reader not
        return offset + 1
    lines = _Lines(offset)
    # Lines of the wrong length, recorded as skipped once no stop can come before them.
    pending: deque[tuple[int, str]] = deque()

    def invalid(bad: Any) -> str:
        number = bad.number if bad.number is not None else lines.next
        lines.invalid.append(number)
        if directive is not None and bad.text.startswith("#"):
            # A new header: reading stops, the rows not yet taken go to the row reader.
            return "error" if directive(bad.text) else "skip"
        # As the row reader splits it: a line with no value is no row.
        text = bad.text.rstrip("\r\n")
        parts = next(csv.reader([text], delimiter=delimiter), []) if quoted \
            else text.split(delimiter)
        if any(parts):
            pending.append((offset + number, f"{len(parts)} fields where the header names "
                                             f"{len(names)}"))
        return "skip"

    def record(before: float) -> None:
        while pending and pending[0][0] < before:
            skipped.add(where, *pending.popleft())

    def stop(line: int) -> int:
        """Hand over at ``line``: skips after it are the row reader's to record."""
        record(line)
        pending.clear()
        return line

    wanted = list(fields.values())
    if directive is not None and names[0] not in wanted:
        wanted.append(names[0])              # where a row starting with '#' shows
    try:
        reader = pcsv.open_csv(
            _Utf8(stream),
            read_options=pcsv.ReadOptions(column_names=names, block_size=BLOCK,
                                          use_threads=False),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=invalid,
                                            quote_char='"' if quoted else False,
                                            ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(
                include_columns=wanted, column_types={name: pa.string() for name in wanted},
                strings_can_be_null=False))
        for batch in reader:
            for start in range(0, batch.num_rows, size):
                part = batch.slice(start, size)
                numbers = lines.take(part.num_rows)
                hashed = -1
                if directive is not None:
                    first = pc.starts_with(part.column(names[0]), "#")
                    if pc.any(first).as_py():
                        hashed = pc.index(first, True).as_py()
                        part, numbers, line = part.slice(0, hashed), numbers[:hashed], \
                            numbers[hashed]
                record(line if hashed >= 0 else numbers[-1])
                chunk = _chunk(part, numbers, names, fields, wanted, convert, row)
                if chunk.starts:
                    yield chunk
                if hashed >= 0:
                    return stop(line)
    except (pa.ArrowInvalid, _NotUtf8):
        return stop(offset + lines.next)
    record(math.inf)
    return None


def _chunk(part: pa.RecordBatch, numbers: list[int], names: list[str], fields: dict[str, str],
           wanted: list[str], convert: Callable[[dict[str, Any]], Chunk | None],
           row: Callable[[list[str], int, Chunk], None]) -> Chunk:
    """The flows of one part of a batch: converted column by column, or row by row."""
    columns = {role: part.column(name) for role, name in fields.items()}
    try:
        chunk = convert(columns)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        chunk = None
    if chunk is not None:
        chunk.lines.extend(numbers)
        return chunk
    chunk = _new_chunk()
    texts = {names.index(name): part.column(name).to_pylist() for name in wanted}
    for k, line in enumerate(numbers):
        parts = [""] * len(names)
        for i, column in texts.items():
            parts[i] = column[k]
        if any(parts):                       # else nothing a flow is read from
            row(parts, line, chunk)
    return chunk


def _unset(column: pa.Array, unset: tuple[str, ...]) -> pa.Array:
    """The column with unset markers as nulls."""
    return pc.if_else(pc.is_in(column, value_set=pa.array(unset)), None, column)


def _counts(column: pa.Array | None, n: int) -> pa.Array:
    if column is None:
        return pa.nulls(n, pa.int64())
    if pc.any(pc.starts_with(column, "0x", ignore_case=True)).as_py():
        raise ValueError("a hex count")                  # int64 casts read it; the row path not
    values = pc.cast(column, pa.int64())
    low = pc.min(values).as_py()
    if low is not None and low < 0:
        raise ValueError("a negative count")
    return values


def _destinations(hosts: pa.Array, ports: pa.Array | None, protos: pa.Array | None) -> list[str]:
    """readers.destination, column by column."""
    hosts = pc.fill_null(hosts, "")
    bracketed = pc.if_else(pc.match_substring(hosts, ":"),
                           pc.binary_join_element_wise("[", hosts, "]", ""), hosts)
    if ports is None:
        return bracketed.to_pylist()                # type: ignore[no-any-return]
    with_port = pc.and_(pc.is_valid(ports), pc.not_equal(hosts, ""))
    if protos is not None:                          # null: the log's unset marker
        given = pc.utf8_lower(protos)
        counted = pc.or_kleene(pc.is_null(given),
                               pc.is_in(given, value_set=pa.array(TRANSPORTS)))
        with_port = pc.and_(with_port, counted)
    joined = pc.binary_join_element_wise(bracketed, ":", pc.cast(ports, pa.string()), "")
    return pc.if_else(pc.fill_null(with_port, False), joined, bracketed).to_pylist()  # type: ignore[no-any-return]


def _ports(column: pa.Array) -> pa.Array:
    values = pc.cast(column, pa.int64())
    low, high = pc.min_max(values).values()
    if low.as_py() is not None and (low.as_py() < 0 or high.as_py() > 65535):
        raise ValueError("a port out of range")
    return values


def zeek(columns: dict[str, Any], unset: tuple[str, ...]) -> Chunk:
    """A batch of Zeek TSV text columns as flows (raises when one needs the row path)."""
    n = len(columns["start"])
    col = {role: _unset(value, unset) for role, value in columns.items()}
    starts = pc.cast(columns["start"], pa.float64())      # an unset ts fails: row path
    ports = _ports(col["port"]) if "port" in col else None
    durations = pc.cast(col["duration"], pa.float64()) if "duration" in col else \
        pa.nulls(n, pa.float64())
    sent = _counts(col.get("sent"), n)
    received = _counts(col.get("received"), n)
    return Chunk(starts.to_pylist(), durations.to_pylist(), columns["source"].to_pylist(),
                 _destinations(col["host"] if "host" in col else pa.nulls(n, pa.string()),
                               ports, col.get("proto")),
                 sent.to_pylist(), received.to_pylist(), [])


def argus(columns: dict[str, Any]) -> Chunk:
    """A batch of binetflow text columns as flows (raises when one needs the row path)."""
    n = len(columns["start"])
    col = {role: _unset(value, ("",)) for role, value in columns.items()}
    text = columns["start"]
    # As the row path reads it: the minute by strptime, then float seconds.
    if not pc.all(pc.equal(pc.utf8_slice_codeunits(text, 16, 17), ":")).as_py():
        raise ValueError("not YYYY/MM/DD HH:MM:SS")
    stamps = pc.strptime(pc.utf8_slice_codeunits(text, 0, 16), format="%Y/%m/%d %H:%M", unit="s")
    # strptime rolls a day past the month's end over (2011/02/30 reads as March 2),
    # where the row path refuses the date: such a batch goes row by row.
    days = pc.cast(pc.utf8_slice_codeunits(text, 8, 10), pa.int64())
    if not pc.all(pc.equal(pc.day(stamps), days)).as_py():
        raise ValueError("not a calendar date")
    minutes = pc.cast(pc.cast(stamps, pa.int64()), pa.float64())
    seconds = pc.cast(pc.utf8_slice_codeunits(text, 17, 64), pa.float64())
    low, high = pc.min_max(seconds).values()
    if low.as_py() < 0.0 or high.as_py() >= 61.0:
        raise ValueError("not YYYY/MM/DD HH:MM:SS")
    ports = None
    if "port" in col:
        port = col["port"]
        hexed = pc.fill_null(pc.starts_with(port, "0x", ignore_case=True), False)
        if pc.any(hexed).as_py():
            # Hex (ICMP type and code, as Argus writes them): those read as the row path does.
            values = [_argus_port(p) for p in pc.filter(port, hexed).to_pylist()]
            port = pc.replace_with_mask(pc.cast(pc.if_else(hexed, None, port), pa.int64()),
                                        hexed, pa.array(values, pa.int64()))
        ports = _ports(port)
    durations = pc.cast(col["duration"], pa.float64()) if "duration" in col else \
        pa.nulls(n, pa.float64())
    sent = _counts(col.get("sent"), n)
    total = _counts(col.get("total"), n)
    received = pc.subtract(total, sent)
    low_received = pc.min(received).as_py()
    if low_received is not None and low_received < 0:
        raise ValueError("TotBytes below SrcBytes")
    return Chunk(pc.add(minutes, seconds).to_pylist(), durations.to_pylist(),
                 columns["source"].to_pylist(),
                 _destinations(columns["host"], ports, col.get("proto")),
                 sent.to_pylist(), received.to_pylist(), [])
