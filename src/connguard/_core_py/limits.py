"""Token buckets with escalating violations (pairs with _pxi/limits.pxi)."""

from __future__ import annotations

from collections.abc import Callable

from .._spec import GOLDEN, LIMIT_SALT, MAX_SOURCE_LENGTH, PORT_SALT, Take
from .destinations import _text_hash
from .parse import parse_source_text, source_text
from .table import Header, ShardedTable, Table


class Bucket(Header):
    """One key's token bucket; ``stamp`` is when its tokens were last refilled."""

    __slots__ = ("tokens", "last_violation", "violations")

    def __init__(self, hi: int, lo: int, now: float) -> None:
        super().__init__(hi, lo, now)
        self.tokens = 0.0
        self.last_violation = 0.0
        self.violations = 0               # denied requests in the current violation window


class LimitConfig:
    __slots__ = ("rate", "burst", "violation_window", "warn_after", "abuse_after")

    def __init__(self, rate: float, burst: float, violation_window: float,
                 warn_after: int, abuse_after: int) -> None:
        self.rate = rate
        self.burst = burst
        self.violation_window = violation_window
        self.warn_after = warn_after
        self.abuse_after = abuse_after


def bucket_take(self: Table, hi: int, lo: int, now: float, cfg: LimitConfig) -> tuple[int, int]:
    """Spend one token; return Take.ALLOWED or the denial's escalation level, and the
    key's count of denials in the current window."""
    b = self.find(hi, lo)
    if b is None:
        b = self.insert(hi, lo, now)
        if b is None:
            return Take.ALLOWED, 0
        b.tokens = cfg.burst
    elif now > b.stamp:
        tokens = b.tokens + (now - b.stamp) * cfg.rate
        b.tokens = cfg.burst if tokens > cfg.burst else tokens
        b.stamp = now
    elif b.stamp - now > cfg.burst / cfg.rate:
        # The clock went back further than a full refill takes: it was reset
        # (or an earlier time was far in the future). Refill from now on.
        b.stamp = now
        if b.last_violation > now:
            b.last_violation = now
    if b.tokens >= 1.0:
        b.tokens -= 1.0
        return Take.ALLOWED, 0
    if b.violations and now - b.last_violation > cfg.violation_window:
        b.violations = 0
    if b.violations < 0xFFFFFFFF:
        b.violations += 1
    b.last_violation = now
    if b.violations <= cfg.warn_after:
        return Take.WARNING, b.violations
    if b.violations < cfg.abuse_after:
        return Take.VIOLATION, b.violations
    return Take.ABUSE, b.violations


class BucketTable(ShardedTable):
    """Token buckets per key with escalating violations: connguard.RateLimiter's core."""

    def __init__(self, *, capacity: int, shards: int, rate: float, burst: float,
                 warn_after: int, abuse_after: int, violation_window: float,
                 ipv4_prefix: int, ipv6_prefix: int, clock: Callable[[], float] | None,
                 seed: int) -> None:
        self._setup(capacity, shards, Bucket, ipv4_prefix, ipv6_prefix, clock, seed)
        self._cfg = LimitConfig(float(rate), float(burst), float(violation_window),
                                int(warn_after), int(abuse_after))

    def _bucket_key(self, key: str) -> tuple[int, int]:
        """An address keys its netblock's bucket (the one the Guard spends);
        other text keys its own, by two independent 64-bit hashes."""
        key = source_text(key, "key")
        if 0 < len(key) <= MAX_SOURCE_LENGTH and key.isascii():
            parsed = parse_source_text(key)
            if parsed is not None:
                _, hi, lo = self._mask(*parsed)
                return hi ^ LIMIT_SALT, lo
        return (_text_hash(key, self._seed ^ GOLDEN, False),
                _text_hash(key, self._seed ^ PORT_SALT, False))

    def _take(self, key: str, now: float | None) -> int:
        hi, lo = self._bucket_key(key)
        return limit_take(self, hi, lo, self._now(now))[0]

    def allow(self, key: str, now: float | None = None) -> bool:
        """Spend a token for ``key``; True when one was there."""
        return self._take(key, now) == Take.ALLOWED

    def take(self, key: str, now: float | None = None) -> int:
        """Spend a token for ``key``; 0 allowed, else 1 warning, 2 violation, 3 abuse."""
        return self._take(key, now)

    def state(self, key: str, now: float | None = None) -> tuple[float, int] | None:
        """Return ``(tokens, violations)`` for a key as of its last request, or None."""
        hi, lo = self._bucket_key(key)
        i = self._shard_of(hi, lo)
        with self._lock_of(i):
            b = self._tables[i].find(hi, lo)
            return None if b is None else (b.tokens, b.violations)


def limit_take(limiter: BucketTable, hi: int, lo: int, t: float) -> tuple[int, int]:
    i = limiter._shard_of(hi, lo)
    with limiter._lock_of(i):
        return bucket_take(limiter._tables[i], hi, lo, t, limiter._cfg)
