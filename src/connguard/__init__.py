"""connguard: see connection abuse as it happens, from inside your proxy or server."""

from ._core import COMPILED
from .bans import DEFAULT_KINDS, Ban, BanManager, Infraction
from .ratelimit import RateDecision, RateLimiter
from .tracker import DEFAULT_PORT_CLASSES, PATTERNS, SourceStats, Tracker

__version__ = "0.1.0"

__all__ = [
    "COMPILED",
    "DEFAULT_KINDS",
    "DEFAULT_PORT_CLASSES",
    "PATTERNS",
    "Ban",
    "BanManager",
    "Infraction",
    "RateDecision",
    "RateLimiter",
    "SourceStats",
    "Tracker",
    "__version__",
]
