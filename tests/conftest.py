"""One suite, both cores: every test that takes ``core`` runs against each."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from connguard import _core_py
from connguard.tracker import Tracker, tracker_class


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-c-extensions",
        action="store_true",
        default=False,
        help="test the pure-Python core only (the compiled one is not expected)",
    )


def compiled_expected(config: pytest.Config) -> bool:
    return not (config.getoption("--no-c-extensions") or os.environ.get("CONNGUARD_NO_EXTENSIONS"))


@pytest.fixture(scope="session", params=["compiled", "pure"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The core under test: connguard._core_c or connguard._core_py."""
    if request.param == "pure":
        return _core_py
    if not compiled_expected(request.config):
        pytest.skip("--no-c-extensions: the compiled core is not tested")
    try:
        return importlib.import_module("connguard._core_c")
    except ImportError as exc:  # a missing extension is a failure, never a skip
        pytest.fail(f"the compiled core should have been built and did not import: {exc}")


@pytest.fixture
def tracker_cls(core: ModuleType) -> type[Tracker]:
    return tracker_class(core)


@pytest.fixture
def make_tracker(tracker_cls: type[Tracker]) -> Callable[..., Tracker]:
    """Build a Tracker on the core under test; fixed seed, time only from now=."""

    def make(**kwargs: Any) -> Tracker:
        kwargs.setdefault("seed", 12345)
        kwargs.setdefault("clock", lambda: 0.0)
        return tracker_cls(**kwargs)

    return make


def counts(t: Tracker) -> dict[str, int]:
    """Every aggregate counter of a tracker, by name."""
    names = ("active_connections", "active_sources", "tracked_sources",
             "flagged_sources", "evictions", "overflows")
    return dict(zip(names, t.counters(), strict=True))
