"""Guard: a Tracker, a BanManager and a RateLimiter behind one accept call."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from . import _core
from ._validate import callable_arg
from .bans import BanManager, Infraction
from .ratelimit import RateLimiter
from .tracker import SourceStats, Tracker

__all__ = ["Guard", "Verdict"]

log = logging.getLogger("connguard.guard")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What Guard.accept decided; truthy when the connection may proceed."""

    allowed: bool
    reason: str | None          # None, "banned", "overflow" or "limit"

    def __bool__(self) -> bool:
        return self.allowed


_REASONS = (None, "banned", "overflow", "limit")
# Indexed by the core's code: reason, plus 4 when refused. Shared and
# immutable, so an accept allocates nothing for its verdict.
_VERDICTS = tuple(Verdict(code < 4, _REASONS[code % 4]) for code in range(8))
_LIMIT_KINDS = {2: "rate_limit_violation", 3: "rate_limit_abuse"}


class _GuardAPI:
    """Everything Guard adds to a core's GuardTable; shared by both cores."""

    def __init__(
        self,
        tracker: Tracker | None = None,
        bans: BanManager | None = None,
        limiter: RateLimiter | None | bool = None,
        enforce: bool = False,
        clock: Callable[[], float] | None = None,
        pseudonymizer: Callable[[str], str] | None = None,
    ) -> None:
        callable_arg("clock", clock)
        callable_arg("pseudonymizer", pseudonymizer)
        for name, part, api in (("tracker", tracker, "_TrackerAPI"), ("bans", bans, "_BanAPI"),
                                ("limiter", limiter, "_LimiterAPI")):
            if part is not None and not isinstance(part, bool) and not _is(part, api):
                raise TypeError(f"{name} must be a connguard {api[1:-3]}, not {type(part).__name__}")
        tracker = Tracker(clock=clock) if tracker is None else tracker
        if bans is None:
            bans = BanManager(clock=clock, ipv4_prefix=tracker._ipv4_prefix,
                              ipv6_prefix=tracker._ipv6_prefix)
        if limiter is None or limiter is True:
            limiter = RateLimiter(clock=clock)
        if (bans._ipv4_prefix, bans._ipv6_prefix) != (tracker._ipv4_prefix, tracker._ipv6_prefix):
            raise ValueError("tracker and bans must key sources by the same ipv4_prefix and ipv6_prefix")
        self._tracker, self._bans = tracker, bans
        self._limiter = limiter or None
        self._enforce = bool(enforce)
        self._pseudonymizer = pseudonymizer
        if pseudonymizer is not None:
            bans.pseudonymizer = pseudonymizer
        super().__init__(  # type: ignore[call-arg]
            tracker=tracker, bans=bans, limiter=self._limiter, enforce=self._enforce,
            verdicts=_VERDICTS, on_limit=self._limit_reached, on_flag=self._flagged)

    def _limit_reached(self, source: str, level: int) -> None:
        # Called by the core, outside every lock, once per violation window
        # when a source first reaches each level: one "rate_limit_violation"
        # and one "rate_limit_abuse" keep every level reachable with tatanka's
        # penalties (2 + 5 < 10) instead of banning at the 5th violation.
        self._bans.report(source, _LIMIT_KINDS[level])

    def _flagged(self, source: str, bits: int) -> None:
        # Called by the core, outside every lock, the first time a source is
        # flagged with each pattern: the only log line an unbanned source gets.
        stats = self._tracker.stats(source)
        if stats is None:
            return
        shown = self._pseudonymizer(stats.key) if self._pseudonymizer else stats.key
        for name, bit in _core.core.PATTERN_BITS.items():
            if bits & bit:
                log.warning("connguard: %s flagged %s (active %d, %.1f accepts/s, %d distinct "
                            "ports; threshold %s)", shown, name, stats.active, stats.rate,
                            stats.distinct_ports, self._tracker.thresholds.get(name, "n/a"))

    def report(self, source: str, kind: str, now: float | None = None) -> Infraction:
        """Record an infraction (see BanManager.report)."""
        return self._bans.report(source, kind, now)

    def is_banned(self, source: str, now: float | None = None) -> bool:
        """Return True while the source's netblock is banned."""
        return bool(self._bans.is_banned(source, now))

    def findings(self, limit: int = 100, now: float | None = None) -> list[SourceStats]:
        """Return up to ``limit`` flagged sources, highest connection rate first."""
        return self._tracker.top(limit, by="flagged", now=now)

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
    def enforce(self) -> bool:
        """False: monitor only (bans, limits and flags are reported, nothing refused)."""
        return self._enforce


def _is(part: object, api: str) -> bool:
    """Whether ``part`` is a public class built on either core (see _core.on_core)."""
    return api in {cls.__name__ for cls in type(part).__mro__}


class Guard(_GuardAPI, _core.core.GuardTable):  # type: ignore[misc,name-defined]
    """What most users embed: one call per accepted connection, one per close.

    ``accept(source, destination="", now=None) -> Verdict`` parses the
    address once and, in the core, checks the ban table, spends a limiter
    token for the source's netblock and counts the connection in the
    tracker. With ``enforce=False`` (the default, monitor only, as ngit does)
    every verdict is allowed and names what it would have refused for;
    with ``enforce=True`` a banned or rate-limited source is refused, and a
    refused accept is not counted and needs no ``close``. An ``overflow``
    refusal comes from a tracker built with ``overflow="deny"``.

    The parts are created with defaults when not given (``limiter=False``:
    none). RateLimiter's defaults are tatanka's broadcast limits (4/s,
    burst 8); size a limiter for your connection rates. A source that first
    reaches the limiter's violation or abuse level is reported to the
    BanManager once per violation window.
    """

