"""BanManager: infractions with penalties and lifetimes, and the bans they add up to.

Time: a BanManager works in the timebase of its clock -- the core's cheap
monotonic clock by default, or ``clock=`` -- and so does the ban table in the
core that answers ``is_banned`` on the hot path. Infractions leave and enter
as wall-clock seconds (``created``/``expires`` in reports, callbacks,
snapshots and ``apply``), so nodes of a fleet can compare them: with the
default clock a fixed offset, taken at construction, converts between the two.

Locking: ``_lock`` guards ``_records`` (and every Record in it), the id
counter, ``_by_kind``, ``allowed_reports`` and writes of ``_watches`` (a
tuple replaced whole, so it is read without the lock), and it is held across every
write to the core ban table, so the table always holds exactly the bans the
records say. Nothing under it calls user code, logs or does I/O; callbacks
and log lines run after it is released.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import operator
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import _core
from .._netblock import NetblockKeyed, address_of, netblock_text
from .._spec import MAX_CAPACITY, MAX_TIME, Source
from .._validate import callable_arg, int_arg, number_arg, seconds_of, seed_arg, shards_arg
from .policy import BanPolicy
from .records import NO_BAN, Key, Record, Records
from .wire import (
    MAX_ID_LENGTH,
    MAX_NODE_LENGTH,
    Ban,
    Incoming,
    Infraction,
    check_node_id,
    check_wall,
    read_infraction,
    snapshot_items,
    snapshot_of,
)

if TYPE_CHECKING:
    from .._core_py import BanTable as _BanTable

    _BanBase = _BanTable
else:
    _BanTable = _core.core.BanTable
    _BanBase = object

__all__ = ["BanManager", "Watch"]

log = logging.getLogger("connguard.bans")

Events = list[tuple[Callable[[Any], object] | None, Any]]


class Watch(NamedTuple):
    """Callbacks on this node's own commands, added after construction (``BanManager.watch``).

    Important:
    1. ``on_report(infraction)`` runs for each ``report()`` that recorded an
       infraction (not for an allow-listed source), never for ``apply()`` or
       ``restore()``: what other nodes sent is not this node's to pass on.
    2. ``on_ban((netblock, duration, created))`` runs for every ``ban()``
       call, also one that only lengthens a ban; ``on_unban((netblock,
       created))`` for every ``unban()`` call, also when nothing here was
       banned. ``created`` is wall-clock seconds, as infractions carry it.
    3. They run after every lock is released, in the caller's thread; one
       that raises is logged, never propagated.
    """

    on_report: Callable[[Infraction], object] | None = None
    on_ban: Callable[[tuple[str, float, float]], object] | None = None
    on_unban: Callable[[tuple[str, float]], object] | None = None


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
        remembered_ids: int = 100_000,
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
        seed = seed_arg(seed)
        self._policy = BanPolicy(ban_score=ban_score, penalties=penalties, allow=allow,
                                 min_ban=min_ban, escalation=escalation, jitter=jitter, seed=seed)
        for name, fn in (("clock", clock), ("on_infraction", on_infraction), ("on_ban", on_ban),
                         ("on_unban", on_unban), ("pseudonymizer", pseudonymizer)):
            callable_arg(name, fn)
        self._node = check_node_id(node_id if node_id is not None else f"node-{os.urandom(4).hex()}")
        self._set_prefixes(ipv4_prefix, ipv6_prefix)
        self._capacity = int_arg("capacity", capacity, 1, MAX_CAPACITY)
        self._max_infractions = int_arg("max_infractions", max_infractions, 1, 2**20)
        remembered_ids = int_arg("remembered_ids", remembered_ids, 0, 2**32)
        self._on_infraction, self._on_ban, self._on_unban = on_infraction, on_ban, on_unban
        self._pseudonymizer = pseudonymizer
        self._time_source = clock if clock is not None else _core.core.default_clock
        # Wall-clock seconds = local time + offset (0 when the user's clock is used).
        self._offset = time.time() - self._time_source() if clock is None else 0.0
        self._lock = threading.Lock()
        # --- guarded by _lock ---
        self._records = Records(self._capacity, remembered_ids)
        self._counter = itertools.count(1)
        self._bans_started = 0        # bans begun since start (restore's summary line)
        self._by_kind: dict[str, int] = dict.fromkeys(self._policy.kinds, 0)   # infractions recorded
        self.allowed_reports = 0      # reports about allow-listed sources, not acted on
        self._watches: tuple[Watch, ...] = ()   # written under _lock, replaced whole; read without
        shards = shards_arg(shards, self._capacity)
        # Every shard of the core table has room for all ``capacity`` bans, so
        # the table never evicts or refuses one: the records hold at most
        # ``capacity`` netblocks, hence at most that many bans, and the one
        # eviction policy is the records' (entries are allocated as used).
        super().__init__(
            capacity=self._capacity * shards, shards=shards, ipv4_prefix=self._ipv4_prefix,
            ipv6_prefix=self._ipv6_prefix, clock=clock, seed=seed)

    # --- reporting -------------------------------------------------------------

    def report(self, source: Source, kind: str, now: float | None = None) -> Infraction:
        """Record an infraction by ``source``; bans it once its live penalties reach ban_score."""
        penalty, lifetime = self._policy.penalty_of(kind)
        key = self._key_of(source)
        t = self._local(now)
        created = t + self._offset
        with self._lock:
            serial = next(self._counter)
        infraction = Infraction(
            id=f"{self._node}:{serial}:{os.urandom(6).hex()}", source=self._text(key), kind=kind,
            penalty=penalty, created=created, expires=created + lifetime, node=self._node)
        if self._count_allowed(source, 1):
            return infraction
        with self._lock:
            events, _ = self._add(key, [infraction], t)
        for watch in self._watches:
            events.append((watch.on_report, infraction))
        self._fire(events)
        return infraction

    def apply(self, infraction: Infraction | Mapping[str, Any], now: float | None = None) -> bool:
        """Merge an infraction from another node; True when it was new, live and merged.

        The penalty and lifetime come from this node's policy for the kind,
        never from the message; a creation time in the future counts as now.
        An infraction this node holds, or let go and would still count, is a
        no-op (False). An unknown kind or a malformed message raises
        ValueError naming the field, and changes nothing.
        """
        t = self._local(now)
        key, clamped = self._clamp(read_infraction(infraction), t + self._offset)
        if clamped is None:
            return False
        if self._count_allowed(clamped.source, 1):
            return False
        with self._lock:
            events, added = self._add(key, [clamped], t)
        self._fire(events)
        return added == 1

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Return the live infractions as a JSON-able, versioned dict."""
        wall = self._local(now) + self._offset
        with self._lock:
            live = [i for r in self._records for i in r.infractions if i.expires > wall]
        return snapshot_of(live)

    def restore(self, snapshot: Mapping[str, Any], now: float | None = None) -> int:
        """Apply every infraction of a snapshot; idempotent. Return how many were new.

        The whole snapshot is checked first: a malformed entry or an unknown
        kind raises ValueError naming the entry and the field, and nothing is
        applied. Infractions this node holds, or let go and would still
        count (dropped by a bound, or forgiven by ``unban``), are skipped.
        """
        items = snapshot_items(snapshot)
        t = self._local(now)
        # A snapshot can hold millions of infractions: every one becomes a
        # long-lived object, and each full collection of the cycle collector
        # would walk them all again. Nothing made here forms a cycle, so the
        # collector pauses until the restore is done (if it was running).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._restore(items, t)
        finally:
            if collecting:
                gc.enable()

    def _restore(self, items: list[Any], t: float) -> int:
        wall = t + self._offset
        # What _clamp does for one infraction, for many at once: snapshots
        # hold up to millions, so the per-infraction work here is kept to
        # the checks, one dict lookup per source and building the tuple.
        # source text -> its key, netblock text and infractions: one lookup an infraction
        groups: dict[str, tuple[Key, str, list[Infraction]]] = {}
        kinds = dict(self._policy.kinds)
        build = tuple.__new__
        for n, item in enumerate(items):
            try:
                # read_infraction's checks, inline for the usual entry (a
                # mapping of well-formed fields); anything else takes the
                # full path, which says what is wrong. Unknown kinds and bad
                # sources fail below; only these lengths need checking here.
                try:
                    ident, source, kind, created, node = _FIELDS(item)
                except (KeyError, TypeError):
                    ident, source, kind, created, node = read_infraction(item)
                if not (str is type(ident) is type(source) is type(kind) is type(node)
                        and 0 < len(ident) <= MAX_ID_LENGTH and 0 < len(node) <= MAX_NODE_LENGTH
                        and type(created) is float and -math.inf < created < math.inf):
                    ident, source, kind, created, node = read_infraction(item)
                policy = kinds.get(kind) or self._policy.penalty_of(kind)
                group = groups.get(source)
                if group is None:
                    key = self._key_of(source)
                    group = groups[source] = (key, self._text(key), [])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"snapshot infraction {n}: {exc}") from None
            penalty, lifetime = policy
            if created > wall:                            # from the future: counts as now
                created = wall
            if created + lifetime <= wall:
                continue
            group[2].append(build(Infraction, (ident, group[1], kind, penalty, created,
                                               created + lifetime, node)))
        added = 0
        started = self._bans_started
        for key, _, infractions in groups.values():      # two texts of one key: two _adds
            if not infractions:
                continue
            if self._count_allowed(infractions[0].source, len(infractions)):
                continue
            with self._lock:
                events, count = self._add(key, infractions, t, log_it=False)
            added += count
            if events:
                self._fire(events)
        if added:   # one line, not one per ban: the node that banned logged each
            log.warning("connguard: restored %d infractions; %d sources banned by them",
                        added, self._bans_started - started)
        return added

    # --- bans ------------------------------------------------------------------

    def ban(self, source: Source, duration: float, now: float | None = None, *,
            made: float | None = None) -> None:
        """Ban ``source``'s netblock for ``duration`` seconds, at most MAX_TIME
        (longer if already banned).

        ``made`` (wall-clock seconds; default and at most now) is when the
        ban was decided, for a ban another node made: an
        ``unban(before=...)`` made before it leaves it in place.
        """
        duration = number_arg("duration", duration)
        if duration > MAX_TIME:
            raise ValueError(f"duration must be at most {MAX_TIME:g} seconds, got {duration!r}")
        if made is not None:
            check_wall("made", made)
        key = self._key_of(source)
        t = self._local(now)
        with self._lock:
            record, events = self._record(key, t)
            previous = record.banned_until
            events += self._set_ban(record, max(previous, t + duration), t)
            # What this call set: the ban's end when it made or lengthened the
            # ban (with the policy's adjustments), else what it asked for.
            asked = record.banned_until if t + duration >= previous else t + duration
            wall = t + self._offset                  # made from the future: now
            record.add_manual(wall if made is None else min(made, wall), asked, t)
        if self._watches:
            command = (self._text(key), duration, t + self._offset)
            events += [(watch.on_ban, command) for watch in self._watches]
        self._fire(events)

    def unban(self, source: Source, now: float | None = None, *, before: float | None = None) -> bool:
        """Lift a ban and forgive the infractions behind it; False when not banned.

        Forgiven infractions are remembered, so a peer sending them again
        (``apply``, ``restore``) does not bring the ban back. With
        ``before`` (wall-clock seconds: an unban another node made then),
        only infractions created at or before it are forgiven; when the
        later ones still reach ban_score the ban stays, for as long as
        they warrant, and a ``ban()`` made after it stays as it was.
        """
        if before is not None:
            check_wall("before", before)
        key = self._key_of(source)
        t = self._local(now)
        events: Events = []
        was_banned = False
        with self._lock:
            record = self._records.get(key)
            if record is not None:
                was_banned = record.banned_until > t
                kept = [i for i in record.infractions if before is not None and i.created > before]
                for infraction in record.infractions:
                    if before is None or infraction.created <= before:
                        self._records.forget(infraction, t + self._offset)
                record.infractions = kept
                until = self._score_until(record, t) if kept else NO_BAN
                if before is None:
                    record.manual = None
                elif was_banned:                 # the ban() calls after before hold it
                    until = max(until, record.manual_after(before))
                events = self._set_ban(record, until, t)
        if self._watches:
            command = (self._text(key), t + self._offset)
            events += [(watch.on_unban, command) for watch in self._watches]
        self._fire(events)
        return was_banned

    def watch(self, watch: Watch) -> None:
        """Add callbacks on this node's own ``report``/``ban``/``unban`` (see Watch)."""
        if not isinstance(watch, Watch):
            raise TypeError(f"watch must be a connguard.bans.Watch, not {type(watch).__name__}")
        for name, fn in zip(watch._fields, watch, strict=True):
            callable_arg(name, fn)
        with self._lock:
            self._watches = (*self._watches, watch)

    def unwatch(self, watch: Watch) -> bool:
        """Remove callbacks added by ``watch``; False when they were not there."""
        with self._lock:
            kept = tuple(w for w in self._watches if w is not watch)
            found = len(kept) < len(self._watches)
            self._watches = kept
        return found

    def netblock(self, source: Source) -> str:
        """Return the netblock ``source`` is keyed under here, as records and bans name it.

        Takes an address or netblock text from another node (re-masked to
        this manager's prefixes).
        """
        return self._text(self._key_of(source))

    def score(self, source: Source, now: float | None = None) -> int:
        """Return the sum of ``source``'s live penalties."""
        key = self._key_of(source)
        t = self._local(now)
        with self._lock:
            record = self._records.get(key)
            return 0 if record is None else _live_score(record, t + self._offset)

    def banned(self, now: float | None = None) -> list[Ban]:
        """Return the bans in force, soonest to end first: exactly those is_banned enforces."""
        t = self._local(now)
        with self._lock:
            found = [Ban(r.source, r.banned_until + self._offset, _live_score(r, t + self._offset))
                     for r in self._records.banned() if r.banned_until > t]
        return sorted(found, key=lambda b: (b.until, b.source))

    def bans(self, now: float | None = None) -> list[Ban]:
        """Deprecated name of ``banned()``."""
        warnings.warn("BanManager.bans() is deprecated; use BanManager.banned()",
                      DeprecationWarning, stacklevel=2)
        return self.banned(now)

    def purge(self, now: float | None = None) -> int:
        """Drop expired infractions and ended bans; return how many records went."""
        t = self._local(now)
        wall = t + self._offset
        events: Events = []
        gone = 0
        with self._lock:
            for record in list(self._records):
                events += self._refresh(record, t)
                # With escalation a record remembers its past bans (still
                # bounded by capacity); otherwise nothing is left to keep.
                remembered = self._policy.escalation is not None and record.bans
                if not record.infractions and record.banned_until == NO_BAN and not remembered:
                    self._records.remove(record, wall)
                    gone += 1
            self._records.purge_gone(wall)
        self._fire(events)
        return gone

    # --- internals (called with _lock held unless noted) -------------------------

    def _count_allowed(self, source: Source, reports: int) -> bool:
        """Whether ``source`` is allow-listed; if so, count its reports (no lock needed)."""
        if not self._policy.allowed(source):
            return False
        with self._lock:
            self.allowed_reports += reports
        return True

    def _clamp(self, incoming: Incoming, wall: float) -> tuple[Key, Infraction | None]:
        """Key an incoming infraction and rebuild it under local policy (no lock needed).

        None for the infraction when it has already expired here.
        """
        ident, source, kind, created, node = incoming
        penalty, lifetime = self._policy.penalty_of(kind)
        key = self._key_of(source)
        created = min(created, wall)
        if created + lifetime <= wall:
            return key, None
        return key, Infraction(ident, self._text(key), kind, penalty, created, created + lifetime,
                               node)

    def _add(self, key: Key, infractions: list[Infraction], t: float,
             log_it: bool = True) -> tuple[Events, int]:
        """Add new infractions to one netblock's record; ban it if they reach the score.

        Return the callbacks to run and how many infractions were new.
        """
        wall = t + self._offset
        records = self._records
        # An id is held by the record of its netblock, so that record is all
        # there is to search; ids let go are remembered in records.
        existing = records.get(key)
        fresh = infractions
        if existing is not None and existing.infractions:
            held = {i.id for i in existing.infractions}
            fresh = [i for i in fresh if i.id not in held]
        if len(fresh) > 1 and len({i.id for i in fresh}) < len(fresh):
            fresh = list({i.id: i for i in reversed(fresh)}.values())   # the first of each id
        if records.remembering:
            fresh = [i for i in fresh if not records.forgotten(i.id, wall)]
        if not fresh:
            return [], 0
        record, events = self._record(key, t, fresh[0].source)
        events += self._refresh(record, t)
        record.infractions += fresh
        by_kind = self._by_kind
        for kind in map(_KIND, fresh):
            by_kind[kind] += 1
        if self._on_infraction is not None:
            events += [(self._on_infraction, infraction) for infraction in fresh]
        excess = len(record.infractions) - self._max_infractions
        if excess > 0:                      # keep the ones that count longest
            record.infractions.sort(key=_EXPIRES)
            for dropped in record.infractions[:excess]:
                records.forget(dropped, wall)
            del record.infractions[:excess]
        until = self._score_until(record, t)
        if until > t:
            events += self._set_ban(record, max(until, record.banned_until), t, log_it)
        return events, len(fresh)

    def _record(self, key: Key, t: float, text: str | None = None) -> tuple[Record, Events]:
        """The record of a netblock, made (evicting one if full) when there is none.

        ``text``, when given, is the key's netblock text (saves formatting it).
        """
        record = self._records.get(key)
        if record is not None:
            return record, []
        record = Record(*key, text if text is not None else self._text(key))
        evicted = self._records.add(record, t, t + self._offset)
        events: Events = []
        if evicted is not None and evicted.banned_until != NO_BAN:
            self.clear(evicted.hi, evicted.lo)
            if evicted.banned_until > t:
                # Every record held a live ban: the one ending soonest made room.
                events.append((self._log_evicted, evicted.source))
            events.append((self._on_unban, evicted.source))     # ended or lifted: its on_unban
        return record, events

    def _refresh(self, record: Record, t: float) -> Events:
        """Drop expired infractions; notice a ban that has ended."""
        wall = t + self._offset
        expired = [i for i in record.infractions if i.expires <= wall]
        if expired:
            for infraction in expired:
                self._records.forget(infraction, wall)       # expired: not remembered
            record.infractions = [i for i in record.infractions if i.expires > wall]
        if record.banned_until != NO_BAN and record.banned_until <= t:
            return self._set_ban(record, NO_BAN, t)
        return []

    def _score_until(self, record: Record, t: float) -> float:
        """When live penalties fall below ban_score (local time), or NO_BAN if they already are."""
        wall = t + self._offset
        live = sorted([i for i in record.infractions if i.expires > wall], key=_EXPIRES)
        score = sum(map(_PENALTY, live))
        for infraction in live:
            if score < self._policy.ban_score:
                break
            score -= infraction.penalty
            if score < self._policy.ban_score:
                return infraction.expires - self._offset
        return NO_BAN

    def _set_ban(self, record: Record, until: float, t: float, log_it: bool = True) -> Events:
        """Move a record to ``until`` (<= t: not banned), in the core table too.

        Every on_ban is paired with one on_unban: a ban that ended without
        anyone noticing is reported ended before a new one starts. A new ban
        is logged unless ``log_it`` is false (restore logs one summary).
        """
        active = record.banned_until > t
        events: Events = []
        if record.banned_until != NO_BAN and not active:    # ended, not yet reported
            events.append((self._on_unban, record.source))
        if until <= t:
            if active:
                events.append((self._on_unban, record.source))
            if record.banned_until != NO_BAN:
                self.clear(record.hi, record.lo)
                self._records.set_ban(record, NO_BAN)
            record.manual = None
            return events
        if not active:
            until = t + self._policy.ban_length(until - t, record.bans)
        if not self.set_until(record.hi, record.lo, until):
            raise MemoryError("the core ban table could not grow")
        if not active:
            record.bans += 1
            self._bans_started += 1
        self._records.set_ban(record, until)
        if not active and (log_it or self._on_ban is not None):
            ban = Ban(record.source, until + self._offset, _live_score(record, t + self._offset))
            events += [(self._log_ban if log_it else None, ban), (self._on_ban, ban)]
        return events

    # --- callbacks and logs (no lock held) -----------------------------------------

    def _shown(self, source: str) -> str:
        return self._pseudonymizer(source) if self._pseudonymizer else source

    def _log_ban(self, ban: Ban) -> None:
        if ban.score >= self._policy.ban_score:
            log.warning("connguard: banned %s until %.0f (live penalties %d >= %d)",
                        self._shown(ban.source), ban.until, ban.score, self._policy.ban_score)
        else:
            log.warning("connguard: banned %s until %.0f (by ban())", self._shown(ban.source),
                        ban.until)

    def _log_evicted(self, source: str) -> None:
        log.warning("connguard: ban records full (capacity %d, all banned): lifted the ban "
                    "ending soonest, %s", self._capacity, self._shown(source))

    def _fire(self, events: Events) -> None:
        """Run callbacks, outside every lock; one that raises is logged, never propagated.

        With a pseudonymizer the log line names only the exception's type:
        its message may carry an address.
        """
        for callback, argument in events:
            if callback is None:
                continue
            try:
                callback(argument)
            except Exception as exc:
                if self._pseudonymizer is None:
                    log.exception("connguard: a ban callback raised")
                else:
                    log.error("connguard: a ban callback raised %s", type(exc).__name__)

    # --- argument handling (no lock needed) --------------------------------------

    def _local(self, now: float | None) -> float:
        """``now``, or the clock's reading, checked as the cores check times."""
        return seconds_of(self._time_source() if now is None else now, now is None)

    def _key_of(self, source: Source) -> Key:
        """Key an address, or a netblock as other nodes send it ("2001:db8::/64").

        A netblock is re-masked to this node's own prefixes.
        """
        _, hi, lo = self.source_key(address_of(source))
        return hi, lo

    def _text(self, key: Key) -> str:
        return netblock_text(*key, self._ipv4_prefix, self._ipv6_prefix)

    # --- read-only state ----------------------------------------------------------

    def infraction_counts(self) -> dict[str, int]:
        """Infractions recorded since start (local and remote), by kind."""
        with self._lock:
            return dict(self._by_kind)

    @property
    def capacity(self) -> int:
        """At most this many netblocks are held."""
        return self._capacity

    @property
    def evicted_bans(self) -> int:
        """Live bans lifted to make room because every record held one."""
        return self._records.evicted_bans

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
        return dict(self._policy.kinds)


