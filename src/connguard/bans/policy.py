"""What infractions weigh and how long bans last: kinds, score, min ban, escalation, jitter."""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from .. import _core
from .._netblock import address_of
from .._spec import Source
from .._validate import int_arg, number_arg
from .wire import MAX_KIND_LENGTH

__all__ = ["DEFAULT_KINDS", "BanPolicy"]

#: kind -> (penalty, lifetime in seconds). With ban_score 10: ten malformed
#: messages within an hour, or one impersonation, ban a source. The pattern
#: kinds are what a Guard reports for findings when told to (finding_kinds):
#: a spam relay, credential stuffing or a DNS tunnel bans at once for 6 hours;
#: a port scan weighs half a ban, so two in 6 hours ban.
DEFAULT_KINDS: Mapping[str, tuple[int, float]] = MappingProxyType({
    "malformed_message": (1, 3600.0),
    "invalid_bond": (1, 3600.0),
    "impersonation": (10, 86400.0),
    "rate_limit_violation": (2, 7200.0),
    "rate_limit_abuse": (5, 21600.0),
    "spam_relay": (10, 21600.0),
    "port_scan": (5, 21600.0),
    "credential_stuffing": (10, 21600.0),
    "dns_tunnel": (10, 21600.0),
})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BanPolicy:
    """A BanManager's rules; immutable once built, so it needs no lock (but see ``ban_length``).

    Important:
    1. ``penalty_of`` raises ValueError for a kind it does not know: nothing
       about an unknown kind is ever recorded.
    2. ``ban_length`` never raises and never returns more than the larger of
       the base length and the escalation cap (plus jitter), however many
       bans came before.
    """

    def __init__(self, *, ban_score: int, penalties: Mapping[str, tuple[int, float]] | None,
                 allow: Iterable[str], min_ban: float, escalation: tuple[float, float] | None,
                 jitter: float, seed: int) -> None:
        self.ban_score = int_arg("ban_score", ban_score, 1, 2**31)
        kinds = dict(DEFAULT_KINDS)
        for kind, policy in (penalties or {}).items():
            kinds[_kind_name(kind)] = _penalty(kind, policy)
        self.kinds: Mapping[str, tuple[int, float]] = MappingProxyType(kinds)
        if isinstance(allow, str):
            raise TypeError("allow must be an iterable of CIDR str, not one str")
        self.allow: tuple[Network, ...] = tuple(_network(net) for net in allow)
        self.min_ban = number_arg("min_ban", min_ban, allow_low=True)
        if escalation is not None:
            if not isinstance(escalation, tuple) or len(escalation) != 2:
                raise TypeError("escalation must be a (factor, cap seconds) tuple")
            factor, cap = escalation
            escalation = (number_arg("escalation factor", factor, low=1.0, allow_low=True),
                          number_arg("escalation cap", cap))
        self.escalation = escalation
        self.jitter = number_arg("jitter", jitter, allow_low=True)
        self._random = random.Random(seed)     # guarded by the manager's lock

    def penalty_of(self, kind: object) -> tuple[int, float]:
        """(penalty, lifetime seconds) of a kind; ValueError for one this policy does not know."""
        policy = self.kinds.get(kind) if isinstance(kind, str) else None
        if policy is None:
            raise ValueError(f"unknown infraction kind: {kind!r:.80}")
        return policy

    def allowed(self, source: Source) -> bool:
        """Whether an address (a netblock's base address, a peername's host) is in ``allow``."""
        if not self.allow:
            return False
        family, address = _core.core.parse_source(address_of(source))
        ip = ipaddress.IPv4Address(address) if family == 4 else ipaddress.IPv6Address(address)
        return any(ip in net for net in self.allow)

    def ban_length(self, base: float, prior_bans: int) -> float:
        """A new ban's length: min_ban, then escalation of repeat bans, then jitter.

        Escalation multiplies ``base`` by ``factor ** prior_bans`` up to ``cap``.
        Whether the power reaches the cap is decided in logarithms, and the
        power is only computed below it, so any number of prior bans is fine
        (a plain power overflows a float after about a thousand bans).
        Call with the manager's lock held: jitter draws from a shared generator.
        """
        length = max(base, self.min_ban)
        if self.escalation is not None and prior_bans and length > 0.0:
            factor, cap = self.escalation
            if factor > 1.0:
                if prior_bans * math.log(factor) >= math.log(cap) - math.log(length):  # at the cap
                    grown = cap
                else:                        # below the cap: the power cannot overflow
                    grown = length * factor ** prior_bans
                length = max(length, min(grown, cap))
        if self.jitter:
            length += self._random.uniform(0.0, self.jitter * length)
        return length


def _kind_name(kind: object) -> str:
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_KIND_LENGTH:
        raise ValueError(f"infraction kinds must be str of 1 to {MAX_KIND_LENGTH} characters, "
                         f"got {kind!r:.80}")
    return kind


def _penalty(kind: str, policy: object) -> tuple[int, float]:
    if not isinstance(policy, tuple) or len(policy) != 2:
        raise TypeError(f"penalties[{kind!r}] must be a (penalty, lifetime seconds) tuple")
    return (int_arg(f"penalty of {kind!r}", policy[0], 0, 2**31),
            number_arg(f"lifetime of {kind!r}", policy[1]))


def _network(text: object) -> Network:
    if not isinstance(text, str):
        raise TypeError(f"allow entries must be CIDR str, not {type(text).__name__}")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"invalid CIDR in allow: {text!r}") from None
