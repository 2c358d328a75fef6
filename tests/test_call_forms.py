"""Every way of calling the per-connection methods binds the same arguments,
on both cores: by position (the compiled core's own entry points), by keyword
and mixed (its general argument binding), and wrong calls are refused before
anything is counted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

SRC = "198.51.100.9"
DEST = "mail.example:25"


def counters(t: Any) -> tuple[Any, ...]:
    return t.active_connections, t.tracked_sources, t.stats(SRC)


Call = tuple[tuple[Any, ...], dict[str, Any]]
Forms = tuple[tuple[Any, ...], dict[str, Any], tuple[Any, ...], dict[str, Any]]

# Each row: the same call written two ways, as (args, kwargs) pairs.
TRACKER_ACCEPTS: list[Forms] = [
    ((SRC,), {}, (), {"source": SRC}),
    ((SRC, DEST), {}, (SRC,), {"destination": DEST}),
    ((SRC, DEST, 5.0), {}, (), {"source": SRC, "destination": DEST, "now": 5.0}),
    ((SRC, "", 6.0), {}, (SRC,), {"now": 6.0}),
]
TRACKER_CLOSES: list[Forms] = [
    ((SRC,), {}, (), {"source": SRC}),
    ((SRC, 7.0), {}, (SRC,), {"now": 7.0}),
]


@pytest.mark.parametrize("row", range(len(TRACKER_ACCEPTS)))
def test_tracker_accept_open_and_close_bind_alike(make_tracker: Callable[..., Any], row: int) -> None:
    a_args, a_kwargs, b_args, b_kwargs = TRACKER_ACCEPTS[row]
    c_args, c_kwargs, d_args, d_kwargs = TRACKER_CLOSES[row % len(TRACKER_CLOSES)]
    first, second = make_tracker(), make_tracker()
    assert first.accept(*a_args, **a_kwargs) == second.accept(*b_args, **b_kwargs)
    one, two = first.open(*a_args, **a_kwargs), second.open(*b_args, **b_kwargs)
    assert (one.allowed, one.reason) == (two.allowed, two.reason)
    assert counters(first) == counters(second)
    assert first.close(*c_args, **c_kwargs) == second.close(*d_args, **d_kwargs)
    assert one.close(10, 20, 8.0) == two.close(received=20, now=8.0, sent=10)
    assert counters(first) == counters(second)
    assert first.stats(SRC).active == 0


def test_guard_accept_open_and_close_bind_alike(make_guard: Callable[..., Any]) -> None:
    first, second = make_guard(), make_guard()
    for a_args, a_kwargs, b_args, b_kwargs in TRACKER_ACCEPTS:
        verdict, other = first.accept(*a_args, **a_kwargs), second.accept(*b_args, **b_kwargs)
        assert (verdict.allowed, verdict.reason) == (other.allowed, other.reason)
        one, two = first.open(*a_args, **a_kwargs), second.open(*b_args, **b_kwargs)
        assert (one.allowed, one.reason) == (two.allowed, two.reason)
        assert one.close(None, 5) == two.close(received=5)
    for c_args, c_kwargs, d_args, d_kwargs in TRACKER_CLOSES:
        assert first.close(*c_args, **c_kwargs) == second.close(*d_args, **d_kwargs)
    assert first.close(SRC, 9.0, sent=1) == second.close(SRC, now=9.0, sent=1)
    assert counters(first.tracker) == counters(second.tracker)
    assert first.verdict_counts() == second.verdict_counts()


WRONG_CALLS: list[Call] = [
    ((), {}),                                        # no source
    ((SRC, DEST, None, "extra"), {}),                # one positional too many
    ((SRC,), {"source": SRC}),                       # source twice
    ((SRC,), {"destinaton": DEST}),                  # a keyword that is not a parameter
]
WRONG_CLOSES: list[Call] = [
    ((), {}),
    ((SRC, None, "extra"), {}),                      # sent and received are keyword-only
    ((SRC,), {"source": SRC}),
    ((SRC,), {"sent_bytes": 1}),
]


@pytest.mark.parametrize("call", range(len(WRONG_CALLS)))
def test_wrong_calls_are_refused_before_counting(make_guard: Callable[..., Any], call: int) -> None:
    g = make_guard()
    handle = g.open(SRC)
    before = counters(g.tracker)
    args, kwargs = WRONG_CALLS[call]
    for method in (g.accept, g.open, g.tracker.accept, g.tracker.open):
        with pytest.raises(TypeError):
            method(*args, **kwargs)
    args, kwargs = WRONG_CLOSES[call]
    for method in (g.close, g.tracker.close):
        with pytest.raises(TypeError):
            method(*args, **kwargs)
    with pytest.raises(TypeError):
        handle.close(1, 2, None, "extra")
    assert counters(g.tracker) == before
    assert handle.close() and not handle.close()     # the wrong call left it open


def test_handle_close_binds_by_position(make_guard: Callable[..., Any]) -> None:
    handle = make_guard().open(SRC)
    with pytest.raises(ValueError, match="^sent"):
        handle.close(-1)
    with pytest.raises(ValueError, match="^received"):
        handle.close(0, -1)
    with pytest.raises(ValueError, match="^now"):
        handle.close(0, 0, float("nan"))
    assert handle.close(0, 0, 1.0)
