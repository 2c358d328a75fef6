"""Tracker: validated configuration over the core's source table, and SourceStats."""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from . import _core
from ._netblock import NetblockKeyed, netblock_text
from ._spec import (
    MAX_CAPACITY,
    MAX_CLASSES,
    PATTERN_BITS,
    PATTERNS,
    SKETCH_BITS,
    RawStats,
    Source,
    TopBy,
    pattern_names,
)
from ._validate import callable_arg, int_arg, number_arg, seed_arg, shards_arg
from .events import ACCEPT, CLOSE, Event, byte_count
from .patterns import (
    CredentialStuffing,
    DnsTunnel,
    Finding,
    PortScan,
    SpamRelay,
    build_limits,
    check_config,
    findings_of,
    usable,
)

if TYPE_CHECKING:
    # Type checkers see the pure twin's signatures (the compiled core has the
    # same ones, checked by tests/test_core_selection.py); at run time the
    # API mixin is a plain class and Tracker's base is the selected core's.
    from ._core_py import Connection
    from ._core_py import SourceTable as _SourceTable

    _TrackerBase = _SourceTable
else:
    _SourceTable = _core.core.SourceTable
    _TrackerBase = object
    # The selected core's handle: Tracker.open and Guard.open return one.
    Connection = _core.core.Connection

__all__ = ["DEFAULT_PORT_CLASSES", "PATTERNS", "Connection", "SourceStats", "Tracker"]

log = logging.getLogger("connguard")

# The windowed patterns' defaults (immutable, so one of each serves every Tracker).
_SPAM_RELAY, _PORT_SCAN = SpamRelay(), PortScan()
_CREDENTIAL_STUFFING, _DNS_TUNNEL = CredentialStuffing(), DnsTunnel()

#: Destination classes by port; a port in none of them is "other".
DEFAULT_PORT_CLASSES: Mapping[str, tuple[int, ...]] = MappingProxyType({
    "smtp": (25, 465, 587, 2525),
    "https": (443, 8443),
    "http": (80, 8080, 8000),
    "dns": (53,),
    "dot": (853,),
})

_OVERFLOW = ("permissive", "deny")
_TOP_BY = {mode.name.lower(): mode for mode in TopBy}
_SKETCH_SATURATED = SKETCH_BITS * math.log(SKETCH_BITS)


@dataclass(frozen=True, slots=True)
class SourceStats:
    """One source's counters at one moment; windowed values cover ``window`` seconds."""

    source: str                   # the netblock: "203.0.113.7", "2001:db8:0:1::/64"
    active: int                   # connections open now
    total: int                    # accepts since the source was first tracked
    rate: float                   # accepts per second over the window
    by_class: dict[str, int]      # accepts per destination class over the window
    distinct_destinations: int    # estimated distinct destination hosts over the window
    distinct_ports: int           # estimated distinct destination ports over the window
    first_seen: float
    last_seen: float
    flagged: bool                 # True when any pattern is raised
    patterns: frozenset[str]

    @property
    def key(self) -> str:
        """Deprecated name of ``source`` (the same netblock text as ``Ban.source``)."""
        warnings.warn("SourceStats.key is deprecated; use SourceStats.source",
                      DeprecationWarning, stacklevel=2)
        return self.source


def _linear_count(bits: int) -> float:
    """Estimate how many distinct items set ``bits`` in a 64-bit sketch."""
    zeros = SKETCH_BITS - bin(bits).count("1")
    return _SKETCH_SATURATED if zeros == 0 else -SKETCH_BITS * math.log(zeros / SKETCH_BITS)


def _windowed_distinct(cur: int, prev: int, weight: float) -> int:
    """Distinct items this bucket plus the share of last bucket's new ones still in the window."""
    in_cur = _linear_count(cur)
    only_prev = max(0.0, _linear_count(cur | prev) - in_cur)
    return int(in_cur + only_prev * weight + 0.5)


