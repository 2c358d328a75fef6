"""Address parsing and key hashing (pairs with _pxi/parse.pxi)."""

from __future__ import annotations

import sys
import time

from .._spec import FMIX_C1, FMIX_C2, GOLDEN, MAX_SOURCE_LENGTH, V4_TAG

_M64 = (1 << 64) - 1
_HEX = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}
_ZONE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_DIGITS = frozenset("0123456789")
_CLOCK_MONOTONIC_COARSE = 6  # Linux's clock id; Python 3.11 has no name for it


def default_clock() -> float:
    """Read the default clock: as _core_c's cg_monotonic, coarse on Linux."""
    return time.clock_gettime(_CLOCK_MONOTONIC_COARSE)


if not sys.platform.startswith("linux"):
    default_clock = time.monotonic  # noqa: F811


def fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * FMIX_C1) & _M64
    h ^= h >> 33
    h = (h * FMIX_C2) & _M64
    h ^= h >> 33
    return h


def key_hash(hi: int, lo: int, seed: int) -> int:
    return fmix64(lo ^ ((hi * GOLDEN) & _M64) ^ seed)


# --- address parsing ----------------------------------------------------------

def parse_ipv4(p: str) -> int | None:
    """Dotted quad, strictly: four decimal octets, no leading zeros."""
    parts = p.split(".")
    if len(parts) != 4:
        return None
    acc = 0
    for part in parts:
        if not 1 <= len(part) <= 3 or not _DIGITS.issuperset(part):
            return None
        if part[0] == "0" and len(part) > 1:  # "01" reads as octal elsewhere
            return None
        octet = int(part)
        if octet > 255:
            return None
        acc = (acc << 8) | octet
    return acc


def parse_ipv6(p: str) -> tuple[int, int] | None:
    """RFC 4291 text: up to 8 hex groups, one '::', an optional trailing IPv4;
    then the end of the text or a "%zone" (RFC 4007)."""
    p, percent, zone = p.partition("%")
    if percent and not _valid_zone(zone):
        return None
    n = len(p)
    groups: list[int] = []
    gap = -1
    i = 0
    if n < 2:
        return None
    if p[0] == ":":
        if p[1] != ":":
            return None
        gap = 0
        i = 2
    while i < n:
        if len(groups) == 8:
            return None
        start = i
        value = 0
        digits = 0
        while i < n and digits < 5 and p[i] in _HEX:
            value = (value << 4) | _HEX[p[i]]
            digits += 1
            i += 1
        if i < n and p[i] == ".":
            v4 = parse_ipv4(p[start:]) if len(groups) <= 6 else None
            if v4 is None:
                return None
            groups += [v4 >> 16, v4 & 0xFFFF]
            break
        if digits == 0 or digits > 4:
            return None
        groups.append(value)
        if i == n:
            break
        if p[i] != ":":
            return None
        i += 1
        if i < n and p[i] == ":":
            if gap >= 0:
                return None
            gap = len(groups)
            i += 1
        elif i == n:
            return None
    if gap < 0:
        if len(groups) != 8:
            return None
    elif len(groups) > 7:
        return None
    else:
        groups[gap:gap] = [0] * (8 - len(groups))
    hi = (groups[0] << 48) | (groups[1] << 32) | (groups[2] << 16) | groups[3]
    lo = (groups[4] << 48) | (groups[5] << 32) | (groups[6] << 16) | groups[7]
    return hi, lo


def _valid_zone(z: str) -> bool:
    return bool(z) and _ZONE_CHARS.issuperset(z)


def _valid_port(p: str) -> bool:
    return 1 <= len(p) <= 5 and _DIGITS.issuperset(p) and int(p) <= 65535


def parse_source_text(p: str) -> tuple[int, int, int] | None:
    """Parse an ASCII source; return (family, hi, lo) or None when invalid."""
    n = len(p)
    if n == 0:
        return None
    if p[0] in _DIGITS:                          # "a.b.c.d" or "a.b.c.d:port"
        head, sep, port = p.partition(":")
        v4 = parse_ipv4(head)
        if v4 is not None and (not sep or _valid_port(port)):
            return 4, 0, V4_TAG | v4
        # Not IPv4, but IPv6 may start with a digit too: go on.
    addr_start, addr_end = 0, n
    if p[0] == "[":                              # "[v6]" or "[v6]:port"
        addr_end = p.find("]")
        if addr_end < 0:
            return None
        addr_start = 1
        if addr_end + 1 < n and not (p[addr_end + 1] == ":" and _valid_port(p[addr_end + 2:])):
            return None
    # parse_ipv6 takes a zone and rejects everything else, including text
    # with under two colons.
    key = parse_ipv6(p[addr_start:addr_end])
    if key is None:
        return None
    hi, lo = key
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return 4, hi, lo
    return 6, hi, lo


def _bad_source(source: str) -> ValueError:
    text = source if len(source) <= 64 else source[:64] + "..."
    return ValueError(f"invalid source address: {text!r}")


def source_text(source: object, name: str) -> str:
    """A source as text: a str as given, or the host of a peername tuple,
    ``(host, port)`` or ``(host, port, flowinfo, scope_id)`` as sockets and
    asyncio report it; raise TypeError naming ``name`` for anything else."""
    if isinstance(source, str):
        return source
    if (isinstance(source, tuple) and len(source) in (2, 4) and isinstance(source[0], str)
            and isinstance(source[1], int)):
        return source[0]
    raise TypeError(f"Argument '{name}' has incorrect type (expected str or a peername "
                    f"tuple (host, port[, flowinfo, scope_id]), got {type(source).__name__})")


def source_key(source: str) -> tuple[int, int, int]:
    """Parse ``source`` (a str) or raise ValueError naming it."""
    n = len(source)
    if n == 0 or n > MAX_SOURCE_LENGTH or not source.isascii():
        raise _bad_source(source)
    key = parse_source_text(source)
    if key is None:
        raise _bad_source(source)
    return key


def parse_source(source: str) -> tuple[int, int]:
    """Return ``(family, address)`` for a source; IPv4-mapped IPv6 folds to 4."""
    family, hi, lo = source_key(source_text(source, "source"))
    if family == 4:
        return 4, lo & 0xFFFFFFFF
    return 6, (hi << 64) | lo
