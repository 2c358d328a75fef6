"""A BanManager's bounded records: one per netblock, with its infractions and ban state.

Everything here is guarded by the owning BanManager's lock; nothing here
calls user code, logs or touches the core table (the manager does, with
what these methods return).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from .wire import Infraction

__all__ = ["Record", "Records"]

Key = tuple[int, int]


# A record's banned_until when it holds no ban. Not 0.0: times below zero are
# valid (a clock may start anywhere within +-MAX_TIME), and every comparison
# of a time with -inf says "ended".
NO_BAN = -math.inf


# At most this many ban() calls are told apart per record; beyond, the two
# oldest merge into one made when the later was, lasting as long as either:
# an unban between them then keeps the earlier one too (a ban held longer,
# never one lifted early).
MANUAL_BANS = 8


@dataclass(slots=True, eq=False)
class Record:
    """One netblock's infractions and ban state."""

    hi: int
    lo: int
    source: str                   # netblock text
    infractions: list[Infraction] = field(default_factory=list)
    banned_until: float = NO_BAN  # local timebase; NO_BAN: not banned
    bans: int = 0                 # bans so far, for escalation
    # While banned: each ban() that holds it, as (made: wall clock, until:
    # local), so that a peer's unban lifts the ones made before it and leaves
    # the later ones. None while there are none; at most MANUAL_BANS.
    manual: list[tuple[float, float]] | None = None

    @property
    def key(self) -> Key:
        return self.hi, self.lo

    def add_manual(self, made: float, until: float, now: float) -> None:
        """Note a ban() made at ``made`` (wall) asking to last to ``until`` (local)."""
        held = [m for m in self.manual or () if m[1] > now]
        held.append((made, until))
        held.sort()
        if len(held) > MANUAL_BANS:
            (_, first), (second, other) = held[0], held[1]
            held[:2] = [(second, max(first, other))]
        self.manual = held

    def manual_after(self, before: float) -> float:
        """The longest end of the ban() calls made after ``before`` (NO_BAN: none);
        the earlier ones are forgotten."""
        held = [m for m in self.manual or () if m[0] > before]
        self.manual = held or None
        return max((until for _, until in held), default=NO_BAN)


class Records:
    """At most ``capacity`` records, and the ids of the infractions they hold or let go.

    Important:
    1. Eviction never drops a live ban while a record without one exists:
       a record whose ban has ended goes first, then the least recently
       touched record that was never banned (or whose ban was lifted); only
       when every record holds a live ban does the one ending soonest go,
       and ``evicted_bans`` counts it. Every choice is O(log n) amortised.
    2. Ids of infractions that were dropped (eviction, expiry, the
       ``max_infractions`` bound) or forgiven (``unban``) are remembered
       until they expire, up to ``remember`` of them, oldest first out, so
       a peer resending them cannot count them again.
    """

    def __init__(self, capacity: int, remember: int) -> None:
        self.capacity = capacity
        self.remember = remember
        self._idle: OrderedDict[Key, Record] = OrderedDict()   # not banned; least recent first
        self._banned: dict[Key, Record] = {}                   # banned_until != NO_BAN
        self._ends: list[tuple[float, Key]] = []               # heap of ban ends; stale entries skipped
        self._gone: OrderedDict[str, float] = OrderedDict()    # dropped or forgiven id -> expiry (wall)
        self.evicted_bans = 0

    def __len__(self) -> int:
        return len(self._idle) + len(self._banned)

    def __iter__(self) -> Iterator[Record]:
        yield from self._idle.values()
        yield from self._banned.values()

    def banned(self) -> Iterator[Record]:
        """Records with a ban set (it may have ended without anyone noticing yet)."""
        return iter(self._banned.values())

    def get(self, key: Key) -> Record | None:
        record = self._idle.get(key)
        if record is not None:
            self._idle.move_to_end(key)
            return record
        return self._banned.get(key)

    def add(self, record: Record, now: float, wall: float) -> Record | None:
        """Hold a new record; return the one let go to make room, if any."""
        evicted = None
        if len(self) >= self.capacity:
            evicted = self._evict(now)
            self.remove(evicted, wall)
        self._idle[record.key] = record
        return evicted

    def set_ban(self, record: Record, until: float) -> None:
        """Record ``until`` (NO_BAN: not banned) and keep the record in the right set."""
        key = record.key
        record.banned_until = until
        if until != NO_BAN:
            self._idle.pop(key, None)
            self._banned[key] = record
            heapq.heappush(self._ends, (until, key))
            if len(self._ends) > 2 * len(self._banned) + 64:      # drop stale heap entries
                self._ends = [(r.banned_until, k) for k, r in self._banned.items()]
                heapq.heapify(self._ends)
        elif self._banned.pop(key, None) is not None:
            self._idle[key] = record

    def remove(self, record: Record, wall: float) -> None:
        """Let a record go; its infraction ids are remembered."""
        key = record.key
        if self._idle.pop(key, None) is None:
            del self._banned[key]
        for infraction in record.infractions:
            self.forget(infraction, wall)
        record.infractions.clear()

    def _evict(self, now: float) -> Record:
        """Choose the record to let go (see the class docstring)."""
        soonest = self._soonest()
        if soonest is not None and (soonest.banned_until <= now or not self._idle):
            if soonest.banned_until > now:
                self.evicted_bans += 1
            return soonest
        return next(iter(self._idle.values()))

    def _soonest(self) -> Record | None:
        """The banned record whose ban ends first."""
        while self._ends:
            until, key = self._ends[0]
            record = self._banned.get(key)
            if record is not None and record.banned_until == until:
                return record
            heapq.heappop(self._ends)
        return None

    def forget(self, infraction: Infraction, wall: float) -> None:
        """Stop holding an infraction; remember its id until it expires."""
        if infraction.expires > wall and self.remember:
            self._gone[infraction.id] = infraction.expires
            self._gone.move_to_end(infraction.id)
            while len(self._gone) > self.remember:
                self._gone.popitem(last=False)

    @property
    def remembering(self) -> bool:
        """Whether any let-go id is remembered."""
        return bool(self._gone)

    def forgotten(self, ident: str, wall: float) -> bool:
        """Whether an infraction id was let go and has not expired yet."""
        expires = self._gone.get(ident)
        if expires is None:
            return False
        if expires <= wall:
            del self._gone[ident]
            return False
        return True

    def purge_gone(self, wall: float) -> None:
        """Forget remembered ids that have expired."""
        for ident in [i for i, expires in self._gone.items() if expires <= wall]:
            del self._gone[ident]
