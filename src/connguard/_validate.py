"""Argument checks shared by the public classes: errors name what was wrong."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from ._spec import MAX_TIME


def int_arg(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def number_arg(name: str, value: object, *, low: float = 0.0, allow_low: bool = False) -> float:
    """A finite real number above ``low`` (or equal to it, with allow_low)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    ok = math.isfinite(value) and (value >= low if allow_low else value > low)
    if not ok:
        bound = f">= {low}" if allow_low else f"> {low}"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return float(value)


def seconds_of(value: object, from_clock: bool = False) -> float:
    """A time as both cores read one: a float, or what converts to one as a
    real number does (an int, a Fraction, a Decimal, numpy's numbers), never a
    bool or text, within +-MAX_TIME. Else TypeError (the type) or ValueError
    (the range; NaN and values beyond any float too), naming ``now``, or the
    clock when ``from_clock``."""
    kind = type(value)
    if kind is not bool and (hasattr(kind, "__float__") or hasattr(kind, "__index__")):
        try:
            t = float(value)  # type: ignore[arg-type]
        except OverflowError:                            # (an int's repr may not even exist)
            shown = f"{kind.__name__} beyond any float"
        else:
            if -MAX_TIME <= t <= MAX_TIME:               # false for nan
                return t
            shown = f"{value!r:.40}"
        raise ValueError(f"{_time_of(from_clock)} a finite number of seconds within "
                         f"+-{MAX_TIME:g}, got {shown}")
    raise TypeError(f"{_time_of(from_clock)} a real number of seconds, not {kind.__name__}")


def _time_of(from_clock: bool) -> str:
    return "the clock must return" if from_clock else "now must be"


def callable_arg(name: str, value: Any) -> Callable[..., Any] | None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable, not {type(value).__name__}")
    return value  # type: ignore[no-any-return]


def shards_arg(shards: object, capacity: int) -> int:
    """A power of two up to 256, halved until every shard has room for an entry."""
    shards = int_arg("shards", shards, 1, 256)
    if shards & (shards - 1):
        raise ValueError(f"shards must be a power of two, got {shards}")
    while shards > capacity:
        shards //= 2
    return shards


def seed_arg(seed: object) -> int:
    """The hash seed: random unless given (tests fix it to compare runs)."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little")
    return int_arg("seed", seed, 0, 2**64 - 1)
