"""Abuse patterns read from destination buckets (layer 2, beside tracker.py).

Pattern names and bits are part of the core contract (``connguard._spec``);
their thresholds, configuration objects and findings live here. Imports:
_spec, _validate.

Each windowed pattern has one frozen configuration object, validated when
built (errors name the field), with its own ``window``: a pattern is raised
when its evidence over the window reaches every threshold, and clears once
the evidence has stayed below for a full window. Counts are over the
window (the current bucket plus the share of the previous one still inside
it); distinct hosts and ports are estimated over the current and previous
buckets, so between one and two windows.

Bytes come from closes (``Tracker.close(..., sent=, received=)``). A close
with no destination counts its bytes for the source as a whole. Without
bytes a pattern that needs them relies on counts alone or stays silent, as
each class below says; it never guesses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .._spec import (
    GROUP_SHIFT,
    PATTERNS,
    SKETCH_BITS,
    Group,
    Pattern,
    PatternLimits,
    RawRecord,
    RawStats,
)
from .._validate import int_arg, number_arg

__all__ = [
    "CredentialStuffing",
    "DnsTunnel",
    "Finding",
    "PortScan",
    "SpamRelay",
]

_MAX_DISTINCT = 200          # a 64-bit sketch saturates near 266: thresholds stay below


def _count(owner: str, name: str, value: object, low: int = 1) -> int:
    return int_arg(f"{owner}.{name}", value, low, 2**32 - 1)


def _distinct(owner: str, name: str, value: object, low: int = 1) -> int:
    return int_arg(f"{owner}.{name}", value, low, _MAX_DISTINCT)


def _window(owner: str, value: object) -> float:
    return number_arg(f"{owner}.window", value, low=1e-3, allow_low=True)


def _share(name: str, value: object) -> float:
    share = number_arg(name, value, low=0.0, allow_low=True)
    if share > 1.0:
        raise ValueError(f"{name} must be at most 1, got {share!r}")
    return share


def _at_least(distinct: int) -> int:
    """Most zero bits a sketch may have for an estimate that rounds to >= distinct."""
    return math.floor(SKETCH_BITS * math.exp(-(distinct - 0.5) / SKETCH_BITS))


def _at_most(distinct: int) -> int:
    """Fewest zero bits a sketch may have for an estimate that rounds to <= distinct."""
    return math.ceil(SKETCH_BITS * math.exp(-(distinct + 0.5) / SKETCH_BITS))


@dataclass(frozen=True, slots=True)
class SpamRelay:
    """``spam_relay``: many mail connections (class smtp) to many mail servers.

    Raised when, over ``window`` seconds, a source made at least
    ``connections`` smtp connections to at least ``hosts`` distinct hosts. A
    submission client sending much mail to one smarthost is not a relay.
    Bytes tell a relay from a sweep of port 25: when at least ``min_closed``
    closes with an smtp destination carry a received count, fewer than
    ``max_empty_share`` of them may have received nothing (a relay talks to
    the servers it reaches; a scanner mostly reaches none). Without bytes,
    counts alone decide.
    """

    connections: int = 60
    hosts: int = 10
    min_closed: int = 10
    max_empty_share: float = 0.5
    window: float = 600.0

    def __post_init__(self) -> None:
        _count("SpamRelay", "connections", self.connections)
        _distinct("SpamRelay", "hosts", self.hosts)
        _count("SpamRelay", "min_closed", self.min_closed)
        object.__setattr__(self, "max_empty_share",
                           _share("SpamRelay.max_empty_share", self.max_empty_share))
        object.__setattr__(self, "window", _window("SpamRelay", self.window))


@dataclass(frozen=True, slots=True)
class PortScan:
    """``port_scan``: many ports on few hosts, or one port on many hosts, failing.

    Vertical: at least ``ports`` distinct destination ports over ``window``.
    When the source's closes carry byte counts (at least ``min_closed`` of
    them in the window), at least ``empty_share`` of those must have
    received nothing, on any number of hosts (a sweep of many ports over a
    subnet is a scan too); without bytes, counts alone decide and the ports
    must be on at most ``vertical_max_hosts`` hosts. Horizontal: at least ``hosts`` distinct hosts on at most
    ``horizontal_max_ports`` ports, and it needs bytes: at least
    ``min_closed`` closes with a received count, ``empty_share`` of them
    empty (without bytes a browser on HTTPS to hundreds of hosts looks the
    same, so this half stays silent). The long default window catches slow
    scans: a hundred ports an hour is a vertical scan.
    """

    ports: int = 30
    vertical_max_hosts: int = 4
    hosts: int = 40
    horizontal_max_ports: int = 2
    min_closed: int = 20
    empty_share: float = 0.6
    window: float = 3600.0

    def __post_init__(self) -> None:
        _distinct("PortScan", "ports", self.ports)
        _distinct("PortScan", "vertical_max_hosts", self.vertical_max_hosts)
        _distinct("PortScan", "hosts", self.hosts)
        _distinct("PortScan", "horizontal_max_ports", self.horizontal_max_ports)
        _count("PortScan", "min_closed", self.min_closed)
        object.__setattr__(self, "empty_share", _share("PortScan.empty_share", self.empty_share))
        object.__setattr__(self, "window", _window("PortScan", self.window))


@dataclass(frozen=True, slots=True)
class CredentialStuffing:
    """``credential_stuffing``: a high volume of HTTPS to a few hosts, or to login hosts.

    Volume: at least ``connections`` connections of class https (and login)
    over ``window`` to at most ``max_hosts`` distinct hosts; when at least
    ``min_closed`` closes carry a received count, they must average at most
    ``mean_received`` bytes (login answers are small; a video client pulling
    big downloads from two CDN hosts is not stuffing), else counts alone
    decide. Watch-list: ``login_hosts`` names hosts (case-insensitive, no
    port) counted as their own destination class, "login"; at least
    ``login_connections`` of them over the window raise the pattern too.
    """

    connections: int = 300
    max_hosts: int = 4
    mean_received: int = 16384
    min_closed: int = 20
    login_hosts: tuple[str, ...] = field(default=())
    login_connections: int = 60
    window: float = 600.0

    def __post_init__(self) -> None:
        _count("CredentialStuffing", "connections", self.connections)
        _distinct("CredentialStuffing", "max_hosts", self.max_hosts)
        _count("CredentialStuffing", "mean_received", self.mean_received, 0)
        _count("CredentialStuffing", "min_closed", self.min_closed)
        _count("CredentialStuffing", "login_connections", self.login_connections)
        hosts = self.login_hosts
        if isinstance(hosts, str) or not isinstance(hosts, Iterable):
            raise TypeError("CredentialStuffing.login_hosts must be an iterable of host names")
        clean = []
        for host in hosts:
            if not isinstance(host, str) or not host or ":" in host or "/" in host:
                raise ValueError("CredentialStuffing.login_hosts must hold host names "
                                 f"without port or path, got {host!r}")
            clean.append(host.lower())
        object.__setattr__(self, "login_hosts", tuple(dict.fromkeys(clean)))
        object.__setattr__(self, "window", _window("CredentialStuffing", self.window))


@dataclass(frozen=True, slots=True)
class DnsTunnel:
    """``dns_tunnel``: DNS or DNS-over-TLS that is byte-heavy, not merely frequent.

    Raised when, over ``window``, a source made at least ``connections``
    connections of class dns or dot that carried at least ``bytes`` bytes
    (sent plus received), at least ``mean_bytes`` per close. It needs bytes:
    a close with a dns or dot destination counts, and a close with none
    counts while DNS makes up at least 90% of the source's accepts in the
    window (its bytes are then DNS bytes). Without bytes it stays silent.
    All-day DoT to one resolver with small messages is not tunnelling.
    """

    connections: int = 10
    bytes: int = 2_000_000
    mean_bytes: int = 20_000
    window: float = 600.0

    def __post_init__(self) -> None:
        _count("DnsTunnel", "connections", self.connections)
        int_arg("DnsTunnel.bytes", self.bytes, 1, 2**62)
        _count("DnsTunnel", "mean_bytes", self.mean_bytes, 0)
        object.__setattr__(self, "window", _window("DnsTunnel", self.window))


#: The configuration objects by pattern name, for the windowed patterns.
CONFIG_TYPES: Mapping[str, type] = {
    "spam_relay": SpamRelay,
    "port_scan": PortScan,
    "credential_stuffing": CredentialStuffing,
    "dns_tunnel": DnsTunnel,
}

_NEEDS = {                   # destination classes each pattern reads
    "spam_relay": ("smtp",),
    "port_scan": (),
    "credential_stuffing": ("https",),
    "dns_tunnel": ("dns", "dot"),
}


def check_config(name: str, config: object) -> Any:
    """Return a pattern's configuration: its object, or None (off); else raise."""
    kind = CONFIG_TYPES[name]
    if config is not None and not isinstance(config, kind):
        raise TypeError(f"{name} must be a {kind.__name__} or None, "
                        f"not {type(config).__name__}")
    return config