def _port_table(port_classes: Mapping[str, Iterable[int]],
                reserved: tuple[str, ...] = ()) -> tuple[tuple[str, ...], bytes]:
    """Return the class names (index 0 is "other", ``reserved`` last) and the
    65,536-entry port table."""
    if not isinstance(port_classes, Mapping):
        raise TypeError("port_classes must be a mapping of class name to ports")
    limit = MAX_CLASSES - 1 - len(reserved)
    if len(port_classes) > limit:
        why = " (the login watch-list takes a class)" if reserved else ""
        raise ValueError(f"port_classes may name at most {limit} classes{why}, "
                         f"got {len(port_classes)}")
    names = ["other"]
    table = bytearray(65536)
    owner: dict[int, str] = {}
    for name, ports in port_classes.items():
        if not isinstance(name, str) or not name or name == "other" or name in reserved:
            taken = ", ".join(repr(n) for n in ("other", *reserved))
            raise ValueError(f"port class names must be non-empty str other than {taken}, "
                             f"got {name!r}")
        if isinstance(ports, (str, bytes)) or not isinstance(ports, Iterable):
            raise TypeError(f"ports of class {name!r} must be an iterable of int")
        names.append(name)
        for port in ports:
            int_arg(f"port of class {name!r}", port, 0, 65535)
            if owner.get(port, name) != name:
                raise ValueError(f"port {port} is in two classes: {owner[port]!r} and {name!r}")
            owner[port] = name
            table[port] = len(names) - 1
    return (*names, *reserved), bytes(table)


class RefusedCloses:
    """Closes owed to accepts a listener refused, by netblock: they must not close anything.

    An emitter sends a close for every accept it announced, refused or not;
    a listener that refused the accept absorbs its close here. Touched only
    on refusals and on closes while a refusal is owed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owed: dict[tuple[int, int, int], int] = {}     # guarded by _lock

    def add(self, key: tuple[int, int, int]) -> None:
        with self._lock:
            self._owed[key] = self._owed.get(key, 0) + 1

    def take(self, table: _SourceTable, source: str) -> bool:
        """Absorb one owed close of ``source``'s netblock; False when none is owed."""
        if not self._owed:                   # the common case: nothing refused
            return False
        key = table.source_key(source)
        with self._lock:
            owed = self._owed.get(key, 0)
            if not owed:
                return False
            if owed == 1:
                del self._owed[key]
            else:
                self._owed[key] = owed - 1
            return True


