"""Tracker: validated configuration over the core's source table, and SourceStats."""

from __future__ import annotations

import ipaddress
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import _core
from ._validate import callable_arg, int_arg, number_arg, seed_arg, shards_arg
from .events import ACCEPT, CLOSE, Event

__all__ = ["DEFAULT_PORT_CLASSES", "PATTERNS", "SourceStats", "Tracker"]

#: Destination classes by port; a port in none of them is "other".
DEFAULT_PORT_CLASSES: Mapping[str, tuple[int, ...]] = {
    "smtp": (25, 465, 587, 2525),
    "https": (443, 8443),
    "http": (80, 8080, 8000),
    "dns": (53,),
    "dot": (853,),
}

#: Every pattern name a source can be flagged with, in bit order.
PATTERNS: tuple[str, ...] = tuple(_core.core.PATTERN_BITS)

_OVERFLOW = ("permissive", "deny")
_SKETCH_BITS: int = _core.core.SKETCH_BITS
_SKETCH_SATURATED = _SKETCH_BITS * math.log(_SKETCH_BITS)


@dataclass(frozen=True, slots=True)
class SourceStats:
    """One source's counters at one moment; windowed values cover ``window`` seconds."""

    key: str                      # the netblock: "203.0.113.7", "2001:db8:0:1::/64"
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


def _linear_count(bits: int) -> float:
    """Estimate how many distinct items set ``bits`` in a 64-bit sketch."""
    zeros = _SKETCH_BITS - bin(bits).count("1")
    return _SKETCH_SATURATED if zeros == 0 else -_SKETCH_BITS * math.log(zeros / _SKETCH_BITS)


def _windowed_distinct(cur: int, prev: int, weight: float) -> int:
    """Distinct items this bucket plus the share of last bucket's new ones still in the window."""
    in_cur = _linear_count(cur)
    only_prev = max(0.0, _linear_count(cur | prev) - in_cur)
    return int(in_cur + only_prev * weight + 0.5)


