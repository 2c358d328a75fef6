"""``connguard replay``: readers, the engine, the command, against fixture files written here."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connguard.replay import readers
from connguard.replay.engine import ConfigError, build_tracker, replay_files
from connguard.replay.readers import FlowFile, FormatError, Skipped
from connguard.tracker import Tracker

MakeTracker = Callable[..., Tracker]

ZEEK_FIELDS = ("ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration "
               "orig_bytes resp_bytes conn_state extra_unknown_column").split()


def zeek_tsv(rows: list[list[str]], *, close: bool = True) -> str:
    head = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
            "#path\tconn\n#fields\t" + "\t".join(ZEEK_FIELDS) + "\n"
            "#types\t" + "\t".join("string" for _ in ZEEK_FIELDS) + "\n")
    body = "".join("\t".join(r) + "\n" for r in rows)
    return head + body + ("#close\t2024-01-01-00-00-00\n" if close else "")


def zrow(ts: str, src: str, dst: str, port: str, proto: str = "tcp", duration: str = "1.0",
         sent: str = "10", received: str = "20") -> list[str]:
    return [ts, "Cuid", src, "50000", dst, port, proto, "-", duration, sent, received, "SF",
            "(empty)"]


ZEEK_ROWS = [
    zrow("1000.5", "10.0.0.1", "192.0.2.7", "443"),
    zrow("1001.0", "10.0.0.1", "2001:db8::25", "25", duration="-", sent="-", received="(empty)"),
    zrow("999.0", "10.0.0.2", "192.0.2.8", "8", proto="icmp"),            # out of order
    zrow("oops", "10.0.0.3", "192.0.2.9", "80"),                          # bad ts
    zrow("1002.0", "10.0.0.3", "192.0.2.9", "99999"),                     # bad port
    zrow("1003.0", "10.0.0.3", "192.0.2.9", "80", sent="-5"),             # negative bytes
    ["1004.0", "only", "three"],                                          # wrong field count
    zrow("1005.0", "fe80::1", "ff02::1", "5355", proto="udp"),
    zrow("-", "10.0.0.4", "192.0.2.9", "80"),                             # unset ts
]
# (start, duration, source, destination, sent, received) the rows above give.
ZEEK_FLOWS = [
    (1000.5, 1.0, "10.0.0.1", "192.0.2.7:443", 10, 20),
    (1001.0, None, "10.0.0.1", "[2001:db8::25]:25", None, None),
    (999.0, 1.0, "10.0.0.2", "192.0.2.8", 10, 20),
    (1005.0, 1.0, "fe80::1", "[ff02::1]:5355", 10, 20),
]
ZEEK_SKIPPED = {11: "ts is not a number: 'oops'", 12: "id.resp_p is not a port: 99999",
                13: "orig_bytes is negative: -5", 14: "3 fields where the header names 13",
                16: "ts is unset"}

ARGUS_HEADER = ("StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,"
                "TotBytes,SrcBytes,Label\n")
ARGUS_LINES = [
    "2011/08/16 10:01:46.972101,1.5,tcp,147.32.84.165,1025,   ->,74.125.232.195,443,FSPA_FSPA,"
    "0,0,10,1200,300,flow=Background\n",
    "2011/08/16 10:01:47.000000,0,icmp,147.32.84.165,0x0008,   ->,147.32.96.69,0x0303,URP,0,,1,"
    "60,60,flow=Background\n",
    "2011/08/16 10:01:48.5,2.0,udp,2001:db8::1,53,  <->,2001:db8::53,0x0035,CON,0,0,2,300,100,"
    "flow=Background\n",
    "2011/08/16 10:01:49.000000,0.1,arp,147.32.84.1,,   who,147.32.84.2,,INT,,,1,60,60,"
    "flow=Background\n",
    "2011/13/16 10:01:49.000000,0.1,tcp,147.32.84.1,1,   ->,1.2.3.4,80,S_,0,0,1,60,60,"
    "flow=Background\n",
    "2011/08/16 10:01:50.000000,0.1,tcp,147.32.84.1,1,   ->,1.2.3.4,80,S_,0,0,1,60,100,"
    "flow=Background\n",
    "2011/08/16 10:01:51.000000,0.1,tcp,147.32.84.1,1\n",
    '2011/08/16 10:01:52.000000,0.1,tcp,147.32.84.1,1,   ->,1.2.3.4,80,S_,0,0,1,60,20,'
    '"flow=From-Botnet, quoted"\n',
]
T0 = 1313488860.0                                    # 2011-08-16 10:01:00 UTC
ARGUS_FLOWS = [
    (T0 + 46.972101, 1.5, "147.32.84.165", "74.125.232.195:443", 300, 900),
    (T0 + 47.0, 0.0, "147.32.84.165", "147.32.96.69", 60, 0),
    (T0 + 48.5, 2.0, "2001:db8::1", "[2001:db8::53]:53", 100, 200),
    (T0 + 49.0, 0.1, "147.32.84.1", "147.32.84.2", 60, 0),
    (T0 + 52.0, 0.1, "147.32.84.1", "1.2.3.4:80", 20, 40),
]
ARGUS_SKIPPED = {6: "StartTime is not YYYY/MM/DD HH:MM:SS: '2011/13/16 10:01:49.000000'",
                 7: "TotBytes 60 is less than SrcBytes 100",
                 8: "5 fields where the header names 15"}


@pytest.fixture(params=["arrow", "stdlib"])
def path_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each reader test runs on pyarrow's fast path and on the stdlib readers."""
    if request.param == "arrow":
        pytest.importorskip("pyarrow", reason="the fast path needs pyarrow (connguard[cli])")
    else:
        monkeypatch.setattr(FlowFile, "_arrow", lambda self, skipped, size: None)
    return str(request.param)


