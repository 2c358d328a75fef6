"""Shared set-up for the benchmarks: source lists and the three implementations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import connguard
from connguard import _core_py
from connguard._core import on_core
from connguard.tracker import Tracker

from .baselines.ngit_tracker import NgitTracker

#: accept+close pairs per timed round; per-pair time = round time / BATCH
BATCH = 20_000

IMPLEMENTATIONS: dict[str, Callable[[int], Any]] = {
    "compiled": lambda capacity: connguard.Tracker(capacity=capacity),
    "pure": lambda capacity: on_core(Tracker, _core_py)(capacity=capacity),
    "ngit": lambda capacity: NgitTracker(),
}


def ipv4_sources(n: int) -> list[str]:
    return [f"{10 + (i >> 24)}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(n)]


def ipv6_sources(n: int) -> list[str]:
    # Distinct /64s, and a different host in each, as real clients look.
    return [f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::{(i * 7919) & 0xFFFF:x}" for i in range(n)]


@pytest.fixture(scope="session", autouse=True)
def _compiled_core_in_use() -> None:
    assert connguard.COMPILED, "benchmarks need the compiled core"
