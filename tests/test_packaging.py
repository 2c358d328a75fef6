"""Release packaging: the wheels cibuildwheel will build, and clean workflows.

These need the release tools (``pip install ".[release]"``) and a source
checkout. Elsewhere -- inside cibuildwheel's own wheel tests, say -- they
skip, unless CONNGUARD_REQUIRE_PACKAGING=1 (set by .ci/run) turns a skip
into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def need(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CONNGUARD_REQUIRE_PACKAGING"):
        pytest.fail(f"required packaging check could not run: {reason}")
    pytest.skip(reason)


def test_cibuildwheel_builds_the_intended_wheels() -> None:
    need((ROOT / "setup.py").exists(), "not a source checkout")
    need(shutil.which("cibuildwheel") is not None, "cibuildwheel is not installed")
    out = subprocess.run(
        ["cibuildwheel", "--print-build-identifiers", "--platform", "linux"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    expected = {f"{python}-{libc}_{arch}"
                for python in ("cp310", "cp311", "cp312", "cp313", "cp314", "cp314t")
                for libc in ("manylinux", "musllinux")
                for arch in ("x86_64", "aarch64")}
    assert set(out) == expected
    assert len(out) == len(expected)                # nothing built twice


def test_workflows_pass_actionlint() -> None:
    need((ROOT / ".github" / "workflows").is_dir(), "no workflows in this tree")
    need(shutil.which("actionlint") is not None, "actionlint is not installed")
    result = subprocess.run(["actionlint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

