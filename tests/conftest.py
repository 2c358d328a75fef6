"""One suite, both cores: every test that takes ``core`` runs against each."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from connguard import _core_py
from connguard._core import on_core
from connguard.tracker import Tracker


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-c-extensions",
        action="store_true",
        default=False,
        help="test the pure-Python core only (the compiled one is not expected)",
    )


def compiled_expected(config: pytest.Config) -> bool:
    return not (config.getoption("--no-c-extensions") or os.environ.get("CONNGUARD_NO_EXTENSIONS"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) every test of the compiled core when it is not expected."""
    if compiled_expected(config):
        return
    dropped = [item for item in items if item.get_closest_marker("c_extension")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker("c_extension")]


def import_compiled() -> ModuleType:
    """The compiled core; failing to import it when it should have been built is a failure."""
    try:
        return importlib.import_module("connguard._core_c")
    except ImportError as exc:  # a missing extension is a failure, never a skip
        pytest.fail(f"the compiled core should have been built and did not import: {exc}")


@pytest.fixture(scope="session", params=[pytest.param("compiled", marks=pytest.mark.c_extension),
                                         "pure"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The core under test: connguard._core_c or connguard._core_py."""
    return _core_py if request.param == "pure" else import_compiled()


@pytest.fixture(scope="session")
def compiled_core() -> ModuleType:
    """The compiled core alone (tests that use it carry the c_extension marker)."""
    return import_compiled()


@pytest.fixture
def tracker_cls(core: ModuleType) -> type[Tracker]:
    return on_core(Tracker, core)


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


class FakeClock:
    """A settable clock for time-dependent objects."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_bans(core: ModuleType, clock: FakeClock) -> Callable[..., Any]:
    from connguard.bans import BanManager

    def make(**kwargs: Any) -> BanManager:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("seed", 7)
        kwargs.setdefault("node_id", "this-node")
        return on_core(BanManager, core)(**kwargs)

    return make


@pytest.fixture
def make_limiter(core: ModuleType, clock: FakeClock) -> Callable[..., Any]:
    from connguard.ratelimit import RateLimiter

    def make(*args: Any, **kwargs: Any) -> RateLimiter:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("seed", 7)
        return on_core(RateLimiter, core)(*args, **kwargs)

    return make


@pytest.fixture
def make_guard(core: ModuleType, clock: FakeClock) -> Callable[..., Any]:
    """Build a Guard on the core under test, its parts on that core and clock."""
    from connguard.bans import BanManager
    from connguard.guard import Guard
    from connguard.ratelimit import RateLimiter

    def make(*, tracker: dict[str, Any] | None = None, bans: dict[str, Any] | None = None,
             limiter: dict[str, Any] | bool | None = None, **kwargs: Any) -> Guard:
        limiter_part: RateLimiter | bool = False
        if limiter is not False:
            limiter_part = on_core(RateLimiter, core)(
                **{"clock": clock, "seed": 3, **(limiter if isinstance(limiter, dict) else {})})
        return on_core(Guard, core)(
            tracker=on_core(Tracker, core)(**{"clock": clock, "seed": 1, **(tracker or {})}),
            bans=on_core(BanManager, core)(**{"clock": clock, "seed": 2, "node_id": "n",
                                              **(bans or {})}),
            limiter=limiter_part, **kwargs)

    return make