def build_limits(configs: Mapping[str, Any], class_names: tuple[str, ...]) -> PatternLimits:
    """Turn the configuration objects into the thresholds the cores compare against.

    A pattern whose destination classes are not among ``class_names`` (custom
    port classes without "smtp", say) is off; ``configs`` holds None for it.
    """
    ids = {name: i for i, name in enumerate(class_names)}

    def mask(*names: str) -> int:
        return sum(1 << ids[n] for n in names if n in ids)

    spam: SpamRelay = configs["spam_relay"] or SpamRelay()
    scan: PortScan = configs["port_scan"] or PortScan()
    cred: CredentialStuffing = configs["credential_stuffing"] or CredentialStuffing()
    dns: DnsTunnel = configs["dns_tunnel"] or DnsTunnel()
    enabled = sum(1 << g for g in Group if configs[g.name.lower()] is not None)
    login = "login" in ids and bool(cred.login_hosts) and bool(enabled >> Group.CREDENTIAL_STUFFING & 1)
    trigger = 0
    if enabled >> Group.SPAM_RELAY & 1:
        trigger |= mask("smtp")
    if enabled >> Group.DNS_TUNNEL & 1:
        trigger |= mask("dns", "dot")
    if login:
        trigger |= mask("login")
    return PatternLimits(
        enabled=enabled,
        windows=(spam.window, scan.window, cred.window, dns.window),
        accept_masks=(mask("smtp"), 0xFF, mask("https", "login"), mask("dns", "dot")),
        aux_masks=(0, 0, mask("login"), 0xFF & ~mask("dns", "dot")),
        trigger_classes=trigger,
        volume_classes=mask("https") if enabled >> Group.CREDENTIAL_STUFFING & 1 else 0,
        spam_connections=float(spam.connections),
        spam_hosts_zeros=_at_least(spam.hosts),
        spam_min_closed=float(spam.min_closed),
        spam_empty_share=spam.max_empty_share,
        scan_ports_zeros=_at_least(scan.ports),
        scan_vertical_hosts_zeros=_at_most(scan.vertical_max_hosts),
        scan_hosts_zeros=_at_least(scan.hosts),
        scan_horizontal_ports_zeros=_at_most(scan.horizontal_max_ports),
        scan_min_closed=float(scan.min_closed),
        scan_empty_share=scan.empty_share,
        cred_connections=float(cred.connections),
        cred_hosts_zeros=_at_most(cred.max_hosts),
        cred_min_closed=float(cred.min_closed),
        cred_mean_received=float(cred.mean_received),
        cred_login_connections=float(cred.login_connections) if login else math.inf,
        dns_connections=float(dns.connections),
        dns_bytes=float(dns.bytes),
        dns_mean_bytes=float(dns.mean_bytes),
    )