class _TrackerAPI(NetblockKeyed, _TrackerBase):
    """Everything Tracker adds to a core's SourceTable; shared by both cores.

    ``isinstance(x, _TrackerAPI)`` is true of a Tracker on either core.
    """

    def __init__(
        self,
        *,
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 64,
        capacity: int = 1_000_000,
        window: float = 60.0,
        concurrent_threshold: int = 256,
        rate_threshold: float | None = None,
        overflow: str = "permissive",
        port_classes: Mapping[str, Iterable[int]] | None = None,
        clock: Callable[[], float] | None = None,
        shards: int = 64,
        seed: int | None = None,
        spam_relay: SpamRelay | None = _SPAM_RELAY,
        port_scan: PortScan | None = _PORT_SCAN,
        credential_stuffing: CredentialStuffing | None = _CREDENTIAL_STUFFING,
        dns_tunnel: DnsTunnel | None = _DNS_TUNNEL,
        on_finding: Callable[[Finding], object] | None = None,
    ) -> None:
        self._set_prefixes(ipv4_prefix, ipv6_prefix)
        capacity = int_arg("capacity", capacity, 1, MAX_CAPACITY)
        # At least a millisecond: now / window stays finite for every allowed now.
        self._window = number_arg("window", window, low=1e-3, allow_low=True)
        threshold = int_arg("concurrent_threshold", concurrent_threshold, 1, 2**32 - 1)
        rate = math.inf if rate_threshold is None else number_arg("rate_threshold", rate_threshold)
        self._thresholds = MappingProxyType({"conn_flood": float(threshold), "conn_rate": rate})
        if overflow not in _OVERFLOW:
            raise ValueError(f"overflow must be 'permissive' or 'deny', got {overflow!r}")
        configs = {name: check_config(name, value) for name, value in (
            ("spam_relay", spam_relay), ("port_scan", port_scan),
            ("credential_stuffing", credential_stuffing), ("dns_tunnel", dns_tunnel))}
        login_hosts = credential_stuffing.login_hosts if credential_stuffing else ()
        self._class_names, table = _port_table(
            DEFAULT_PORT_CLASSES if port_classes is None else port_classes,
            ("login",) if login_hosts else ())
        self._patterns = MappingProxyType(usable(configs, self._class_names))
        self._limits = build_limits(self._patterns, self._class_names)
        self._finding_callbacks: tuple[Callable[[Finding], object], ...] = ()
        self._finding_errors = 0                     # guarded by _unattributed_lock
        self._finding_logged = -math.inf             # guarded by _unattributed_lock
        self._finding_suppressed = 0                 # guarded by _unattributed_lock
        self._unattributed = 0
        self._unattributed_lock = threading.Lock()   # guards _unattributed; error path only
        self._refused = RefusedCloses()
        super().__init__(
            capacity=capacity, shards=shards_arg(shards, capacity), window=self._window,
            concurrent_threshold=threshold, rate_threshold=rate,
            ipv4_prefix=self._ipv4_prefix, ipv6_prefix=self._ipv6_prefix,
            deny=overflow == "deny", port_classes=table, clock=callable_arg("clock", clock),
            seed=seed_arg(seed), patterns=self._limits,
            watch=tuple(_core.core.host_hash(h) for h in login_hosts),
            watch_class=len(self._class_names) - 1 if login_hosts else 0)
        callable_arg("on_finding", on_finding)
        if on_finding is not None:
            self.add_finding_callback(on_finding)

    def add_finding_callback(self, callback: Callable[[Finding], object]) -> None:
        """Call ``callback(finding)`` for every pattern raised on a source from now on.

        It runs on the thread that accepted or closed the connection, after
        the shard lock is released; an exception it raises is logged and
        counted in ``finding_errors``, never raised into the caller.
        """
        self._finding_callbacks = (*self._finding_callbacks, callback)
        self.set_finding_hook(self._emit_findings)

    def _emit_findings(self, source: object, bits: int, now: float) -> None:
        try:
            found = self.source_findings(source, now)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        for finding in found:
            if not PATTERN_BITS[finding.pattern] & bits:
                continue
            for callback in self._finding_callbacks:
                try:
                    callback(finding)
                except Exception:
                    self._finding_failed()

    def _finding_failed(self) -> None:
        """Count a callback's exception; log it at most once a minute (with the count
        of those not logged since), so a broken callback cannot flood the log."""
        with self._unattributed_lock:
            self._finding_errors += 1
            now = time.monotonic()
            if now - self._finding_logged < 60.0:
                self._finding_suppressed += 1
                return
            self._finding_logged = now
            suppressed, self._finding_suppressed = self._finding_suppressed, 0
        log.exception("connguard: an on_finding callback raised (%d more since the last report)",
                      suppressed)

    def source_findings(self, source: Source, now: float | None = None) -> list[Finding]:
        """Return the live findings of one source's netblock (empty when none)."""
        _, hi, lo = self.source_key(source)
        pair = self.record_raw(hi, lo, now)
        if pair is None:
            return []
        raw, record = pair
        return findings_of(self._netblock(raw), raw, record, self._limits, self._thresholds,
                           self._window)

    @property
    def finding_errors(self) -> int:
        """Exceptions raised by on_finding callbacks (logged, never re-raised)."""
        return self._finding_errors

    def findings(self, now: float | None = None) -> list[Finding]:
        """Return the live findings: one per pattern raised on a source.

        Reads only the sources that hold pattern state (every flagged source
        does), never the whole table. Ordered by when each was raised.
        """
        found = [finding for raw, record in self.findings_raw(now)
                 for finding in findings_of(self._netblock(raw), raw, record, self._limits,
                                            self._thresholds, self._window)]
        found.sort(key=lambda f: (f.first_seen, f.source, f.pattern))
        return found

    @property
    def pattern_config(self) -> Mapping[str, object]:
        """Each windowed pattern's configuration object; None when it is off
        (passed None, or its destination classes are not among class_names)."""
        return self._patterns

    def netblock(self, source: Source) -> str:
        """Return the netblock ``source`` is counted under, named as stats and findings name it."""
        _, hi, lo = self.source_key(source)
        return netblock_text(hi, lo, self._ipv4_prefix, self._ipv6_prefix)

    def _netblock(self, raw: RawStats) -> str:
        return netblock_text(raw.key_hi, raw.key_lo, self._ipv4_prefix, self._ipv6_prefix)

    def __call__(self, event: Event) -> None:
        """Take an event as the process-wide listener (see connguard.set_listener).

        An accept that ``overflow="deny"`` refuses is not counted, and the
        close event that follows it is absorbed rather than closing another
        connection of the same netblock. An event whose source is empty or
        not an address, or whose direction is neither ACCEPT nor CLOSE, is
        counted in ``unattributed`` and dropped: nothing is raised into the
        emitter.
        """
        try:
            if event.direction == ACCEPT:
                if not self.accept(event.source, event.destination):
                    self._refused.add(self.source_key(event.source))
                return
            if event.direction == CLOSE:
                if not self._refused.take(self, event.source):
                    self.close(event.source, sent=byte_count(event.sent),
                               received=byte_count(event.received),
                               destination=event.destination or None)
                return
        except (ValueError, TypeError):
            pass
        self._drop_unattributed()

    def _drop_unattributed(self) -> None:
        """Count an event that named no usable source (listeners only)."""
        with self._unattributed_lock:
            self._unattributed += 1

    @property
    def unattributed(self) -> int:
        """Events taken as a listener that named no usable source, and were dropped."""
        return self._unattributed

    @property
    def class_names(self) -> tuple[str, ...]:
        """Destination class names; "other" first."""
        return self._class_names

    @property
    def thresholds(self) -> Mapping[str, float]:
        """Each pattern's threshold (read-only; set them when building the Tracker)."""
        return self._thresholds

    @property
    def window(self) -> float:
        """Seconds covered by rates, per-class counts and distinct counts."""
        return self._window

    def stats(self, source: Source, now: float | None = None) -> SourceStats | None:
        """Return a snapshot of one source's netblock, or None when it is not tracked."""
        _, hi, lo = self.source_key(source)
        raw = self.stats_raw(hi, lo, now)
        return None if raw is None else self._to_stats(raw)

    def top(self, n: int = 10, by: str = "active", now: float | None = None) -> list[SourceStats]:
        """Return the n sources ranked highest by "active", "total" or "rate".

        ``by="flagged"``: only sources with a pattern raised, highest rate first.
        """
        n = int_arg("n", n, 0, 2**62)
        mode = _TOP_BY.get(by) if isinstance(by, str) else None
        if mode is None:
            raise ValueError(f"by must be 'active', 'total', 'rate' or 'flagged', got {by!r}")
        return [self._to_stats(raw) for raw in self.top_raw(n, mode, now)]

    def _to_stats(self, raw: RawStats) -> SourceStats:
        weight = raw.weight
        names = pattern_names(raw.patterns)
        return SourceStats(
            source=self._netblock(raw),
            active=raw.active,
            total=raw.total,
            rate=(sum(raw.cls_cur) + sum(raw.cls_prev) * weight) / self._window,
            by_class={name: int(raw.cls_cur[i] + raw.cls_prev[i] * weight + 0.5)
                      for i, name in enumerate(self._class_names)},
            distinct_destinations=_windowed_distinct(raw.hosts_cur, raw.hosts_prev, weight),
            distinct_ports=_windowed_distinct(raw.ports_cur, raw.ports_prev, weight),
            first_seen=raw.first_seen,
            last_seen=raw.last_seen,
            flagged=bool(names),
            patterns=names,
        )

    @property
    def active_connections(self) -> int:
        """Connections accepted and not yet closed, over tracked sources."""
        return self.counters()[0]

    @property
    def active_sources(self) -> int:
        """Tracked sources with at least one active connection."""
        return self.counters()[1]

    @property
    def tracked_sources(self) -> int:
        """Sources in the table (never more than capacity)."""
        return self.counters()[2]

    @property
    def flagged_sources(self) -> int:
        """Tracked sources with at least one pattern raised."""
        return self.counters()[3]

    @property
    def evictions(self) -> int:
        """Idle sources dropped to make room for new ones."""
        return self.counters()[4]

    @property
    def overflows(self) -> int:
        """Accepts from new sources that found the table full of busy sources."""
        return self.counters()[5]


class Tracker(_TrackerAPI, _SourceTable):
    """Count connections per source netblock and flag abuse patterns.

    ``accept(source, destination="", now=None) -> bool`` and
    ``close(source, now=None, *, sent=None, received=None, destination=None)
    -> bool`` are the hot path, straight into the core: one address parse,
    one shard lock, no Python object created for a source already tracked.
    ``sent``/``received`` are the bytes the source sent and received on the
    closed connection (None: unknown; 0: nothing, the mark of a failed or
    empty connection); a close names no destination unless given one, so
    its bytes count for the source as a whole. The windowed patterns
    (``spam_relay``, ``port_scan``, ``credential_stuffing``, ``dns_tunnel``)
    each take a configuration object from connguard.patterns, or None to
    turn one off; ``on_finding(finding)`` is called for each raised one.
    ``concurrent_threshold`` defaults to 256: ordinary busy clients behind a
    proxy hold 100+ concurrent flows, so a lower threshold (10 suits a
    WebSocket relay) flags them all.
    """
