"""Bans: infractions with penalties and lifetimes, and the bans they add up to.

``policy`` (kinds, score, ban lengths), ``records`` (bounded records and
remembered ids), ``wire`` (infractions and snapshots as they travel,
validated) and ``manager`` (the BanManager: lock, time, callbacks, the core
ban table).
"""

from .manager import BanManager, Watch, _BanAPI
from .policy import DEFAULT_KINDS
from .wire import Ban, Infraction

__all__ = ["DEFAULT_KINDS", "Ban", "BanManager", "Infraction", "Watch", "_BanAPI"]
