"""Guard: a Tracker, a BanManager and a RateLimiter behind one accept call."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from . import _core, _core_py
from ._spec import (
    MAX_ACTIVE,
    PATTERN_BITS,
    PATTERNS,
    VERDICT_CODES,
    Reason,
    Source,
    Take,
    verdict_parts,
)
from ._validate import callable_arg, int_arg
from .bans import BanManager, Infraction, _BanAPI
from .events import ACCEPT, CLOSE, Event, byte_count
from .patterns import Finding
from .ratelimit import RateLimiter, _LimiterAPI
from .tracker import Connection, RefusedCloses, Tracker, _TrackerAPI

if TYPE_CHECKING:
    from ._core_py import GuardTable as _GuardTable

    _GuardBase = _GuardTable
else:
    _GuardTable = _core.core.GuardTable
    _GuardBase = object

__all__ = ["CONNECTION_BURST", "CONNECTION_RATE", "FINDING_KINDS", "Guard", "Verdict"]

#: A finding_kinds mapping that reports each windowed pattern as the
#: BanManager kind of the same name (see connguard.DEFAULT_KINDS).
FINDING_KINDS: Mapping[str, str] = MappingProxyType({
    name: name for name in ("spam_relay", "port_scan", "credential_stuffing", "dns_tunnel")})

log = logging.getLogger("connguard.guard")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What Guard.accept decided; truthy when the connection may proceed."""

    allowed: bool
    reason: str | None          # None, "banned", "overflow", "limit" or "flood"

    def __bool__(self) -> bool:
        return self.allowed


def _verdict(code: int) -> Verdict:
    reason, refused = verdict_parts(code)
    return Verdict(not refused, None if reason is Reason.NONE else reason.name.lower())


# Indexed by the core's verdict code. Shared and immutable, so an accept
# allocates nothing for its verdict.
_VERDICTS = tuple(_verdict(code) for code in range(VERDICT_CODES))
_LIMIT_KINDS = {Take.VIOLATION: "rate_limit_violation", Take.ABUSE: "rate_limit_abuse"}
_POSITIONAL = ("tracker", "bans", "limiter", "enforce", "clock", "pseudonymizer")

#: The default Guard limiter's tokens per second and burst, per source
#: netblock. Sized for connections, not messages: a browser opens six or so
#: connections per host and a page may reach a dozen hosts, so a burst of 100
#: lets a page load (or a few users behind one NAT address) through untouched,
#: while 20 new connections a second, sustained, is far above what a person
#: makes and far below a flood or a scan.
CONNECTION_RATE = 20.0
CONNECTION_BURST = 100.0