class BanManager(_BanAPI, _BanTable):
    """Infractions with penalties and lifetimes; a source is banned while its
    live penalties sum to at least ``ban_score`` (DEFAULT_KINDS by default).

    ``is_banned(source, now=None)`` is the hot path, a lookup in the core; it
    takes an address or netblock text ("2001:db8::/64"). Bans and scores key
    by the tracker's netblocks (/32, /64 by default), so rotating addresses
    within a /64 does not escape a ban. Sources in ``allow`` (CIDRs) are
    never banned; their reports are only counted.

    At every moment ``banned()`` lists exactly the bans ``is_banned``
    enforces, and ``unban()`` lifts any of them. At most ``capacity``
    netblocks are held; when full, a record without a live ban makes room
    (least recently touched first), and only when every record is banned is
    the ban ending soonest lifted (``evicted_bans`` counts those, and each
    is logged). At most ``max_infractions`` per netblock are kept (those
    counting longest), and up to ``remembered_ids`` ids of infractions let
    go are remembered until they expire, so restoring or applying them
    again counts nothing.

    Off by default: ``min_ban`` seconds that decay cannot shorten;
    ``escalation=(factor, cap)`` makes the n-th repeat ban ``factor**n``
    times longer, up to ``cap`` seconds; ``jitter`` adds up to that fraction
    of a ban's length at random. ``on_infraction``, ``on_ban`` (once per
    ban) and ``on_unban`` run after every lock is released; one that raises
    is logged, not propagated; ``watch()`` adds callbacks on this node's own
    ``report``/``ban``/``unban`` calls after construction (what a fleet
    passes on). A ban is logged once, at WARNING, with the
    netblock -- or its pseudonym when ``pseudonymizer`` (a
    connguard.Pseudonymizer) is given.
    """


_FIELDS = operator.itemgetter("id", "source", "kind", "created", "node")
_KIND, _PENALTY, _EXPIRES = (operator.itemgetter(Infraction._fields.index(name))
                             for name in ("kind", "penalty", "expires"))


def _live_score(record: Record, wall: float) -> int:
    return sum(i.penalty for i in record.infractions if i.expires > wall)
