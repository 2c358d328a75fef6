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

import csv
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from .readers import TRANSPORTS, Chunk, Skipped, _argus_port, _new_chunk

BLOCK = 4 << 20                 # bytes pyarrow parses at a time

# The columns a flow is made of, by role, in the order of the readers' column indexes.
ZEEK_ROLES = ("start", "source", "host", "port", "proto", "duration", "sent", "received")
ARGUS_ROLES = ("start", "source", "host", "port", "proto", "duration", "sent", "total")


class Handover(NamedTuple):
    """Where the row reader goes on: from line ``line``, which is in ``block``,
    the bytes read from the stream after line ``first`` (the stream's rest
    follows them)."""

    line: int
    first: int
    block: bytes


def batches(stream: IO[bytes], where: str, names: list[str], fields: dict[str, str],
            offset: int, delimiter: str, quoted: bool, skipped: Skipped,
            convert: Callable[[dict[str, Any]], Chunk | None],
            row: Callable[[list[str], int, Chunk], None], size: int,
            directive: Callable[[str], bool] | None = None
            ) -> Generator[Chunk, None, Handover | None]:
    """Read ``stream`` (its header already consumed: ``offset`` lines) in chunks.

    ``fields`` maps each role to its column name (absent roles are left out);
    ``quoted``: fields may be quoted with '"' (CSV), else nothing is quoted;
    ``convert`` turns a batch's text columns (by role) into a Chunk without
    lines, or None to take the batch row by row through ``row(parts, line,
    out)``, parts being the row's fields in file order.

    ``directive`` is given for a format whose lines starting with '#' are
    directives (Zeek): it tells whether one would change how the rows after
    it read. Returns None at the end, or a Handover for the row reader to go
    on from: at a row whose first field starts with '#', else at the start
    of the block holding a directive that changes how rows read, bytes that
    are not UTF-8, a BOM first (pyarrow would drop it) or anything else
    pyarrow does not read line for line as the row reader does.

    The stream is read in blocks of whole lines, and each block is read and
    parsed by a thread of this generator's own while the block before it is
    converted; that thread has ended when this returns or is closed.
    """
    wanted = list(fields.values())
    if directive is not None and names[0] not in wanted:
        wanted.append(names[0])              # where a row starting with '#' shows
    convert_options = pcsv.ConvertOptions(
        include_columns=wanted, column_types={name: pa.string() for name in wanted},
        strings_can_be_null=False)

    def read() -> tuple[bytes, tuple[pa.RecordBatch, dict[int, str]] | None]:
        block = stream.read(BLOCK)
        if block and not block.endswith(b"\n"):
            block += stream.readline()       # whole lines only
        return block, _parse(block, names, delimiter, quoted, convert_options, directive)

    first = offset                           # lines before the block
    with ThreadPoolExecutor(1, thread_name_prefix="connguard-replay") as pool:
        ahead = pool.submit(read)
        while True:
            block, parsed = ahead.result()
            if not block:
                return None
            ahead = pool.submit(read)

            def handover(line: int) -> Handover:
                return Handover(line, first, block + ahead.result()[0])   # noqa: B023 - called at once

            if parsed is None:
                return handover(first + 1)
            # Lines as the row reader counts them: LF, CR LF or a bare CR end one.
            count = block.count(b"\n") + (not block.endswith((b"\n", b"\r")))
            if b"\r" in block:
                count += block.count(b"\r") - block.count(b"\r\n")
            batch, invalid = parsed
            numbers = [first + k for k in range(1, count + 1) if k not in invalid] \
                if invalid else list(range(first + 1, first + count + 1))
            if len(numbers) != batch.num_rows:   # a quoted line end, say: not line for line
                return handover(first + 1)
            stop = None
            if directive is not None and batch.num_rows:
                hashed = pc.starts_with(batch.column(names[0]), "#")
                if pc.any(hashed).as_py():
                    keep = pc.index(hashed, True).as_py()
                    stop, batch, numbers = numbers[keep], batch.slice(0, keep), numbers[:keep]
            for k, reason in invalid.items():
                if reason and (stop is None or first + k < stop):
                    skipped.add(where, first + k, reason)
            for start in range(0, batch.num_rows, size):
                chunk = _chunk(batch.slice(start, size), numbers[start:start + size], names,
                               fields, wanted, convert, row)
                if chunk.starts:
                    yield chunk
            if stop is not None:
                return handover(stop)
            first += count


def _parse(block: bytes, names: list[str], delimiter: str, quoted: bool, convert_options: Any,
           directive: Callable[[str], bool] | None
           ) -> tuple[pa.RecordBatch, dict[int, str]] | None:
    """A block's rows, with the lines that are none (their number, from 1, and
    why they are skipped, or "" for a line with no value or a directive);
    None where the row reader must read the block."""
    if not block or block.startswith(b"\xef\xbb\xbf"):
        return None
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return None
    invalid: dict[int, str] = {}

    def on_invalid(bad: Any) -> str:
        if bad.number is None:
            return "error"
        if directive is not None and bad.text.startswith("#"):
            invalid[bad.number] = ""
            return "error" if directive(bad.text) else "skip"
        # As the row reader splits it: a line with no value is no row.
        text = bad.text.rstrip("\r\n")
        parts = next(csv.reader([text], delimiter=delimiter), []) if quoted \
            else text.split(delimiter)
        invalid[bad.number] = f"{len(parts)} fields where the header names {len(names)}" \
            if any(parts) else ""
        return "skip"

    try:
        table = pcsv.read_csv(
            pa.py_buffer(block),
            read_options=pcsv.ReadOptions(column_names=names, use_threads=False,
                                          block_size=len(block) + 1),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                                            quote_char='"' if quoted else False,
                                            ignore_empty_lines=False),
            convert_options=convert_options)
    except pa.ArrowInvalid:                  # a directive that changes the header, ...
        return None
    batches = table.combine_chunks().to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], table.schema), invalid
    return batches[0], invalid


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
