"""RateLimiter: token buckets per key, with escalation of repeated denials."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _core
from ._netblock import NetblockKeyed
from ._spec import MAX_CAPACITY, Take
from ._validate import callable_arg, int_arg, number_arg, seed_arg, shards_arg

if TYPE_CHECKING:
    from ._core_py import BucketTable as _BucketTable

    _LimiterBase = _BucketTable
else:
    _BucketTable = _core.core.BucketTable
    _LimiterBase = object

__all__ = ["RateDecision", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one request; truthy when it was allowed."""

    allowed: bool
    infraction: str | None      # None, "rate_limit_violation" or "rate_limit_abuse"

    def __bool__(self) -> bool:
        return self.allowed


# Indexed by the core's take() result; shared and immutable, so check()
# allocates nothing.
_DECISIONS = {
    Take.ALLOWED: RateDecision(True, None),
    Take.WARNING: RateDecision(False, None),
    Take.VIOLATION: RateDecision(False, "rate_limit_violation"),
    Take.ABUSE: RateDecision(False, "rate_limit_abuse"),
}
_BY_CODE = tuple(_DECISIONS[code] for code in Take)


class _LimiterAPI(NetblockKeyed, _LimiterBase):
    """Everything RateLimiter adds to a core's BucketTable; shared by both cores."""

    def __init__(
        self,
        rate: float = 4.0,
        burst: float = 8.0,
        *,
        clock: Callable[[], float] | None = None,
        capacity: int = 100_000,
        warn_after: int = 3,
        abuse_after: int = 10,
        violation_window: float = 300.0,
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 64,
        shards: int = 16,
        seed: int | None = None,
    ) -> None:
        self._rate = number_arg("rate", rate)
        self._burst = number_arg("burst", burst, low=1.0, allow_low=True)
        capacity = int_arg("capacity", capacity, 1, MAX_CAPACITY)
        warn_after = int_arg("warn_after", warn_after, 0, 2**31)
        abuse_after = int_arg("abuse_after", abuse_after, warn_after + 1, 2**32 - 1)
        window = number_arg("violation_window", violation_window)
        self._set_prefixes(ipv4_prefix, ipv6_prefix)
        super().__init__(
            capacity=capacity, shards=shards_arg(shards, capacity), rate=self._rate,
            burst=self._burst, warn_after=warn_after, abuse_after=abuse_after,
            violation_window=window, ipv4_prefix=self._ipv4_prefix,
            ipv6_prefix=self._ipv6_prefix, clock=callable_arg("clock", clock),
            seed=seed_arg(seed))

    def check(self, key: str, now: float | None = None) -> RateDecision:
        """Spend a token for ``key`` and say what a denial escalated to."""
        return _BY_CODE[self.take(key, now)]

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """Bucket size: requests a fresh key may make at once."""
        return self._burst


class RateLimiter(_LimiterAPI, _BucketTable):
    """A token bucket per key, with escalation of repeated denials.

    ``rate`` tokens per second up to ``burst``; a new key starts full. The
    defaults (4/s, burst 8) suit messages from one peer, not connections.
    A key that is a source address (as a Tracker takes it) is limited per
    netblock (``ipv4_prefix``, ``ipv6_prefix``), sharing its bucket with the
    Guard that uses this limiter; any other str (a peer id, say) is a key of
    its own. ``allow(key, now=None) -> bool`` spends a token.
    ``check(key, now=None)`` also counts denials per key: up to
    ``warn_after`` (3) they are warnings, then each gives
    "rate_limit_violation", and from the ``abuse_after``-th (10th) on
    "rate_limit_abuse"; the count restarts once the last denial is older
    than ``violation_window`` (5 minutes). At most ``capacity`` keys are
    held; the idlest give way to new ones.
    """