def read(path: Path, fmt: str = "auto", size: int = readers.CHUNK) -> tuple[str, list[Any], Skipped]:
    f = FlowFile(str(path), fmt)
    skipped = Skipped()
    flows = []
    try:
        for chunk in f.chunks(skipped, size):
            flows += list(zip(*chunk, strict=True))
    finally:
        f.close()
    return f.format, flows, skipped


def write(path: Path, text: str, gz: bool = False) -> Path:
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("size", [2, readers.CHUNK])
def test_zeek_tsv(tmp_path: Path, path_kind: str, gz: bool, size: int) -> None:
    path = write(tmp_path / "conn.log", zeek_tsv(ZEEK_ROWS), gz)
    fmt, flows, skipped = read(path, size=size)
    assert fmt == "zeek"
    assert [f[:6] for f in flows] == ZEEK_FLOWS
    assert [f[6] for f in flows] == [8, 9, 10, 15]               # line numbers
    assert {int(e.split(":")[1]): e.split(": ", 1)[1] for e in skipped.examples} == ZEEK_SKIPPED
    assert skipped.count == 5


def test_zeek_json(tmp_path: Path) -> None:
    lines = [
        {"ts": 5.5, "id.orig_h": "10.0.0.1", "id.resp_h": "192.0.2.1", "id.resp_p": 25,
         "proto": "tcp", "duration": 0.5, "orig_bytes": 100, "resp_bytes": 0, "new_key": [1]},
        {"ts": "2024-01-01T00:00:01.5Z", "id.orig_h": "10.0.0.2", "id.resp_h": "2001:db8::1"},
        {"ts": 7, "id.orig_h": "10.0.0.3", "id.resp_p": "443"},
        {"id.orig_h": "10.0.0.4"},
        [1, 2],
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n{broken\n\n"
    fmt, flows, skipped = read(write(tmp_path / "conn.json", text))
    assert fmt == "zeek-json"
    assert flows == [(5.5, 0.5, "10.0.0.1", "192.0.2.1:25", 100, 0, 1),
                     (1704067201.5, None, "10.0.0.2", "[2001:db8::1]", None, None, 2)]
    assert skipped.examples == ["{}:3: id.resp_p is not a port: '443'".format(tmp_path / "conn.json"),
                                f"{tmp_path / 'conn.json'}:4: ts is missing",
                                f"{tmp_path / 'conn.json'}:5: not a JSON object",
                                f"{tmp_path / 'conn.json'}:6: not a JSON object"]


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("size", [2, readers.CHUNK])
def test_binetflow(tmp_path: Path, path_kind: str, gz: bool, size: int) -> None:
    path = write(tmp_path / "capture.binetflow", ARGUS_HEADER + "".join(ARGUS_LINES), gz)
    fmt, flows, skipped = read(path, size=size)
    assert fmt == "binetflow"
    assert [f[:6] for f in flows] == ARGUS_FLOWS
    assert [f[6] for f in flows] == [2, 3, 4, 5, 9]
    assert {int(e.split(":")[1]): e.split(": ", 1)[1] for e in skipped.examples} == ARGUS_SKIPPED
    assert skipped.count == 3


def test_plain_csv(tmp_path: Path) -> None:
    text = ("Time,Src,Dst,DPort,Proto,Sent,Received,Note\n"
            "1700000000.25,10.0.0.1,192.0.2.1,25,tcp,10,20,x\n"
            "2024-01-01T00:00:00+01:00,10.0.0.2,mx.example:25,,,,,\n"
            "later,10.0.0.3,192.0.2.1,25,tcp,1,1,x\n"
            ",,,,,,,\n"
            "1700000001,,192.0.2.1,25,tcp,1,1,x\n")
    fmt, flows, skipped = read(write(tmp_path / "flows.csv", text))
    assert fmt == "csv"
    assert flows == [(1700000000.25, None, "10.0.0.1", "192.0.2.1:25", 10, 20, 2),
                     (1704063600.0, None, "10.0.0.2", "mx.example:25", None, None, 3)]
    assert skipped.reasons == {"source is empty": 1, "time is not ISO 8601: 'later'": 1}
    assert [e.split(": ")[0].rsplit(":", 1)[1] for e in skipped.examples] == ["4", "6"]


def test_a_protocol_not_given_or_in_capitals_keeps_the_port(tmp_path: Path,
                                                           path_kind: str) -> None:
    """An unset protocol field gives no protocol, so the port counts, as with no column."""
    rows = [zrow(f"{1000 + i}.0", "10.0.0.1", "192.0.2.7", "25", proto=proto)
            for i, proto in enumerate(["tcp", "-", "(empty)", "TCP", "Udp", "icmp"])]
    _, flows, skipped = read(write(tmp_path / "conn.log", zeek_tsv(rows)))
    assert [f[3] for f in flows] == ["192.0.2.7:25"] * 5 + ["192.0.2.7"]
    argus = [f"2011/08/16 10:01:4{i}.0,1.0,{proto},147.32.84.165,1025,   ->,192.0.2.7,25,CON,"
             "0,0,2,300,100,flow=Background\n" for i, proto in enumerate(["", "TCP", "ICMP"])]
    _, flows, _ = read(write(tmp_path / "c.binetflow", ARGUS_HEADER + "".join(argus)))
    assert [f[3] for f in flows] == ["192.0.2.7:25", "192.0.2.7:25", "192.0.2.7"]
    csv_text = "ts,src,dst,dport,proto\n" + "".join(
        f"{1000 + i},10.0.0.1,192.0.2.7,25,{proto}\n" for i, proto in enumerate(["", "-", "TCP"]))
    _, flows, _ = read(write(tmp_path / "flows.csv", csv_text))
    assert [f[3] for f in flows] == ["192.0.2.7:25"] * 3
    assert skipped.count == 0


def test_lines_with_nothing_a_flow_is_read_from_are_no_rows(tmp_path: Path,
                                                           path_kind: str) -> None:
    """Only separators, as many as the header's or fewer, or values only in
    columns no flow is read from (uid, conn_state; Label): no row on either path."""
    rows = [zrow("1000.0", "10.0.0.1", "192.0.2.7", "443"), [""] * len(ZEEK_FIELDS), ["", ""],
            ["", "Cuid", "", "", "", "", "", "", "", "", "", "SF", ""],
            zrow("1001.0", "10.0.0.2", "192.0.2.7", "443")]
    _, flows, skipped = read(write(tmp_path / "conn.log", zeek_tsv(rows)))
    assert [(f[2], f[6]) for f in flows] == [("10.0.0.1", 8), ("10.0.0.2", 12)]
    assert skipped.count == 0
    text = (ARGUS_HEADER + ARGUS_LINES[0] + "," * 14 + "\n" + ",,,,\n" + "," * 14
            + "flow=Background\n" + ARGUS_LINES[2])
    _, flows, skipped = read(write(tmp_path / "c.binetflow", text))
    assert [f[6] for f in flows] == [2, 6]
    assert skipped.count == 0


@pytest.mark.parametrize("close", [True, False])          # without #close: the block reader
def test_the_logs_own_unset_marker_gives_no_protocol(tmp_path: Path, path_kind: str,
                                                    close: bool) -> None:
    rows = [zrow(f"{1000 + i}.0", "10.0.0.1", "192.0.2.7", "25", proto="NA") for i in range(5)]
    rows.append(zrow("1010.0", "10.0.0.1", "192.0.2.7", "25", proto="icmp"))
    text = zeek_tsv(rows, close=close).replace("#unset_field\t-", "#unset_field\tNA")
    _, flows, skipped = read(write(tmp_path / "conn.log", text), size=2)
    assert [f[3] for f in flows] == ["192.0.2.7:25"] * 5 + ["192.0.2.7"]
    assert skipped.count == 0


@pytest.mark.parametrize("close", ["#close\t2024-01-01-00-00-00\n", ""])
def test_a_log_with_a_header_and_no_rows_has_no_flows(tmp_path: Path, path_kind: str,
                                                       close: str) -> None:
    for path in (write(tmp_path / "conn.log", zeek_tsv([], close=False) + close),
                 write(tmp_path / "c.binetflow", ARGUS_HEADER)):
        _, flows, skipped = read(path)
        assert flows == [] and skipped.count == 0


def test_both_paths_refuse_hex_byte_counts(tmp_path: Path, path_kind: str) -> None:
    rows = [zrow("1000.0", "10.0.0.1", "192.0.2.7", "443", sent="0x10"),
            zrow("1001.0", "10.0.0.2", "192.0.2.7", "443")]
    _, flows, skipped = read(write(tmp_path / "conn.log", zeek_tsv(rows, close=False)))
    assert [f[2] for f in flows] == ["10.0.0.2"]
    assert skipped.reasons == {"orig_bytes is not a count: '0x10'": 1}
    text = ARGUS_HEADER + ARGUS_LINES[0].replace(",1200,300,", ",1200,0x12c,") + '"",""\n'
    _, flows, skipped = read(write(tmp_path / "c.binetflow", text))
    assert flows == [] and skipped.reasons == {"SrcBytes is not a count: '0x12c'": 1}


@pytest.mark.parametrize("size", [2, readers.CHUNK])
@pytest.mark.parametrize("gz", [False, True])
def test_logs_joined_end_to_end_read_by_each_ones_header(tmp_path: Path, path_kind: str,
                                                         size: int, gz: bool) -> None:
    """``cat`` of two logs: the second one's header (other #fields, another unset
    marker) reads its rows; a row of the wrong length in the first part is still
    skipped, one under the second header is not."""
    first = zeek_tsv([zrow(f"{1000 + i}.0", "10.0.0.1", "192.0.2.7", "443") for i in range(3)]
                     + [["1003.0", "short"]])
    fields = [f for f in ZEEK_FIELDS if f not in ("uid", "extra_unknown_column")]
    second = ("#separator \\x09\n#unset_field\tNA\n#fields\t" + "\t".join(fields) + "\n"
              + "".join(f"{2000 + i}.0\t10.0.0.2\t5\t192.0.2.8\t25\ttcp\t-\tNA\t1\t2\tSF\n"
                        for i in range(3)))
    _, flows, skipped = read(write(tmp_path / "conn.log", first + second + first, gz), size=size)
    assert [(f[0], f[2], f[3], f[1]) for f in flows] == (
        [(1000.0 + i, "10.0.0.1", "192.0.2.7:443", 1.0) for i in range(3)]
        + [(2000.0 + i, "10.0.0.2", "192.0.2.8:25", None) for i in range(3)]
        + [(1000.0 + i, "10.0.0.1", "192.0.2.7:443", 1.0) for i in range(3)])
    assert [f[6] for f in flows] == [8, 9, 10, 16, 17, 18, 26, 27, 28]
    assert skipped.examples == [f"{tmp_path / 'conn.log'}:{line}: 2 fields where the header "
                                "names 13" for line in (11, 29)]


def test_pyarrow_hands_over_where_the_row_reader_would_read_otherwise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over many small pyarrow blocks (a new header, a row starting with '#', bytes
    that are not UTF-8), pyarrow's path gives what the row reader gives; joined
    logs whose header is the same stay on pyarrow's path."""
    pytest.importorskip("pyarrow", reason="the fast path needs pyarrow (connguard[cli])")
    from connguard.replay import _arrow
    monkeypatch.setattr(_arrow, "BLOCK", 300)
    rows = [zrow(f"{1000 + i}.0", f"10.0.{i // 250}.{i % 250}", "192.0.2.7", "443")
            for i in range(200)]
    fields = [f for f in ZEEK_FIELDS if f != "uid"]
    other = ("#fields\t" + "\t".join(fields) + "\n"
             + "".join("\t".join([f"{2000 + i}.0", "10.9.0.1", "5", "192.0.2.8", "25", "tcp", "-",
                                  "1", "2", "3", "SF", "-"]) + "\n" for i in range(100)))
    odd = rows[:50] + [["short"], ["#note"] + rows[50][1:]] + rows[51:120]
    joined = (zeek_tsv(odd) + "1.0\tshort\n" + other + zeek_tsv(rows[120:])).encode()
    (tmp_path / "joined.log").write_bytes(joined.replace(b"10.0.0.37", b"10.0.0.\xff7"))
    (tmp_path / "same.log").write_text(zeek_tsv(rows) * 3)
    argus = [ARGUS_LINES[0].replace("10:01:46", f"10:{i // 60:02d}:{i % 60:02d}")
             for i in range(60)]
    argus[40] = argus[40].replace("147.32.84.165", "147.32.84.\xff5")
    (tmp_path / "u.binetflow").write_bytes((ARGUS_HEADER + "".join(argus)).encode("latin-1"))
    for name in ("joined.log", "same.log", "u.binetflow"):
        for size in (7, readers.CHUNK):
            fast = read(tmp_path / name, size=size)
            with monkeypatch.context() as m:
                m.setattr(FlowFile, "_arrow", lambda self, skipped, size: None)
                by_rows = read(tmp_path / name, size=size)
            assert (fast[1], fast[2].examples, fast[2].count) == \
                (by_rows[1], by_rows[2].examples, by_rows[2].count), (name, size)
            if name == "joined.log":
                assert len(fast[1]) == 199 + 100 and fast[2].count == 2
                assert "10.0.0.\ufffd7" in [f[2] for f in fast[1]]
            if name == "u.binetflow":
                assert [f[2] for f in fast[1]].count("147.32.84.\ufffd5") == 1
    monkeypatch.setattr(FlowFile, "_zeek", None)             # the row reader is never needed
    _, flows, skipped = read(tmp_path / "same.log")
    assert len(flows) == 3 * 200 and skipped.count == 0


Z2 = "#separator \\x09\n#fields\tts\tid.orig_h\n"
A3 = "StartTime,SrcAddr,DstAddr\n"
A3_ROW = "2011/08/16 10:01:46,1.2.3.4,5.6.7.8\n"


ODD_LINES = [
    ("quote-only.log", Z2 + '"\n1.0\t10.0.0.1\n', 1, 1),          # Zeek quotes nothing
    ("comma.log", '#separator \\x2c\n#fields,ts,id.orig_h,id.resp_h\n1.0,"10.0.0.1",x\n'
                  '2.0,"a,b",y\n', 1, 1),
    ("e9.log", "#separator \\xe9\n#fields\xe9ts\xe9id.orig_h\n1.0\xe910.0.0.1\n", 1, 0),
    ("bom.log", Z2 + "\ufeff1.0\t10.0.0.1\n2.0\t10.0.0.2\n", 1, 1),
    ("space.log", "#separator ||\n#fields||ts||id.orig_h\n \n1.0||10.0.0.1\n", 1, 1),
    ("hash.log", "#separator \\x09\n#fields\tid.orig_h\tts\n10.0.0.1\t1.0\n#note\t2.0\n", 1, 0),
    ("quotes.binetflow", A3 + A3_ROW + '""""\n' + '",",\n' + A3_ROW, 2, 2),
    ("bom.binetflow", A3 + "\ufeff" + A3_ROW + A3_ROW, 1, 1),
    ("bom-first.log", "\ufeff" + Z2 + "1.0\t10.0.0.1\n", 1, 0),     # the file's own BOM
    ("bom-first.binetflow", "\ufeff" + A3 + A3_ROW, 1, 0),
    ("bom-first.csv", "\ufeffts,src\n1000,10.0.0.1\n", 1, 0),
]


@pytest.mark.parametrize("name, text, flows, skips", ODD_LINES, ids=[c[0] for c in ODD_LINES])
@pytest.mark.parametrize("size", [1, readers.CHUNK])
def test_odd_lines_read_alike_on_both_paths(tmp_path: Path, name: str, text: str, flows: int,
                                            skips: int, size: int) -> None:
    """Lines the row readers take one way and pyarrow's parser would another: a
    Zeek line of only a quote (Zeek quotes nothing, also with a ',' separator),
    a non-ASCII separator, a BOM before a row, a blank-looking line after
    #fields, a row starting with '#' where ts is not the first column, binetflow
    lines of only quotes and commas."""
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    results = {}
    for kind in ("arrow", "stdlib"):
        with pytest.MonkeyPatch.context() as m:
            if kind == "stdlib":
                m.setattr(FlowFile, "_arrow", lambda self, skipped, size: None)
            _, found, skipped = read(path, size=size)
        results[kind] = (found, skipped.examples, skipped.count)
    assert results["arrow"] == results["stdlib"]
    assert (len(results["stdlib"][0]), results["stdlib"][2]) == (flows, skips)


def test_nothing_reads_the_stream_once_pyarrow_hands_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """The row reader goes on from the stream pyarrow's path read: nothing else
    may read it after the handover (a thread reading ahead took lines the row
    reader should have had, and could abort the process at exit)."""
    pytest.importorskip("pyarrow", reason="the fast path needs pyarrow (connguard[cli])")
    import io
    import threading
    import time

    from connguard.replay import _arrow
    monkeypatch.setattr(_arrow, "BLOCK", 200)
    reads: list[str] = []

    class Stream(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            reads.append(threading.current_thread().name)
            return super().read(n)

    rows = [f"{1000 + i}.0\t10.0.0.{i % 250}\n" for i in range(400)]
    stream = Stream("".join(rows[:200] + ["#unset_field\tNA\n"] + rows[200:]).encode())
    header = readers._ZeekHeader("x.log")
    header.row("#fields\tts\tid.orig_h", 1, readers._new_chunk(), Skipped())
    batches = _arrow.batches(stream, "x.log", header.names, {"start": "ts", "source": "id.orig_h"},
                             1, "\t", False, Skipped(),
                             lambda columns: _arrow.zeek(columns, header.unset),
                             lambda parts, line, out: None, 100, header.changes)
    taken = []
    with pytest.raises(StopIteration) as stopped:
        while True:
            taken += next(batches).lines
    handover = stopped.value.value
    # The directive, line 202, is where the row reader goes on, within the block.
    assert (handover.line, taken) == (202, list(range(2, 202)))
    assert handover.block.decode().splitlines()[201 - handover.first] == "#unset_field\tNA"
    done = len(reads)
    time.sleep(0.2)
    assert len(reads) == done                        # and none is under way


def test_a_row_starting_with_hash_is_a_directive_on_both_paths(tmp_path: Path,
                                                              path_kind: str) -> None:
    rows = [zrow("1000.0", "10.0.0.1", "192.0.2.7", "443"),
            ["#note"] + zrow("1001.0", "10.0.0.9", "192.0.2.7", "443")[1:],
            zrow("1002.0", "10.0.0.2", "192.0.2.7", "443")]
    _, flows, skipped = read(write(tmp_path / "conn.log", zeek_tsv(rows)))
    assert [(f[2], f[6]) for f in flows] == [("10.0.0.1", 8), ("10.0.0.2", 10)]
    assert skipped.count == 0
    text = ARGUS_HEADER + ARGUS_LINES[0] + "#note\n" + ARGUS_LINES[2]
    _, flows, skipped = read(write(tmp_path / "c.binetflow", text))
    assert [f[6] for f in flows] == [2, 4]
    assert skipped.reasons == {"1 fields where the header names 15": 1}


def test_a_bad_directive_after_rows_stops_both_paths(tmp_path: Path, path_kind: str) -> None:
    text = zeek_tsv([zrow("1000.0", "10.0.0.1", "192.0.2.7", "443")]) + "#separator \\x\n"
    with pytest.raises(FormatError, match=r"conn.log:10: #separator \\x is not a separator"):
        read(write(tmp_path / "conn.log", text))


def test_line_endings_and_a_longer_separator_read_alike(tmp_path: Path, path_kind: str) -> None:
    rows = [zrow(f"{1000 + i}.0", f"10.0.0.{i + 1}", "192.0.2.7", "443") for i in range(3)]
    plain = zeek_tsv(rows)
    expected = read(write(tmp_path / "lf.log", plain))[1]
    assert len(expected) == 3
    for name, text in [("crlf", plain.replace("\n", "\r\n")), ("cr", plain.replace("\n", "\r")),
                       ("sep", plain.replace("\t", "||").replace("#separator \\x09",
                                                               "#separator ||"))]:
        fmt, flows, skipped = read(write(tmp_path / f"{name}.log", text))
        assert (fmt, flows, skipped.count) == ("zeek", expected, 0), name
    argus = ARGUS_HEADER + ARGUS_LINES[0] + ARGUS_LINES[2]
    expected = read(write(tmp_path / "lf.binetflow", argus))[1]
    assert len(expected) == 2
    for ending in ("\r\n", "\r"):
        _, flows, skipped = read(write(tmp_path / "c.binetflow", argus.replace("\n", ending)))
        assert (flows, skipped.count) == (expected, 0), repr(ending)


def test_a_day_past_the_months_end_is_skipped_on_both_paths(tmp_path: Path,
                                                          path_kind: str) -> None:
    """pyarrow's strptime would read 2011/02/30 as March 2; the row path refuses it."""
    lines = [f"2011/{day} 10:01:46.5,1.5,tcp,147.32.84.165,1025,   ->,192.0.2.7,443,CON,"
             "0,0,10,1200,300,flow=Background\n" for day in ("02/28", "02/30", "04/31", "02/29")]
    _, flows, skipped = read(write(tmp_path / "c.binetflow", ARGUS_HEADER + "".join(lines)))
    assert [f[0] for f in flows] == [1298887306.5]
    assert skipped.count == 3
    assert all("StartTime is not YYYY/MM/DD HH:MM:SS" in e for e in skipped.examples)


def test_numbers_beyond_a_float_are_skipped_rows(tmp_path: Path) -> None:
    big = "1" + "0" * 400
    text = (f'{{"ts": 1000.0, "id.orig_h": "10.0.0.1"}}\n'
            f'{{"ts": {big}, "id.orig_h": "10.0.0.2"}}\n'
            f'{{"ts": 1001.0, "id.orig_h": "10.0.0.3", "duration": {big}}}\n')
    _, flows, skipped = read(write(tmp_path / "conn.json", text))
    assert [f[2] for f in flows] == ["10.0.0.1"]
    assert skipped.reasons == {f"ts is out of range: '{big[:40]}'": 1,
                               f"duration is out of range: '{big[:40]}'": 1}


def test_csv_rows_with_more_fields_than_names(tmp_path: Path) -> None:
    """Empty extra fields (a trailing comma) shift nothing; others would shift the columns."""
    text = ("ts,src,dst,dport\n"
            "1000,10.0.0.1,192.0.2.1,25,,\n"
            "1001,10.0.0.2,192.0.2.1,25,443,junk\n")
    _, flows, skipped = read(write(tmp_path / "flows.csv", text))
    assert [f[2] for f in flows] == ["10.0.0.1"]
    assert skipped.reasons == {"6 fields where the header names 4": 1}


@pytest.mark.parametrize("text, message", [
    ("", "the file is empty"),
    ("hello world\n", "cannot tell its format from the first line ('hello world')"),
    ("#separator \\x09\n#fields\tuid\tproto\n", "#fields has no 'ts'"),
    ("#separator \\x09\n1.0\t10.0.0.1\n", "a data line before the #fields header"),
    ("#separator \\x\n#fields\tts\tid.orig_h\n", "bad.log:1: #separator \\x is not a separator"),
])
def test_unreadable_files_raise_format_error(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.log", text)
    with pytest.raises(FormatError, match=re.escape(message)):
        read(path)


def test_formats_are_told_apart_from_the_first_line() -> None:
    assert readers.detect("#separator \\x09") == "zeek"
    assert readers.detect('{"ts": 1}') == "zeek-json"
    assert readers.detect(ARGUS_HEADER) == "binetflow"
    assert readers.detect("ts,src,dst") == "csv"
    assert readers.detect("a,b,c") is None
    with pytest.raises(FormatError, match="unknown format 'xml'"):
        FlowFile("whatever", "xml")


def scan_log(tmp_path: Path, name: str = "conn.log", scanner: str = "10.9.9.9",
             start: float = 1_700_000_000.0) -> Path:
    """A Zeek log: ordinary browsing, and a vertical scan of 200 ports, in end order."""
    rows = [zrow(f"{start + i * 7.0:.6f}", f"10.0.0.{i % 20}", "192.0.2.80", "443",
                 duration="30.0", sent="900", received="40000") for i in range(300)]
    rows += [zrow(f"{start + 600 + i * 0.5:.6f}", scanner, "192.0.2.200", str(1000 + i),
                  duration="0.1", sent="0", received="0") for i in range(200)]
    rows.sort(key=lambda r: float(r[0]) + float(r[8]))
    return write(tmp_path / name, zeek_tsv(rows))


def test_engine_finds_the_scanner_on_both_cores(tmp_path: Path, make_tracker: MakeTracker) -> None:
    result = replay_files([str(scan_log(tmp_path))], tracker=make_tracker())
    assert [(f.source, sorted(f.evidence)) for f in result.findings] == [("10.9.9.9", ["port_scan"])]
    summary = result.summary
    assert summary["flows"] == 500 and summary["sources"] == 21 and summary["late"] == 0
    assert summary["findings"] == {"port_scan": 1}
    doc = result.document(top=10)
    chart = doc["charts"]["sources"][0]
    assert chart["source"] == "10.9.9.9"
    other = doc["charts"]["classes"].index("other")
    assert sum(bar[other] for bar in chart["counts"]) == 200
    assert doc["charts"]["overview"]["patterns"] == ["port_scan"]


def test_a_small_reorder_buffer_counts_late_flows(tmp_path: Path, make_tracker: MakeTracker) -> None:
    path = write(tmp_path / "conn.log", zeek_tsv(
        [zrow(f"{1000 + i}.0", "10.0.0.1", "192.0.2.1", "443") for i in range(50)]
        + [zrow("10.0", "10.0.0.2", "192.0.2.1", "443")]))
    # Chunks of 5 flows, 10 held back: the last row is 40 rows late.
    assert replay_files([str(path)], tracker=make_tracker(), reorder=10,
                        chunk=5).summary["late"] == 1
    assert replay_files([str(path)], tracker=make_tracker(), reorder=100,
                        chunk=5).summary["late"] == 0


def test_files_are_merged_in_time(tmp_path: Path, make_tracker: MakeTracker) -> None:
    # The scan is split over two files by port parity: only merged in time is it one scan.
    start = 1_700_000_000.0
    halves = [[zrow(f"{start + i * 0.5:.6f}", "10.9.9.9", "192.0.2.200", str(1000 + i),
                    duration="0.1", sent="0", received="0") for i in range(k, 200, 2)]
              for k in (0, 1)]
    paths = [str(write(tmp_path / f"{k}.log", zeek_tsv(h))) for k, h in enumerate(halves)]
    result = replay_files(paths, tracker=make_tracker(), reorder=16, chunk=8)
    assert result.summary["late"] == 0
    assert [f.source for f in result.findings] == ["10.9.9.9"]
    assert [f["flows"] for f in result.summary["files"]] == [100, 100]


def test_config_builds_the_tracker() -> None:
    tracker = build_tracker({"tracker": {"capacity": 1000},
                             "port_scan": {"ports": 10}, "dns_tunnel": {"enabled": False}},
                            window=120.0)
    assert tracker.window == 120.0
    assert tracker.pattern_config["port_scan"].ports == 10           # type: ignore[attr-defined]
    assert tracker.pattern_config["port_scan"].window == 120.0       # type: ignore[attr-defined]
    assert tracker.pattern_config["dns_tunnel"] is None
    cases: list[tuple[dict[str, Any], str]] = [({"nope": {}}, r"unknown section \[nope\]"),
                         ({"tracker": {"clock": 1}}, r"\[tracker\] has no key 'clock'"),
                         ({"port_scan": {"portz": 1}}, r"\[port_scan\]: .*portz"),
                         ({"port_scan": {"ports": -1}}, r"\[port_scan\]: PortScan.ports"),
                         ({"spam_relay": {"enabled": "no"}}, "enabled must be true or false")]
    for bad, message in cases:
        with pytest.raises(ConfigError, match=message):
            build_tracker(bad)


# --- the command, end to end -------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None, stderr: Any = subprocess.PIPE,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connguard", "replay", *args],
                          stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def test_cli_json_end_to_end(tmp_path: Path) -> None:
    log = scan_log(tmp_path)
    broken = write(tmp_path / "more.log", zeek_tsv(ZEEK_ROWS))
    done = cli(str(log), str(broken), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""                         # no progress bar off a terminal
    document = json.loads(done.stdout)
    assert set(document) == {"summary", "findings"}
    assert [(f["source"], f["patterns"]) for f in document["findings"]] == \
        [("10.9.9.9", ["port_scan"])]
    finding = document["findings"][0]
    assert finding["evidence"]["port_scan"]["kind"] == "vertical"
    assert finding["first_seen"] <= finding["last_seen"]
    summary = document["summary"]
    assert [f["format"] for f in summary["files"]] == ["zeek", "zeek"]
    assert summary["flows"] == 504
    # The 5 rows the reader skips (ZEEK_SKIPPED); the tracker refuses none of the rest.
    assert summary["skipped"]["rows"] == 5
    assert summary["skipped"]["first"][0].startswith(f"{broken}:")
    assert summary["flows_per_second"] > 0


def test_cli_reports_times_beyond_the_calendar(tmp_path: Path) -> None:
    """A capture stamped in milliseconds reads as year 51969: shown in seconds, exit 0."""
    log = write(tmp_path / "ms.csv", "ts,src,dst,dport\n1577836800000,10.0.0.1,192.0.2.1,25\n")
    page = tmp_path / "report.html"
    done = cli(str(log), "--html", str(page))
    assert done.returncode == 0, done.stderr
    assert "1577836800000 s to 1577836800000 s" in done.stdout
    assert "1577836800000 s" in page.read_text()


def test_cli_output_to_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``connguard replay ... | head``: the reader left, so exit 1 with no traceback."""
    log = scan_log(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)                               # nobody will read: every write fails
    try:
        done = subprocess.run([sys.executable, "-m", "connguard", "replay", str(log), "--json"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=120, check=False)
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert done.stderr == ""


def test_a_broken_pipe_other_than_stdout_is_not_swallowed(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Only a reader of stdout that went away ends a command quietly."""
    from connguard import cli
    from connguard.cli import replay as replay_command

    def broken(args: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(replay_command, "run", broken)
    with pytest.raises(BrokenPipeError):
        cli.main(["replay", "any.log"])
    if not sys.platform.startswith("linux"):
        return                                      # there every broken pipe is stdout's
    read_end, write_end = os.pipe()
    out = open(write_end, "w", closefd=False)      # noqa: SIM115 - nothing written to it
    try:
        assert cli._reader_gone(out) is False       # someone may still read
        os.close(read_end)
        assert cli._reader_gone(out) is True
    finally:
        os.close(write_end)
    capsys.readouterr()


def test_cli_table_and_pseudonyms(tmp_path: Path) -> None:
    log = scan_log(tmp_path)
    done = cli(str(log), "--pseudonymize", "0123456789abcdef-secret")
    assert done.returncode == 0, done.stderr
    assert "10.9.9.9" not in done.stdout and "p-" in done.stdout
    assert "port_scan" in done.stdout and "flows: 500 from 21 sources" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["missing.log"], "missing.log: no such file"),
    (["{bad}"], "cannot tell its format"),
    (["{scan}", "--format", "binetflow"], "the header has no 'StartTime' column"),
    (["{scan}", "--config", "{bad}"], "is not valid TOML"),
    (["{scan}", "--config", "{config}"], r"[port_scan]"),
    (["{scan}", "--pseudonymize", "short"], "key must be at least 16 bytes"),
    (["{scan}", "--window", "0"], "--window must be"),
])
def test_cli_errors_exit_2_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    names = {"bad": str(write(tmp_path / "bad.log", "what is this\n")),
             "scan": str(scan_log(tmp_path)),
             "config": str(write(tmp_path / "c.toml", "[port_scan]\nports = 0\n"))}
    done = cli(*(a.format(**names) for a in args))
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.startswith("connguard replay: ")
    assert done.stdout == ""


def test_cli_works_without_the_cli_extra(tmp_path: Path) -> None:
    """With rich and pyarrow unimportable, the stdlib readers and a plain table serve."""
    blocker = tmp_path / "blocked"
    for name in ("rich", "pyarrow"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked')\n")
    path = write(tmp_path / "c.binetflow", ARGUS_HEADER + "".join(ARGUS_LINES))
    with_extra = cli(str(path), "--json")
    plain = cli(str(path), "--json", env={"PYTHONPATH": str(blocker)})
    assert plain.returncode == 0, plain.stderr
    def strip(out: str) -> dict[str, Any]:
        return {k: v for k, v in json.loads(out)["summary"].items()
                if k not in ("seconds", "flows_per_second")}

    assert strip(plain.stdout) == strip(with_extra.stdout)
    table = cli(str(scan_log(tmp_path)), env={"PYTHONPATH": str(blocker)})
    assert table.returncode == 0, table.stderr
    assert "source" in table.stdout and "10.9.9.9" in table.stdout and "┃" not in table.stdout


def test_progress_is_drawn_only_on_a_terminal(tmp_path: Path) -> None:
    import pty

    log = scan_log(tmp_path)
    leader, follower = pty.openpty()
    try:
        done = cli(str(log), "--json", stderr=follower)
        os.close(follower)
        drawn = b""
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            drawn += data
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert b"replaying" in drawn
    json.loads(done.stdout)                          # stdout stays one clean document


# --- the labelled captures: the same findings as benchmarks/detection.py ----------------

DATA = Path(os.environ.get("CONNGUARD_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def data_logs() -> Iterator[Path]:
    if DATA.is_dir():
        yield from sorted(p for p in DATA.rglob("*") if p.is_file() and "conn" in p.name)


@pytest.mark.skipif(not DATA.is_dir(), reason=f"no labelled captures at {DATA}")
@pytest.mark.parametrize("log", list(data_logs()), ids=lambda p: str(p.relative_to(DATA)))
def test_replay_matches_the_detection_benchmark(log: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "detection", Path(__file__).resolve().parents[1] / "benchmarks" / "detection.py")
    assert spec is not None and spec.loader is not None
    detection = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detection)
    expected = {source: sorted(patterns)
                for source, patterns in detection.replay(log)["raised"].items()}
    done = cli(str(log), "--json")
    assert done.returncode == 0, done.stderr
    found = {f["source"]: f["patterns"] for f in json.loads(done.stdout)["findings"]}
    assert found == expected
