"""connguard: see connection abuse as it happens, from inside your proxy or server."""

from ._core import COMPILED
from .tracker import DEFAULT_PORT_CLASSES, PATTERNS, SourceStats, Tracker

__version__ = "0.1.0"

__all__ = [
    "COMPILED",
    "DEFAULT_PORT_CLASSES",
    "PATTERNS",
    "SourceStats",
    "Tracker",
    "__version__",
]
