"""BanManager: infractions with penalties and lifetimes, and the bans they add up to.

Time: a BanManager works in the timebase of its clock -- the core's cheap
monotonic clock by default, or ``clock=`` -- and so does the ban table in the
core that answers ``is_banned`` on the hot path. Infractions leave and enter
as wall-clock seconds (``created``/``expires`` in reports, callbacks,
snapshots and ``apply``), so nodes of a fleet can compare them: with the
default clock a fixed offset, taken at construction, converts between the two.

Locking: ``_lock`` guards every ``_Record`` and ``_ids``. Nothing under it
calls user code or does I/O; callbacks run after it is released.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import math
import os
import random
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import _core
from ._netblock import NetblockKeyed, address_of, netblock_text
from ._spec import MAX_CAPACITY
from ._validate import callable_arg, int_arg, number_arg, seed_arg, shards_arg

if TYPE_CHECKING:
    from ._core_py import BanTable as _BanTable

    _BanBase = _BanTable
else:
    _BanTable = _core.core.BanTable
    _BanBase = object

__all__ = ["DEFAULT_KINDS", "Ban", "BanManager", "Infraction"]

log = logging.getLogger("connguard.bans")

#: kind -> (penalty, lifetime in seconds). With ban_score 10: ten malformed
#: messages within an hour, or one impersonation, ban a source.
DEFAULT_KINDS: Mapping[str, tuple[int, float]] = MappingProxyType({
    "malformed_message": (1, 3600.0),
    "invalid_bond": (1, 3600.0),
    "impersonation": (10, 86400.0),
    "rate_limit_violation": (2, 7200.0),
    "rate_limit_abuse": (5, 21600.0),
})

_SNAPSHOT_VERSION = 1
_MAX_ID_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Infraction:
    """One reported infraction; times are wall-clock seconds."""

    id: str           # unique: node, a per-process counter and random bits
    source: str       # the netblock, as Tracker keys it: "203.0.113.7", "2001:db8::/64"
    kind: str
    penalty: int
    created: float
    expires: float
    node: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban in force; ``until`` is wall-clock seconds."""

    source: str
    until: float
    score: int


@dataclass(slots=True)
class _Record:
    """One netblock's infractions and ban state, guarded by BanManager._lock."""

    hi: int
    lo: int
    source: str
    infractions: list[Infraction] = field(default_factory=list)
    banned_until: float = 0.0     # local timebase; 0.0: not banned
    bans: int = 0                 # bans so far, for escalation


