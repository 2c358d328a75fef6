"""Pseudonyms for logs and exports: keyed, rotating, unlinkable across periods."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable

__all__ = ["Pseudonymizer"]

_PERIODS = {"hourly": 3600.0, "daily": 86400.0, "weekly": 604800.0, None: 0.0}


class Pseudonymizer:
    """Replace a netblock with a keyed pseudonym: HMAC-SHA256, truncated.

    The key for each period (``rotate``: "hourly", "daily", "weekly" or None)
    is derived from the secret, so one source's pseudonyms in two periods
    cannot be linked without the secret; within a period they are stable, so
    a log still tells which lines concern the same source.
    """

    def __init__(self, key: bytes | str, rotate: str | None = "daily",
                 clock: Callable[[], float] = time.time, length: int = 16) -> None:
        secret = key.encode() if isinstance(key, str) else key
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("key must be at least 16 bytes of secret")
        if rotate not in _PERIODS:
            raise ValueError(f"rotate must be 'hourly', 'daily', 'weekly' or None, got {rotate!r}")
        if not isinstance(length, int) or not 8 <= length <= 64:
            raise ValueError(f"length must be an int from 8 to 64, got {length!r}")
        self._secret = secret
        self._period = _PERIODS[rotate]
        self._clock = clock
        self._length = length
        self._lock = threading.Lock()            # guards _cached
        self._cached: tuple[int, bytes] = (-1, b"")

    def __call__(self, netblock: str, now: float | None = None) -> str:
        """Return the pseudonym of ``netblock`` (text as connguard keys it) at ``now``."""
        period = int((self._clock() if now is None else now) // self._period) if self._period else 0
        with self._lock:
            cached_period, period_key = self._cached
            if cached_period != period:
                period_key = hmac.new(self._secret, b"connguard period %d" % period,
                                      hashlib.sha256).digest()
                self._cached = (period, period_key)
        digest = hmac.new(period_key, netblock.encode(), hashlib.sha256).hexdigest()
        return "p-" + digest[:self._length]

    def __repr__(self) -> str:                   # never the secret
        return f"Pseudonymizer(rotate={self._period!r}s, length={self._length})"
