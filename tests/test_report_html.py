"""The HTML report, opened in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from .test_replay import scan_log, write, zeek_tsv, zrow

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)


@pytest.fixture(autouse=True)
def browser() -> None:
    """Skip without a browser; fail instead where one is required (CONNGUARD_REQUIRE_BROWSER=1)."""
    if BROWSER is None:
        if os.environ.get("CONNGUARD_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH, and CONNGUARD_REQUIRE_BROWSER is set")
        pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium)")

# No network at all: every host name fails to resolve.
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000"]


def browse(*args: str) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    return subprocess.run([BROWSER, *HEADLESS, *args], capture_output=True, text=True,
                          timeout=120, check=True)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def report(tmp_path: Path, *extra: str) -> Path:
    # Two sources flagged: a vertical scanner, and a second one an hour later.
    log = scan_log(tmp_path)
    later = write(tmp_path / "later.log", zeek_tsv(
        [zrow(f"{1_700_003_600 + i * 0.5:.6f}", "10.7.7.7", "192.0.2.201", str(2000 + i),
              duration="0.1", sent="0", received="0") for i in range(150)]))
    out = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "connguard", "replay", str(log), str(later),
                           "--html", str(out), *extra], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return out


def test_report_renders_findings_and_charts(tmp_path: Path) -> None:
    page = report(tmp_path)
    text = page.read_text()
    # Self-contained: nothing to fetch (the SVG namespace is a name, not a fetch).
    assert not re.search(r"\b(src|href)\s*=", text)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)
    dom = browse("--dump-dom", page.as_uri()).stdout
    assert 'data-charts="drawn"' in dom
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", dom)
    assert rows == [("10.9.9.9", "port_scan"), ("10.7.7.7", "port_scan")]
    drawn = dict(re.findall(r'id="(overview|chart-\d)"[^>]*data-drawn="(\d+)"', dom))
    assert set(drawn) == {"overview", "chart-0", "chart-1"}
    assert all(int(n) > 0 for n in drawn.values())
    assert dom.count("<rect") >= sum(int(n) for n in drawn.values())

    shot, blank = tmp_path / "report.png", tmp_path / "blank.png"
    browse(f"--screenshot={shot}", "--window-size=1200,1800", page.as_uri())
    empty = write(tmp_path / "empty.html", "<!DOCTYPE html><html><body></body></html>")
    browse(f"--screenshot={blank}", "--window-size=1200,1800", empty.as_uri())
    assert png_size(shot) == png_size(blank) == (1200, 1800)
    # A drawn page compresses far worse than an empty white one (measured in the same run).
    assert shot.stat().st_size > 4 * blank.stat().st_size


def test_report_pseudonymises_sources(tmp_path: Path) -> None:
    page = report(tmp_path, "--pseudonymize", "a-report-secret-0123456789")
    text = page.read_text()
    assert "10.9.9.9" not in text and "10.7.7.7" not in text
    dom = browse("--dump-dom", page.as_uri()).stdout
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", dom)
    assert [pattern for _, pattern in rows] == ["port_scan", "port_scan"]
    assert all(source.startswith("p-") for source, _ in rows)
    assert 'data-charts="drawn"' in dom
