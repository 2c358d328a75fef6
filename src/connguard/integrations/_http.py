"""What the HTTP integrations (ASGI middleware, proxy) answer a refused connection."""

from __future__ import annotations

import math

from ..guard import Guard

#: Guard refusal reason -> (HTTP status, reason phrase).
REFUSAL_STATUS: dict[str, tuple[int, str]] = {
    "banned": (403, "Forbidden"),
    "limit": (429, "Too Many Requests"),
    "overflow": (503, "Service Unavailable"),
    "flood": (503, "Service Unavailable"),
}

_MAX_RETRY_AFTER = 3600


def retry_after(guard: Guard) -> int:
    """Seconds until the limiter gives a source a token again: 1/rate, 1 to 3600."""
    limiter = guard.limiter
    rate = limiter.rate if limiter is not None else 0.0
    if not rate > 0:
        return 1
    return max(1, min(_MAX_RETRY_AFTER, math.ceil(1.0 / rate)))
