"""connguard: see connection abuse as it happens, from inside your proxy or server."""

from ._core import COMPILED
from .bans import DEFAULT_KINDS, Ban, BanManager, Infraction
from .events import (
    ACCEPT,
    CLOSE,
    Event,
    acquire,
    connection,
    notify,
    notify_accept,
    notify_close,
    set_listener,
)
from .guard import Guard, Verdict
from .patterns import CredentialStuffing, DnsTunnel, Finding, PortScan, SpamRelay
from .privacy import Pseudonymizer
from .ratelimit import RateDecision, RateLimiter
from .tracker import DEFAULT_PORT_CLASSES, PATTERNS, Connection, SourceStats, Tracker

__version__ = "0.1.0"

__all__ = [
    "ACCEPT",
    "CLOSE",
    "COMPILED",
    "DEFAULT_KINDS",
    "DEFAULT_PORT_CLASSES",
    "PATTERNS",
    "Pseudonymizer",
    "Ban",
    "BanManager",
    "Connection",
    "CredentialStuffing",
    "DnsTunnel",
    "Event",
    "Finding",
    "Guard",
    "Infraction",
    "PortScan",
    "RateDecision",
    "RateLimiter",
    "SourceStats",
    "SpamRelay",
    "Tracker",
    "Verdict",
    "__version__",
    "acquire",
    "connection",
    "notify",
    "notify_accept",
    "notify_close",
    "set_listener",
]
