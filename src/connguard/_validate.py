"""Argument checks shared by the public classes: errors name what was wrong."""

from __future__ import annotations

import math


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