class _GuardAPI(_GuardBase):
    """Everything Guard adds to a core's GuardTable; shared by both cores."""

    def __init__(
        self,
        *args: object,
        tracker: Tracker | None = None,
        bans: BanManager | None = None,
        limiter: RateLimiter | None | bool = None,
        enforce: bool = False,
        clock: Callable[[], float] | None = None,
        pseudonymizer: Callable[[str], str] | None = None,
        on_finding: Callable[[Finding], object] | None = None,
        finding_kinds: Mapping[str, str] | None = None,
        max_open: int | None = None,
    ) -> None:
        if args:
            # 0.1 took these positionally; keyword-only like Tracker and BanManager now.
            if len(args) > len(_POSITIONAL):
                raise TypeError(f"Guard takes at most {len(_POSITIONAL)} arguments")
            keywords = (tracker, bans, limiter, enforce, clock, pseudonymizer)
            for name, value in zip(_POSITIONAL, keywords[:len(args)], strict=False):
                if value is not None and value is not False:
                    raise TypeError(f"Guard got multiple values for argument {name!r}")
            warnings.warn("Guard's arguments are keyword-only; passing them by position is "
                          "deprecated", DeprecationWarning, stacklevel=2)
            values = [*args, *keywords[len(args):]]
            tracker, bans, limiter, enforce, clock, pseudonymizer = values  # type: ignore[assignment]
        callable_arg("clock", clock)
        callable_arg("pseudonymizer", pseudonymizer)
        callable_arg("on_finding", on_finding)
        for name, part, api, public in (("tracker", tracker, _TrackerAPI, "Tracker"),
                                        ("bans", bans, _BanAPI, "BanManager"),
                                        ("limiter", limiter, _LimiterAPI, "RateLimiter")):
            allowed = (bool, api) if name == "limiter" else api      # limiter=False: none
            if part is not None and not isinstance(part, allowed):
                raise TypeError(f"{name} must be a connguard {public}, not {type(part).__name__}")
        if limiter is True:
            warnings.warn("limiter=True is deprecated: leave it out (None) for the default "
                          "RateLimiter; limiter=False means none", DeprecationWarning, stacklevel=2)
            limiter = None
        # Parts made here run on the Guard's own core.
        core = _core_py if isinstance(self, _core_py.GuardTable) else _core.core
        tracker = _core.on_core(Tracker, core)(clock=clock) if tracker is None else tracker
        if bans is None:
            bans = _core.on_core(BanManager, core)(
                clock=clock, ipv4_prefix=tracker.ipv4_prefix, ipv6_prefix=tracker.ipv6_prefix,
                pseudonymizer=pseudonymizer)
        elif pseudonymizer is not None and bans.pseudonymizer is not pseudonymizer:
            raise ValueError("give the pseudonymizer to the BanManager too (BanManager("
                             "pseudonymizer=...)): its ban log lines would show netblocks")
        max_open = 0 if max_open is None else int_arg("max_open", max_open, 1, MAX_ACTIVE - 1)
        if limiter is None:
            limiter = _core.on_core(RateLimiter, core)(
                CONNECTION_RATE, CONNECTION_BURST, clock=clock,
                ipv4_prefix=tracker.ipv4_prefix, ipv6_prefix=tracker.ipv6_prefix)
        prefixes = (tracker.ipv4_prefix, tracker.ipv6_prefix)
        for name, part in (("bans", bans), ("limiter", limiter or None)):
            if part is not None and (part.ipv4_prefix, part.ipv6_prefix) != prefixes:
                raise ValueError(f"tracker and {name} must key sources by the same "
                                 "ipv4_prefix and ipv6_prefix")
        self._tracker, self._bans = tracker, bans
        # The ban table's own method, bound once: the lookup is the core's,
        # with no Python frame in front of it (unless a subclass overrides it).
        if type(self).is_banned is _GuardAPI.is_banned:
            self.is_banned = bans.is_banned  # type: ignore[method-assign]
        self._limiter = limiter or None
        self._enforce = bool(enforce)
        self._pseudonymizer = pseudonymizer
        self._refused = RefusedCloses()       # accepts refused as a listener
        self._finding_kinds = _finding_kinds(finding_kinds, bans)
        self._on_finding = on_finding
        if on_finding is not None or (self._enforce and self._finding_kinds):
            tracker.add_finding_callback(self._found)
        self._max_open = max_open or None
        self._one_source_warned = False
        super().__init__(
            tracker=tracker, bans=bans, limiter=self._limiter, enforce=self._enforce,
            verdicts=_VERDICTS, on_limit=self._limit_reached, on_flag=self._flagged,
            max_open=max_open)

    if TYPE_CHECKING:
        # The core's accept returns one of the _VERDICTS it was given; typed
        # here only, so the call still goes straight into the core.
        def accept(self, source: Source, destination: str | None = "",
                   now: float | None = None) -> Verdict: ...

        def accept_many(self, sources: Iterable[Source], destination: str | None = "",
                        now: float | None = None) -> list[Verdict]: ...

    def _limit_reached(self, source: Source, level: int, now: float | None) -> None:
        # Called by the core, outside every lock, once per violation window
        # when a source first reaches each level. Reporting each level once
        # keeps every level reachable with the default penalties (2 + 5 < 10)
        # instead of banning at the 5th violation. The accept has been
        # decided: nothing raised here may reach its caller.
        try:
            self._warn_one_source()
            self._bans.report(source, _LIMIT_KINDS[Take(level)], now)
        except Exception as exc:
            self._callback_failed("reporting a rate limit", exc)

    def _warn_one_source(self) -> None:
        # A source has reached a limit, and it is the only one ever seen:
        # most likely a proxy or load balancer in front, whose address every
        # client shares, so they all share one bucket too. Said once, with no
        # address (the source is not flagged).
        if not self._one_source_warned and self._tracker.counters()[2] == 1:
            self._one_source_warned = True
            log.warning("connguard: every connection so far comes from one address and it "
                        "reached the rate limit: if a proxy or load balancer is in front, "
                        "pass the client's address (connguard.integrations.asgi."
                        "GuardMiddleware(trusted_proxies=...)), or every client shares one "
                        "limit")

    def _found(self, finding: Finding) -> None:
        # Called through the tracker, outside every lock, when a pattern is
        # raised: with enforce=True a mapped pattern becomes an infraction.
        kind = self._finding_kinds.get(finding.pattern) if self._enforce else None
        if kind is not None:
            # Dated in the tracker's time when the BanManager keeps the same
            # clock (also when both run on event time from now=), else by the
            # BanManager's own clock.
            same_clock = self._bans.clock is self._tracker.clock
            try:
                self._bans.report(finding.source, kind, finding.last_seen if same_clock else None)
            except Exception as exc:
                self._callback_failed(f"reporting {finding.pattern}", exc)
        if self._on_finding is None:
            return
        try:
            self._on_finding(finding)
        except Exception as exc:                 # the tracker counts and logs what leaves here
            if self._pseudonymizer is None:
                raise
            # Not the callback's own message or traceback: they may carry the
            # address (a KeyError of finding.source does).
            raise RuntimeError(f"on_finding raised {type(exc).__name__} (not shown: "
                               "a pseudonymizer is set)") from None

    def _flagged(self, source: Source, bits: int) -> None:
        # Called by the core, outside every lock, after the connection was
        # counted: nothing raised here may reach accept's caller.
        try:
            self._log_flagged(source, bits)
        except Exception as exc:
            self._callback_failed("logging a flagged source", exc)

    def _callback_failed(self, what: str, exc: Exception) -> None:
        # With a pseudonymizer, only the exception's type: its message may carry an address.
        if self._pseudonymizer is None:
            log.error("connguard: %s failed", what, exc_info=exc)
        else:
            log.error("connguard: %s failed: %s", what, type(exc).__name__)

    def _log_flagged(self, source: Source, bits: int) -> None:
        # The first time a source is flagged with each pattern: the only log
        # line an unbanned source gets, with the evidence that raised it.
        found = {f.pattern: f for f in self._tracker.source_findings(source)}
        for name, bit in PATTERN_BITS.items():
            finding = found.get(name)
            if bits & bit and finding is not None:
                shown = self._pseudonymizer(finding.source) if self._pseudonymizer \
                    else finding.source
                evidence = ", ".join(f"{key} {value}" for key, value in finding.evidence.items())
                log.warning("connguard: %s flagged %s (%s)", shown, name, evidence)

    def __call__(self, event: Event) -> None:
        """Take an event as the process-wide listener (see connguard.set_listener).

        An accept the Guard refuses (``enforce=True``) is not counted, and the
        close event that follows it is absorbed rather than closing another
        connection of the same netblock. An event whose source is not an
        address is counted in the tracker's ``unattributed`` and dropped.
        """
        try:
            if event.direction == ACCEPT:
                if not self.accept(event.source, event.destination):
                    self._refused.add(self._tracker.source_key(event.source))
                return
            if event.direction == CLOSE:
                if not self._refused.take(self._tracker, event.source):
                    self.close(event.source, sent=byte_count(event.sent),
                               received=byte_count(event.received),
                               destination=event.destination or None)
                return
        except (ValueError, TypeError):
            pass
        self._tracker._drop_unattributed()

    if TYPE_CHECKING:
        def open(self, source: Source, destination: str | None = "",
                 now: float | None = None) -> Connection:
            """Check and count an accepted connection as accept does; return its handle.

            The handle is truthy when the connection may proceed, names the
            ``reason`` as a Verdict does, and closes the connection once
            (``conn.close(sent, received)``, or as a context manager) without
            parsing the source again. A refused one needs no close.
            """

    def report(self, source: Source, kind: str, now: float | None = None) -> Infraction:
        """Record an infraction (see BanManager.report)."""
        return self._bans.report(source, kind, now)

    def is_banned(self, source: Source, now: float | None = None) -> bool:
        """Return True while the source's netblock is banned (a Guard binds the
        BanManager's own method in place of this one, unless a subclass
        overrides it)."""
        return self._bans.is_banned(source, now)

    def findings(self, now: float | None = None) -> list[Finding]:
        """Return the live findings, one per pattern raised on a source (see Tracker.findings)."""
        return self._tracker.findings(now)

    @property
    def finding_kinds(self) -> Mapping[str, str]:
        """Pattern -> infraction kind reported when the pattern is raised (enforce=True only)."""
        return self._finding_kinds

    def verdict_totals(self) -> Mapping[Verdict, int]:
        """How many accepts got each verdict since the Guard was made."""
        return dict(zip(_VERDICTS, self.verdict_counts(), strict=True))

    @property
    def tracker(self) -> Tracker:
        return self._tracker

    @property
    def bans(self) -> BanManager:
        return self._bans

    @property
    def limiter(self) -> RateLimiter | None:
        return self._limiter

    @property
    def max_open(self) -> int | None:
        """Open connections one source may hold (None: no cap); see the class docstring."""
        return self._max_open

    @property
    def enforce(self) -> bool:
        """False: monitor only (bans, limits and flags are reported, nothing refused)."""
        return self._enforce