class _BanAPI(NetblockKeyed, _BanBase):
    """Everything BanManager adds to a core's BanTable; shared by both cores."""

    def __init__(
        self,
        *,
        ban_score: int = 10,
        penalties: Mapping[str, tuple[int, float]] | None = None,
        allow: Iterable[str] = (),
        clock: Callable[[], float] | None = None,
        node_id: str | None = None,
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 64,
        capacity: int = 100_000,
        max_infractions: int = 64,
        min_ban: float = 0.0,
        escalation: tuple[float, float] | None = None,
        jitter: float = 0.0,
        on_infraction: Callable[[Infraction], object] | None = None,
        on_ban: Callable[[Ban], object] | None = None,
        on_unban: Callable[[str], object] | None = None,
        pseudonymizer: Callable[[str], str] | None = None,
        shards: int = 16,
        seed: int | None = None,
    ) -> None:
        self._ban_score = int_arg("ban_score", ban_score, 1, 2**31)
        self._kinds = dict(DEFAULT_KINDS)
        for kind, policy in (penalties or {}).items():
            self._kinds[_kind_name(kind)] = _policy(kind, policy)
        self._allow = tuple(_network(net) for net in allow)
        for name, fn in (("clock", clock), ("on_infraction", on_infraction), ("on_ban", on_ban),
                         ("on_unban", on_unban)):
            callable_arg(name, fn)
        self._node = node_id if node_id is not None else f"node-{os.urandom(4).hex()}"
        if not isinstance(self._node, str) or not self._node:
            raise ValueError(f"node_id must be a non-empty str, got {node_id!r}")
        self._set_prefixes(ipv4_prefix, ipv6_prefix)
        self._capacity = int_arg("capacity", capacity, 1, MAX_CAPACITY)
        self._max_infractions = int_arg("max_infractions", max_infractions, 1, 2**20)
        self._min_ban = number_arg("min_ban", min_ban, allow_low=True)
        if escalation is not None:
            factor, cap = escalation
            escalation = (number_arg("escalation factor", factor, low=1.0, allow_low=True),
                          number_arg("escalation cap", cap))
        self._escalation = escalation
        self._jitter = number_arg("jitter", jitter, allow_low=True)
        self._on_infraction, self._on_ban, self._on_unban = on_infraction, on_ban, on_unban
        self._pseudonymizer = callable_arg("pseudonymizer", pseudonymizer)   # for logs
        shards = shards_arg(shards, self._capacity)
        seed = seed_arg(seed)
        self._random = random.Random(seed)
        self._time_source = clock if clock is not None else _core.core.default_clock
        # Wall-clock seconds = local time + offset (0 when the user's clock is used).
        self._offset = time.time() - self._time_source() if clock is None else 0.0
        self._lock = threading.Lock()
        # --- guarded by _lock ---
        self._records: OrderedDict[tuple[int, int], _Record] = OrderedDict()  # least recent first
        self._ids: dict[str, tuple[int, int]] = {}
        self._counter = itertools.count(1)
        self._by_kind: dict[str, int] = dict.fromkeys(self._kinds, 0)   # infractions recorded
        self.allowed_reports = 0      # reports about allow-listed sources, not acted on
        super().__init__(
            capacity=self._capacity, shards=shards, ipv4_prefix=self._ipv4_prefix,
            ipv6_prefix=self._ipv6_prefix, clock=clock, seed=seed)

    # --- reporting -------------------------------------------------------------

    def report(self, source: str, kind: str, now: float | None = None) -> Infraction:
        """Record an infraction by ``source``; bans it once its live penalties reach ban_score."""
        penalty, lifetime = self._policy_of(kind)
        record_key = self._source(source)
        t = self._local(now)
        created = t + self._offset
        infraction = Infraction(
            id=f"{self._node}:{next(self._counter)}:{os.urandom(6).hex()}",
            source=self._text(record_key), kind=kind,
            penalty=penalty, created=created, expires=created + lifetime, node=self._node)
        if self._allowed(source):
            with self._lock:
                self.allowed_reports += 1
            return infraction
        with self._lock:
            events = self._add(record_key, infraction, t)
        self._fire(events)
        return infraction

    def apply(self, infraction: Infraction | Mapping[str, Any], now: float | None = None) -> bool:
        """Merge an infraction from another node; True when it was new, live and merged.

        The penalty and lifetime come from this node's policy for the kind,
        never from the message; a creation time in the future counts as now.
        An unknown kind or a malformed message raises ValueError and changes
        nothing.
        """
        data = infraction.to_dict() if isinstance(infraction, Infraction) else infraction
        if not isinstance(data, Mapping):
            raise TypeError(f"apply takes an Infraction or a mapping, not {type(data).__name__}")
        ident, source, kind, created, node = (_field(data, name) for name in
                                              ("id", "source", "kind", "created", "node"))
        if not isinstance(ident, str) or not 0 < len(ident) <= _MAX_ID_LENGTH:
            raise ValueError(f"infraction id must be a str of 1 to {_MAX_ID_LENGTH} characters")
        if not isinstance(node, str):
            raise ValueError(f"infraction node must be a str, got {node!r}")
        penalty, lifetime = self._policy_of(kind)
        created = number_arg("infraction created", created, low=-math.inf)
        record_key = self._source(source)
        t = self._local(now)
        created = min(created, t + self._offset)
        clamped = Infraction(
            id=ident, source=self._text(record_key),
            kind=kind, penalty=penalty, created=created, expires=created + lifetime, node=node)
        if clamped.expires <= t + self._offset:
            return False
        if self._allowed(source):
            with self._lock:
                self.allowed_reports += 1
            return False
        with self._lock:
            if ident in self._ids:
                return False
            events = self._add(record_key, clamped, t)
        self._fire(events)
        return True

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Return the live infractions as a JSON-able, versioned dict."""
        t = self._local(now)
        with self._lock:
            live = [i for r in self._records.values() for i in r.infractions
                    if i.expires > t + self._offset]
        live.sort(key=lambda i: (i.created, i.id))
        return {"version": _SNAPSHOT_VERSION, "infractions": [i.to_dict() for i in live]}

    def restore(self, snapshot: Mapping[str, Any], now: float | None = None) -> int:
        """Apply every infraction of a snapshot; idempotent. Return how many were new.

        A malformed infraction raises ValueError; the ones before it stay
        applied, so fixing the snapshot and restoring again is safe.
        """
        if not isinstance(snapshot, Mapping) or snapshot.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"not a version {_SNAPSHOT_VERSION} ban snapshot")
        infractions = snapshot.get("infractions")
        if not isinstance(infractions, list):
            raise ValueError("snapshot infractions must be a list")
        return sum(self.apply(item, now) for item in infractions)

    # --- bans ------------------------------------------------------------------

    def ban(self, source: str, duration: float, now: float | None = None) -> None:
        """Ban ``source``'s netblock for ``duration`` seconds (longer if already banned)."""
        duration = number_arg("duration", duration)
        record_key = self._source(source)
        t = self._local(now)
        with self._lock:
            record = self._record(record_key)
            events = self._set_ban(record, max(record.banned_until, t + duration), t)
        self._fire(events)

    def unban(self, source: str, now: float | None = None) -> bool:
        """Lift a ban and forgive the infractions behind it; False when not banned."""
        record_key = self._source(source)
        t = self._local(now)
        with self._lock:
            record = self._records.get(record_key)
            if record is None:
                return False
            was_banned = record.banned_until > t
            for infraction in record.infractions:
                self._ids.pop(infraction.id, None)
            record.infractions.clear()
            events = self._set_ban(record, 0.0, t)
        self._fire(events)
        return was_banned

    def score(self, source: str, now: float | None = None) -> int:
        """Return the sum of ``source``'s live penalties."""
        record_key = self._source(source)
        t = self._local(now)
        with self._lock:
            record = self._records.get(record_key)
            return 0 if record is None else _live_score(record, t + self._offset)

    def bans(self, now: float | None = None) -> list[Ban]:
        """Deprecated name of ``banned()``."""
        warnings.warn("BanManager.bans() is deprecated; use BanManager.banned()",
                      DeprecationWarning, stacklevel=2)
        return self.banned(now)

    def banned(self, now: float | None = None) -> list[Ban]:
        """Return the bans in force, soonest to end first."""
        t = self._local(now)
        with self._lock:
            found = [Ban(r.source, r.banned_until + self._offset, _live_score(r, t + self._offset))
                     for r in self._records.values() if r.banned_until > t]
        return sorted(found, key=lambda b: (b.until, b.source))

    def purge(self, now: float | None = None) -> int:
        """Drop expired infractions and ended bans; return how many records went."""
        t = self._local(now)
        events: list[tuple[Callable[[Any], object] | None, Any]] = []
        gone = 0
        with self._lock:
            for record_key, record in list(self._records.items()):
                events += self._refresh(record, t)
                # With escalation a record remembers its past bans (still
                # bounded by capacity); otherwise nothing is left to keep.
                remembered = self._escalation is not None and record.bans
                if not record.infractions and not record.banned_until and not remembered:
                    del self._records[record_key]
                    gone += 1
        self._fire(events)
        return gone

    # --- internals (called with _lock held unless noted) -------------------------

    def _add(self, record_key: tuple[int, int], infraction: Infraction,
             t: float) -> list[tuple[Callable[[Any], object] | None, Any]]:
        record = self._record(record_key)
        events = self._refresh(record, t)
        if len(record.infractions) >= self._max_infractions:
            dropped = min(record.infractions, key=lambda i: i.expires)
            record.infractions.remove(dropped)
            self._ids.pop(dropped.id, None)
        record.infractions.append(infraction)
        self._ids[infraction.id] = record_key
        self._by_kind[infraction.kind] += 1
        events.append((self._on_infraction, infraction))
        until = self._score_until(record, t)
        if until > t:
            events += self._set_ban(record, max(until, record.banned_until), t)
        return events

    def _record(self, record_key: tuple[int, int]) -> _Record:
        record = self._records.get(record_key)
        if record is not None:
            self._records.move_to_end(record_key)
            return record
        if len(self._records) >= self._capacity:
            self._evict_record()
        record = _Record(*record_key, self._text(record_key))
        self._records[record_key] = record
        return record

    def _evict_record(self) -> None:
        """Drop the least recently touched record, preferring one not banned."""
        victim = next((k for k, r in self._records.items() if not r.banned_until),
                      next(iter(self._records)))
        for infraction in self._records.pop(victim).infractions:
            self._ids.pop(infraction.id, None)

    def _refresh(self, record: _Record, t: float) -> list[tuple[Callable[[Any], object] | None, Any]]:
        """Drop expired infractions; notice a ban that has ended."""
        wall = t + self._offset
        expired = [i for i in record.infractions if i.expires <= wall]
        for infraction in expired:
            record.infractions.remove(infraction)
            self._ids.pop(infraction.id, None)
        if record.banned_until and record.banned_until <= t:
            return self._set_ban(record, 0.0, t)
        return []

    def _score_until(self, record: _Record, t: float) -> float:
        """When live penalties fall below ban_score (local time), or 0.0 if they already are."""
        wall = t + self._offset
        live = sorted((i for i in record.infractions if i.expires > wall), key=lambda i: i.expires)
        score = sum(i.penalty for i in live)
        if score < self._ban_score:
            return 0.0
        for infraction in live:
            score -= infraction.penalty
            if score < self._ban_score:
                return infraction.expires - self._offset
        return 0.0  # unreachable: the loop ends with score 0

    def _set_ban(self, record: _Record, until: float,
                 t: float) -> list[tuple[Callable[[Any], object] | None, Any]]:
        """Move a record to ``until`` (<= t: not banned), in the core table too.

        Every on_ban is paired with one on_unban: a ban that ended without
        anyone noticing is reported ended before a new one starts.
        """
        active = record.banned_until > t
        events: list[tuple[Callable[[Any], object] | None, Any]] = []
        if record.banned_until and not active:          # ended, not yet reported
            events.append((self._on_unban, record.source))
        if until <= t:
            if active:
                events.append((self._on_unban, record.source))
            record.banned_until = 0.0
            self.clear(record.hi, record.lo)
            return events
        if not active:
            until = t + self._ban_duration(record, until - t)
            record.bans += 1
        record.banned_until = until
        self.set_until(record.hi, record.lo, until)
        if not active:
            ban = Ban(record.source, until + self._offset, _live_score(record, t + self._offset))
            events += [(self._log_ban, ban), (self._on_ban, ban)]
        return events

    def _ban_duration(self, record: _Record, duration: float) -> float:
        """A new ban's length: min_ban, then escalation of repeat bans, then jitter."""
        duration = max(duration, self._min_ban)
        if self._escalation is not None:
            factor, cap = self._escalation
            duration = max(duration, min(duration * factor ** record.bans, cap))
        if self._jitter:
            duration += self._random.uniform(0.0, self._jitter * duration)
        return duration

    def _log_ban(self, ban: Ban) -> None:
        shown = self._pseudonymizer(ban.source) if self._pseudonymizer else ban.source
        if ban.score >= self._ban_score:
            log.warning("connguard: banned %s until %.0f (live penalties %d >= %d)",
                        shown, ban.until, ban.score, self._ban_score)
        else:
            log.warning("connguard: banned %s until %.0f (by ban())", shown, ban.until)

    @staticmethod
    def _fire(events: list[tuple[Callable[[Any], object] | None, Any]]) -> None:
        """Run callbacks, outside every lock; one that raises is logged, never propagated."""
        for callback, argument in events:
            if callback is None:
                continue
            try:
                callback(argument)
            except Exception:
                log.exception("connguard: a ban callback raised")

    # --- argument handling (no lock needed) --------------------------------------

    def _local(self, now: float | None) -> float:
        return self._time_source() if now is None else number_arg("now", now, low=-math.inf)

    def _source(self, source: str) -> tuple[int, int]:
        """Key an address, or a netblock as other nodes send it ("2001:db8::/64").

        A netblock is re-masked to this node's own prefixes.
        """
        _, hi, lo = self.source_key(address_of(source))
        return hi, lo

    def _text(self, record_key: tuple[int, int]) -> str:
        return netblock_text(*record_key, self._ipv4_prefix, self._ipv6_prefix)

    def _policy_of(self, kind: object) -> tuple[int, float]:
        policy = self._kinds.get(kind) if isinstance(kind, str) else None
        if policy is None:
            raise ValueError(f"unknown infraction kind: {kind!r}")
        return policy

    def _allowed(self, source: str) -> bool:
        """Whether an address (or a netblock's base address) is in ``allow``."""
        if not self._allow:
            return False
        family, address = _core.core.parse_source(source.partition("/")[0])
        ip = ipaddress.IPv4Address(address) if family == 4 else ipaddress.IPv6Address(address)
        return any(ip in net for net in self._allow)

    def infraction_counts(self) -> dict[str, int]:
        """Infractions recorded since start (local and remote), by kind."""
        with self._lock:
            return dict(self._by_kind)

    @property
    def node_id(self) -> str:
        return self._node

    @property
    def pseudonymizer(self) -> Callable[[str], str] | None:
        """What ban log lines show instead of a netblock, when set."""
        return self._pseudonymizer

    @property
    def kinds(self) -> dict[str, tuple[int, float]]:
        """Penalty and lifetime by kind."""
        return dict(self._kinds)