def usable(configs: Mapping[str, Any], class_names: tuple[str, ...]) -> dict[str, Any]:
    """``configs`` with None for every pattern whose destination classes are missing."""
    return {name: (None if any(c not in class_names for c in _NEEDS[name]) else config)
            for name, config in configs.items()}


class Finding(NamedTuple):
    """A pattern live on a source: what was seen, and when.

    ``evidence`` holds the counts the pattern's thresholds look at, over its
    window (``evidence["window"]``, seconds), as they stand now;
    ``first_seen`` is when the pattern was raised, ``last_seen`` when its
    evidence was last at the threshold.
    """

    source: str
    pattern: str
    evidence: dict[str, Any]
    first_seen: float
    last_seen: float


def _estimate(sketch: int) -> int:
    zeros = SKETCH_BITS - sketch.bit_count()
    value = SKETCH_BITS * math.log(SKETCH_BITS) if zeros == 0 else \
        -SKETCH_BITS * math.log(zeros / SKETCH_BITS)
    return int(value + 0.5)


def evidence(pattern: str, raw: RawStats, record: RawRecord, limits: PatternLimits,
             thresholds: Mapping[str, float], window: float) -> dict[str, Any]:
    """The evidence dict of one live pattern on one source."""
    if pattern == "conn_flood":
        return {"active": raw.active, "concurrent_threshold": int(thresholds["conn_flood"])}
    if pattern == "conn_rate":
        rate = (sum(raw.cls_cur) + sum(raw.cls_prev) * raw.weight) / window
        return {"rate": round(rate, 3), "rate_threshold": thresholds["conn_rate"],
                "window": window}
    g = Group[pattern.upper()]
    w = record.windows[g]
    wt = record.weights[g]

    def weighted(i: int) -> float:
        return w[i] + w[i + 1] * wt

    n, aux, closed, empty, nbytes = (weighted(i) for i in range(0, 10, 2))
    # The sketches cover both halves of the window: never more distinct
    # destinations than connections counted there (an estimate can overshoot).
    seen = w[0] + w[1]
    hosts, ports = min(_estimate(w[10] | w[11]), seen), min(_estimate(w[12] | w[13]), seen)
    out: dict[str, Any]
    if g == Group.SPAM_RELAY:
        out = {"smtp_connections": round(n), "smtp_hosts": hosts,
               "closed_with_bytes": round(closed), "empty": round(empty)}
    elif g == Group.PORT_SCAN:
        out = {"kind": "vertical" if ports >= hosts else "horizontal", "ports": ports,
               "hosts": hosts, "connections": round(n), "closed_with_bytes": round(closed),
               "empty": round(empty)}
    elif g == Group.CREDENTIAL_STUFFING:
        out = {"https_connections": round(n), "hosts": hosts, "login_connections": round(aux),
               "closed_with_bytes": round(closed)}
        if closed:
            out["mean_received"] = round(nbytes / closed)
    else:
        out = {"dns_connections": round(n), "bytes": round(nbytes),
               "closed_with_bytes": round(closed)}
        if closed:
            out["mean_bytes"] = round(nbytes / closed)
    out["window"] = limits.windows[g]
    return out


def findings_of(source: str, raw: RawStats, record: RawRecord, limits: PatternLimits,
                thresholds: Mapping[str, float], window: float) -> list[Finding]:
    """One Finding per pattern live on ``raw`` (its record says when each was raised)."""
    return [Finding(source, name, evidence(name, raw, record, limits, thresholds, window),
                    record.since[bit], record.above[bit])
            for bit, name in enumerate(PATTERNS) if raw.patterns >> bit & 1]


assert GROUP_SHIFT == int(Pattern.SPAM_RELAY).bit_length() - 1