def _finding_kinds(kinds: Mapping[str, str] | None, bans: BanManager) -> Mapping[str, str]:
    if kinds is None:
        return MappingProxyType({})
    if not isinstance(kinds, Mapping):
        raise TypeError("finding_kinds must be a mapping of pattern name to infraction kind")
    known = bans.kinds
    for pattern, kind in kinds.items():
        if pattern not in PATTERNS:
            raise ValueError(f"finding_kinds: {pattern!r} is not a pattern; "
                             f"patterns are {', '.join(PATTERNS)}")
        if kind not in known:
            raise ValueError(f"finding_kinds: {pattern!r} maps to {kind!r}, which the "
                             "BanManager has no penalty for (BanManager(penalties=...))")
    return MappingProxyType(dict(kinds))


class Guard(_GuardAPI, _GuardTable):
    """What most users embed: one call per accepted connection, one per close.

    ``open(source, destination="", now=None) -> Connection`` parses the
    address once and, in the core, checks the ban table, spends a limiter
    token for the source's netblock and counts the connection in the
    tracker; the handle it returns closes that connection
    (``conn.close(sent, received)``). ``accept`` decides the same and
    returns a Verdict; its ``close(source)`` is keyed by netblock and
    parses again. A source is address text ("203.0.113.7", "2001:db8::1")
    or a peername tuple, ``(host, port)`` or ``(host, port, flowinfo,
    scope_id)``: pass the host or the peername, never "host:port" built by
    hand (IPv6 has colons of its own).

    With ``enforce=False`` (the default, monitor only) every verdict is
    allowed and names what it would have refused for (counted as
    ``would_reject`` in metrics); with ``enforce=True`` a banned,
    rate-limited or flooding source is refused, and a refused connection is
    not counted and needs no close. ``max_open`` caps the connections one
    source netblock may hold open at once (reason "flood"; None: no cap).
    An ``overflow`` refusal comes from a tracker built with
    ``overflow="deny"``, and applies whatever ``enforce`` says: that tracker
    was asked to refuse what it cannot count.

    Arguments are keyword-only. The parts are created with defaults when
    not given (``limiter=False``: none); the default limiter is sized for
    connections, CONNECTION_RATE (20/s) with a burst of CONNECTION_BURST
    (100) per source netblock, where RateLimiter's own defaults (4/s, burst
    8) suit messages. A source that first reaches the limiter's violation
    or abuse level is reported to the BanManager once per violation window;
    when it is the only source ever seen, a warning says that a proxy in
    front probably hides the clients' addresses. A Guard is also a listener
    (``connguard.set_listener(guard)``).

    Patterns are reported, not acted on, by default: each is logged the first
    time a source shows it, counted in metrics and listed by ``findings()``;
    ``on_finding(finding)`` is called for each one raised. With
    ``enforce=True`` and ``finding_kinds`` (pattern -> BanManager kind, e.g.
    ``connguard.guard.FINDING_KINDS``) a raised pattern is reported as that
    infraction, with the penalty the BanManager gives the kind.
    """