class BanManager(_BanAPI, _BanTable):
    """Infractions with penalties and lifetimes; a source is banned while its
    live penalties sum to at least ``ban_score`` (DEFAULT_KINDS by default).

    ``is_banned(source, now=None)`` is the hot path, a lookup in the core.
    Bans and scores key by the tracker's netblocks (/32, /64 by default), so
    rotating addresses within a /64 does not escape a ban. Sources in
    ``allow`` (CIDRs) are never banned; their reports are only counted.
    Off by default: ``min_ban`` seconds that decay cannot shorten;
    ``escalation=(factor, cap)`` makes the n-th repeat ban ``factor**n``
    times longer, up to ``cap`` seconds;
    ``jitter`` adds up to that fraction of a ban's length at random.
    ``on_infraction``, ``on_ban`` (once per ban) and ``on_unban`` run after
    every lock is released; one that raises is logged, not propagated.
    A ban is logged once, at WARNING, with the netblock -- or its pseudonym
    when ``pseudonymizer`` (a connguard.Pseudonymizer) is given.
    """


def _live_score(record: _Record, wall: float) -> int:
    return sum(i.penalty for i in record.infractions if i.expires > wall)


def _kind_name(kind: object) -> str:
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"infraction kinds must be non-empty str, got {kind!r}")
    return kind


def _policy(kind: str, policy: object) -> tuple[int, float]:
    if not isinstance(policy, tuple) or len(policy) != 2:
        raise TypeError(f"penalties[{kind!r}] must be a (penalty, lifetime seconds) tuple")
    return (int_arg(f"penalty of {kind!r}", policy[0], 0, 2**31),
            number_arg(f"lifetime of {kind!r}", policy[1]))


def _network(text: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(text, str):
        raise TypeError(f"allow entries must be CIDR str, not {type(text).__name__}")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"invalid CIDR in allow: {text!r}") from None


def _field(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise ValueError(f"infraction is missing {name!r}")
    return data[name]