def key_text(hi: int, lo: int, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """Format a netblock key: \"203.0.113.7\", \"198.51.100.0/24\", \"2001:db8::/64\"."""
    if hi == 0 and lo >> 32 == 0xFFFF:
        address: Any = ipaddress.IPv4Address(lo & 0xFFFFFFFF)
        return str(address) if ipv4_prefix == 32 else f"{address}/{ipv4_prefix}"
    address = ipaddress.IPv6Address((hi << 64) | lo)
    return str(address) if ipv6_prefix == 128 else f"{address}/{ipv6_prefix}"


def _port_table(port_classes: Mapping[str, Iterable[int]]) -> tuple[tuple[str, ...], bytes]:
    """Return the class names (index 0 is "other") and the 65,536-entry port table."""
    if not isinstance(port_classes, Mapping):
        raise TypeError("port_classes must be a mapping of class name to ports")
    limit = _core.core.MAX_CLASSES - 1
    if len(port_classes) > limit:
        raise ValueError(f"port_classes may name at most {limit} classes, got {len(port_classes)}")
    names = ["other"]
    table = bytearray(65536)
    owner: dict[int, str] = {}
    for name, ports in port_classes.items():
        if not isinstance(name, str) or not name or name == "other":
            raise ValueError(f"port class names must be non-empty str other than 'other', got {name!r}")
        if isinstance(ports, (str, bytes)) or not isinstance(ports, Iterable):
            raise TypeError(f"ports of class {name!r} must be an iterable of int")
        names.append(name)
        for port in ports:
            int_arg(f"port of class {name!r}", port, 0, 65535)
            if owner.get(port, name) != name:
                raise ValueError(f"port {port} is in two classes: {owner[port]!r} and {name!r}")
            owner[port] = name
            table[port] = len(names) - 1
    return tuple(names), bytes(table)


class _TrackerAPI:
    """Everything Tracker adds to a core's SourceTable; shared by both cores."""

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
    ) -> None:
        self._ipv4_prefix = int_arg("ipv4_prefix", ipv4_prefix, 0, 32)
        self._ipv6_prefix = int_arg("ipv6_prefix", ipv6_prefix, 0, 128)
        capacity = int_arg("capacity", capacity, 1, 2**32)
        self._window = number_arg("window", window)
        threshold = int_arg("concurrent_threshold", concurrent_threshold, 1, 2**32 - 1)
        rate = math.inf if rate_threshold is None else number_arg("rate_threshold", rate_threshold)
        self.thresholds = {"conn_flood": float(threshold), "conn_rate": rate}
        if overflow not in _OVERFLOW:
            raise ValueError(f"overflow must be 'permissive' or 'deny', got {overflow!r}")
        self._class_names, table = _port_table(
            DEFAULT_PORT_CLASSES if port_classes is None else port_classes)
        self._unattributed = 0
        self._unattributed_lock = threading.Lock()   # guards _unattributed; error path only
        super().__init__(  # type: ignore[call-arg]
            capacity=capacity, shards=shards_arg(shards, capacity), window=self._window,
            concurrent_threshold=threshold, rate_threshold=rate,
            ipv4_prefix=self._ipv4_prefix, ipv6_prefix=self._ipv6_prefix,
            deny=overflow == "deny", port_classes=table, clock=callable_arg("clock", clock),
            seed=seed_arg(seed))

    def __call__(self, event: Event) -> None:
        """Take an event as the process-wide listener (see connguard.set_listener).

        An event whose source is empty or not an address, or whose state is
        neither ACCEPT nor CLOSE, is counted in ``unattributed`` and dropped:
        nothing is raised into the emitter.
        """
        try:
            if event.state == ACCEPT:
                self.accept(event.source, event.destination)  # type: ignore[attr-defined]
                return
            if event.state == CLOSE:
                self.close(event.source)  # type: ignore[attr-defined]
                return
        except (ValueError, TypeError):
            pass
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

    def stats(self, source: str, now: float | None = None) -> SourceStats | None:
        """Return a snapshot of one source's netblock, or None when it is not tracked."""
        _, hi, lo = self.source_key(source)  # type: ignore[attr-defined]
        raw = self.stats_raw(hi, lo, now)  # type: ignore[attr-defined]
        return None if raw is None else self._to_stats(raw)

    def top(self, n: int = 10, by: str = "active", now: float | None = None) -> list[SourceStats]:
        """Return the n sources ranked highest by "active", "total" or "rate".

        ``by="flagged"``: only sources with a pattern raised, highest rate first.
        """
        n = int_arg("n", n, 0, 2**62)
        code = _core.core.TOP_BY.get(by)
        if code is None:
            raise ValueError(f"by must be 'active', 'total', 'rate' or 'flagged', got {by!r}")
        return [self._to_stats(raw) for raw in self.top_raw(n, code, now)]  # type: ignore[attr-defined]

    def _to_stats(self, raw: tuple[Any, ...]) -> SourceStats:
        (hi, lo, active, total, first_seen, last_seen, patterns, now,
         cls_cur, cls_prev, hosts_cur, hosts_prev, ports_cur, ports_prev) = raw
        window = self._window
        weight = 1.0 - (now / window - math.floor(now / window))
        names = frozenset(name for name, bit in _core.core.PATTERN_BITS.items() if patterns & bit)
        return SourceStats(
            key=key_text(hi, lo, self._ipv4_prefix, self._ipv6_prefix),
            active=active,
            total=total,
            rate=(sum(cls_cur) + sum(cls_prev) * weight) / window,
            by_class={name: int(cls_cur[i] + cls_prev[i] * weight + 0.5)
                      for i, name in enumerate(self._class_names)},
            distinct_destinations=_windowed_distinct(hosts_cur, hosts_prev, weight),
            distinct_ports=_windowed_distinct(ports_cur, ports_prev, weight),
            first_seen=first_seen,
            last_seen=last_seen,
            flagged=bool(names),
            patterns=names,
        )

    @property
    def active_connections(self) -> int:
        """Connections accepted and not yet closed, over tracked sources."""
        return int(self.counters()[0])  # type: ignore[attr-defined]

    @property
    def active_sources(self) -> int:
        """Tracked sources with at least one active connection."""
        return int(self.counters()[1])  # type: ignore[attr-defined]

    @property
    def tracked_sources(self) -> int:
        """Sources in the table (never more than capacity)."""
        return int(self.counters()[2])  # type: ignore[attr-defined]

    @property
    def flagged_sources(self) -> int:
        """Tracked sources with at least one pattern raised."""
        return int(self.counters()[3])  # type: ignore[attr-defined]

    @property
    def evictions(self) -> int:
        """Idle sources dropped to make room for new ones."""
        return int(self.counters()[4])  # type: ignore[attr-defined]

    @property
    def overflows(self) -> int:
        """Accepts from new sources that found the table full of busy sources."""
        return int(self.counters()[5])  # type: ignore[attr-defined]


class Tracker(_TrackerAPI, _core.core.SourceTable):  # type: ignore[misc,name-defined]
    """Count connections per source netblock and flag abuse patterns.

    ``accept(source, destination="", now=None) -> bool`` and
    ``close(source, now=None) -> bool`` are the hot path, straight into the
    core: one address parse, one shard lock, no Python object created for a
    source already tracked. ``concurrent_threshold`` defaults to 256: ngit
    flags at 10, right for a WebSocket relay, but ordinary busy clients
    behind a proxy hold 100+ concurrent flows.
    """
