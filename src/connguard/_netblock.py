"""Netblock text: how connguard writes a source key, and reads one back."""

from __future__ import annotations

import ipaddress

from ._spec import V4_TAG, Source
from ._validate import int_arg

__all__ = ["NetblockKeyed", "address_of", "netblock_text"]


def netblock_text(hi: int, lo: int, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """Format a netblock key: "203.0.113.7", "198.51.100.0/24", "2001:db8::/64".

    A key is 128 bits (``hi``, ``lo``); IPv4 keys live in ::ffff:0:0/96. A
    full-length prefix is written as the bare address.
    """
    if hi == 0 and lo >> 32 == V4_TAG >> 32:
        # Dotted decimal by hand: the same text as ipaddress, several times faster.
        v4 = f"{(lo >> 24) & 255}.{(lo >> 16) & 255}.{(lo >> 8) & 255}.{lo & 255}"
        return v4 if ipv4_prefix == 32 else f"{v4}/{ipv4_prefix}"
    v6 = ipaddress.IPv6Address((hi << 64) | lo)
    return str(v6) if ipv6_prefix == 128 else f"{v6}/{ipv6_prefix}"


def address_of(source: Source) -> str:
    """The address of a source: of netblock text ("2001:db8::/64" -> "2001:db8::")
    or of a peername tuple (its host).

    Anything else (or a str without a "/") is returned unchanged, for the
    cores to parse or reject with a clear error. A prefix length must be 1 to 3 ASCII digits.
    """
    if isinstance(source, tuple):
        if len(source) in (2, 4) and isinstance(source[0], str) and isinstance(source[1], int):
            return source[0]
        return source  # type: ignore[return-value]
    if not isinstance(source, str) or "/" not in source:
        return source
    address, _, length = source.partition("/")
    if not (length.isascii() and length.isdigit() and len(length) <= 3):
        raise ValueError(f"invalid source netblock: {source[:64]!r}")
    return address


class NetblockKeyed:
    """Read-only ``ipv4_prefix`` and ``ipv6_prefix`` of a class that keys sources by netblock."""

    _ipv4_prefix: int
    _ipv6_prefix: int

    def _set_prefixes(self, ipv4_prefix: object, ipv6_prefix: object) -> None:
        """Validate and keep the prefixes (0-32 and 0-128 bits)."""
        self._ipv4_prefix = int_arg("ipv4_prefix", ipv4_prefix, 0, 32)
        self._ipv6_prefix = int_arg("ipv6_prefix", ipv6_prefix, 0, 128)

    @property
    def ipv4_prefix(self) -> int:
        """IPv4 sources are keyed per netblock of this many bits."""
        return self._ipv4_prefix

    @property
    def ipv6_prefix(self) -> int:
        """IPv6 sources are keyed per netblock of this many bits."""
        return self._ipv6_prefix
