"""Pure-Python twin of _core_c.pyx: the same names and observable behaviour.

Every function here mirrors the one of the same name in _core_c.pyx, down to
the hash functions, the eviction sampler's random numbers and the order of
floating-point operations, so the two cores agree on every observable. Keep
them in step: a change to one is a change to the other.

Locking: each Shard's fields are guarded by its ``lock`` (a threading.Lock).
Nothing under the lock calls user code or raises on valid input.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

MAX_CLASSES = 8
MAX_SOURCE_LENGTH = 100
PATTERN_BITS = {"conn_flood": 1, "conn_rate": 2, "spam_relay": 4,
                "port_scan": 8, "credential_stuffing": 16, "dns_tunnel": 32}
EVICTION_SAMPLES = 8
SKETCH_BITS = 64
TOP_BY = {"active": 0, "total": 1, "rate": 2, "flagged": 3}   # flagged: by rate, flagged only

_FLOOD = 1
_RATE = 2
_COUNT_MAX = 65535
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_V4_TAG = 0x0000FFFF00000000
_PORT_SALT = 0x5BD1E9955BD1E995
_FNV_OFFSET = 0xCBF29CE484222325
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
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    h ^= h >> 33
    return h


def key_hash(hi: int, lo: int, seed: int) -> int:
    return fmix64(lo ^ ((hi * _GOLDEN) & _M64) ^ seed)


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
    """RFC 4291 text: up to 8 hex groups, one '::', an optional trailing IPv4."""
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
            return 4, 0, _V4_TAG | v4
        # Not IPv4, but IPv6 may start with a digit too: go on.
    addr_start, addr_end = 0, n
    if p[0] == "[":                              # "[v6]" or "[v6]:port"
        addr_end = p.find("]")
        if addr_end < 0:
            return None
        addr_start = 1
        if addr_end + 1 < n and not (p[addr_end + 1] == ":" and _valid_port(p[addr_end + 2:])):
            return None
    zone_at = p.find("%", addr_start, addr_end)  # "%zone"
    if zone_at >= 0:
        if not _valid_zone(p[zone_at + 1:addr_end]):
            return None
        addr_end = zone_at
    # parse_ipv6 rejects everything else, including text with under two colons.
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


def _check_str(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"Argument '{name}' has incorrect type "
                        f"(expected str, got {type(value).__name__})")


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
    _check_str(source, "source")
    family, hi, lo = source_key(source)
    if family == 4:
        return 4, lo & 0xFFFFFFFF
    return 6, (hi << 64) | lo


# --- destinations -------------------------------------------------------------

def sketch_bit(h: int) -> int:
    return 1 << (fmix64(h) >> 58)


def _port_in(text: str) -> int:
    if not 1 <= len(text) <= 5 or not _DIGITS.issuperset(text):
        return -1
    port = int(text)
    return port if port <= 65535 else -1


def _mix_word(h: int, word: int) -> int:
    h = ((h ^ word) * _GOLDEN) & _M64
    return h ^ (h >> 32)


_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def _text_hash(text: str, seed: int, fold_case: bool) -> int:
    """Hash text, ASCII case folded if asked, as _core_c's _text_hash.

    Text whose code points all fit a byte is read 8 bytes per step (little
    endian); wider text one code point per step.
    """
    h = seed ^ len(text)
    try:
        data = text.encode("latin-1")
    except UnicodeEncodeError:
        for ch in text:
            c = ord(ch)
            h = _mix_word(h, c + 32 if fold_case and 65 <= c <= 90 else c)
        return h
    if fold_case:
        data = data.translate(_ASCII_LOWER)
    for i in range(0, len(data), 8):
        h = _mix_word(h, int.from_bytes(data[i:i + 8], "little"))
    return h


def classify(destination: object, port_class: bytes) -> tuple[int, int, int]:
    """Return (class, host_bit, port_bit); unparsable text counts as "other"."""
    if destination is None:
        return 0, 0, 0
    if not isinstance(destination, str):
        raise TypeError(f"destination must be str or None, not {type(destination).__name__}")
    if not destination:
        return 0, 0, 0
    host = destination
    port = -1
    if destination[0] == "[":
        close_at = destination.find("]", 1)
        if close_at > 1:
            if close_at == len(destination) - 1:
                host = destination[1:close_at]
            elif destination[close_at + 1] == ":":
                port = _port_in(destination[close_at + 2:])
                if port >= 0:
                    host = destination[1:close_at]
    else:
        colon = destination.find(":")                # one ':' only: see _core_c
        if colon > 0:
            port = _port_in(destination[colon + 1:])
            if port >= 0:
                host = destination[:colon]
    host_bit = sketch_bit(_text_hash(host, _FNV_OFFSET, True))
    if port >= 0:
        return port_class[port], host_bit, sketch_bit(port ^ _PORT_SALT)
    return 0, host_bit, 0


# --- the source table ---------------------------------------------------------

class Header:
    """What every table entry starts with; all the table itself reads."""

    __slots__ = ("key_hi", "key_lo", "last_seen", "active", "patterns", "reported")

    def __init__(self, hi: int, lo: int, now: float) -> None:
        self.key_hi = hi
        self.key_lo = lo
        self.last_seen = now      # idleness: the smallest goes first on eviction
        self.active = 0           # > 0: never evicted
        self.patterns = 0         # PATTERN_BITS (source entries)
        self.reported = 0         # pattern bits already announced (logged once per pattern)

    def copy(self) -> Any:
        other = object.__new__(type(self))
        for cls in type(self).__mro__[:-1]:
            for name in cls.__dict__.get("__slots__", ()):
                value = getattr(self, name)
                setattr(other, name, list(value) if isinstance(value, list) else value)
        return other


class Entry(Header):
    """A tracked source."""

    __slots__ = ("first_seen", "total", "cls_cur", "cls_prev", "hosts_cur", "hosts_prev",
                 "ports_cur", "ports_prev")

    def __init__(self, hi: int, lo: int, now: float) -> None:
        super().__init__(hi, lo, now)
        self.first_seen = now
        self.total = 0
        self.cls_cur = [0] * MAX_CLASSES
        self.cls_prev = [0] * MAX_CLASSES
        self.hosts_cur = self.hosts_prev = 0
        self.ports_cur = self.ports_prev = 0


def roll(e: Entry, now: float, window: float) -> None:
    """Advance e's window buckets to ``now`` (now >= e.last_seen)."""
    if now == e.last_seen:
        return
    gap = math.floor(now / window) - math.floor(e.last_seen / window)
    if gap == 0:
        return
    if gap == 1:
        e.cls_prev = e.cls_cur
        e.hosts_prev = e.hosts_cur
        e.ports_prev = e.ports_cur
    else:
        e.cls_prev = [0] * MAX_CLASSES
        e.hosts_prev = 0
        e.ports_prev = 0
    e.cls_cur = [0] * MAX_CLASSES
    e.hosts_cur = 0
    e.ports_cur = 0


def window_weight(now: float, window: float) -> float:
    """Weight of the previous bucket: the share of it still inside the window."""
    return 1.0 - (now / window - math.floor(now / window))


def accept_rate(e: Entry, now: float, window: float) -> float:
    return (sum(e.cls_cur) + sum(e.cls_prev) * window_weight(now, window)) / window


class Config:
    __slots__ = ("window", "rate_threshold", "concurrent_threshold")

    def __init__(self, window: float, rate_threshold: float, concurrent_threshold: int) -> None:
        self.window = window
        self.rate_threshold = rate_threshold
        self.concurrent_threshold = concurrent_threshold


class Shard:
    """The lock of one shard: a table's _tables[i] is guarded by _shards[i].lock."""

    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.lock = threading.Lock()


class Table:
    """One shard's table and counters, guarded by its Shard's lock."""

    def __init__(self, capacity: int, rng: int, factory: Callable[[int, int, float], Any]) -> None:
        self.entries: list[Any] = []         # dense, swap-removed on eviction
        self.index: dict[tuple[int, int], int] = {}
        self.factory = factory               # makes a zeroed entry of this table's type
        self.capacity = capacity
        self.rng = rng
        self.active_connections = 0
        self.active_sources = 0
        self.flagged_sources = 0
        self.flagged_by = [0] * 8              # entries with each PATTERN_BITS bit set
        self.evictions = 0
        self.overflows = 0

    def next_random(self) -> int:
        x = self.rng
        x ^= x >> 12
        x ^= (x << 25) & _M64
        x ^= x >> 27
        self.rng = x
        return (x * 0x2545F4914F6CDD1D) & _M64

    def find(self, hi: int, lo: int) -> Any:
        """Return the entry for a key, or None."""
        pos = self.index.get((hi, lo))
        return None if pos is None else self.entries[pos]

    def remove(self, pos: int) -> None:
        e = self.entries[pos]
        del self.index[(e.key_hi, e.key_lo)]
        last = self.entries.pop()
        if pos != len(self.entries):
            self.entries[pos] = last
            self.index[(last.key_hi, last.key_lo)] = pos

    def evict_one(self) -> bool:
        """Evict the idlest of a few sampled entries that are not busy."""
        n = len(self.entries)
        if n == 0 or self.active_sources >= n:
            return False
        best = -1
        for _ in range(EVICTION_SAMPLES):
            i = self.next_random() % n
            e = self.entries[i]
            if e.active == 0 and (best < 0 or e.last_seen < self.entries[best].last_seen):
                best = i
        if best < 0:
            i = self.next_random() % n
            while self.entries[i].active != 0:
                i = (i + 1) % n
            best = i
        table_flags_changed(self, self.entries[best].patterns, 0)
        self.remove(best)
        self.evictions += 1
        return True

    def insert(self, hi: int, lo: int, now: float) -> Any:
        """Add a zeroed entry for a new key; None (an overflow) when there is no room."""
        if len(self.entries) >= self.capacity and not self.evict_one():
            self.overflows += 1
            return None
        e = self.factory(hi, lo, now)
        self.index[(hi, lo)] = len(self.entries)
        self.entries.append(e)
        return e

    def delete(self, hi: int, lo: int) -> bool:
        """Remove a key's entry; False when there is none."""
        pos = self.index.get((hi, lo))
        if pos is None:
            return False
        self.remove(pos)
        return True

    def copy(self, hi: int, lo: int) -> Any:
        """Return a copy of the entry for a key, or None when there is none."""
        e = self.find(hi, lo)
        return None if e is None else e.copy()


def table_flags_changed(self: Table, before: int, after: int) -> None:
    """Keep flagged_sources and flagged_by in step with one entry's pattern bits."""
    if (before == 0) != (after == 0):
        self.flagged_sources += 1 if before == 0 else -1
    for bit in range(8):
        if (before ^ after) & (1 << bit):
            self.flagged_by[bit] += 1 if after & (1 << bit) else -1


def table_accept(self: Table, hi: int, lo: int, d: tuple[int, int, int], now: float,
                 cfg: Config) -> int:
    """Count one accepted connection; 0 when there was no room, else 1, plus
    (bits << 8) for patterns raised on this source for the first time."""
    e = self.find(hi, lo)
    if e is None:
        e = self.insert(hi, lo, now)
        if e is None:
            return 0
    else:
        if now < e.last_seen:
            now = e.last_seen
        roll(e, now, cfg.window)
        e.last_seen = now
    before = e.patterns
    e.active += 1
    if e.active == 1:
        self.active_sources += 1
    self.active_connections += 1
    e.total += 1
    cls, host_bit, port_bit = d
    if e.cls_cur[cls] < _COUNT_MAX:
        e.cls_cur[cls] += 1
    e.hosts_cur |= host_bit
    e.ports_cur |= port_bit
    if e.active >= cfg.concurrent_threshold:
        e.patterns |= _FLOOD
    update_rate_flag(e, now, cfg)
    if before != e.patterns:
        table_flags_changed(self, before, e.patterns)
    fresh: int = e.patterns & ~e.reported
    e.reported |= fresh
    return 1 | (fresh << 8)


def table_close(self: Table, hi: int, lo: int, now: float, cfg: Config) -> bool:
    """Count one closed connection; an unknown or idle source is a no-op."""
    e = self.find(hi, lo)
    if e is None or e.active == 0:
        return False
    if now < e.last_seen:
        now = e.last_seen
    roll(e, now, cfg.window)
    e.last_seen = now
    before = e.patterns
    e.active -= 1
    self.active_connections -= 1
    if e.active == 0:
        self.active_sources -= 1
        e.patterns &= ~_FLOOD
    update_rate_flag(e, now, cfg)
    if before != e.patterns:
        table_flags_changed(self, before, e.patterns)
    return True


def update_rate_flag(e: Entry, now: float, cfg: Config) -> None:
    if accept_rate(e, now, cfg.window) > cfg.rate_threshold:
        e.patterns |= _RATE
    else:
        e.patterns &= ~_RATE


def _prefix_mask(bits: int) -> int:
    """Mask of the top ``bits`` bits of a 64-bit word (clamped to 0..64)."""
    if bits <= 0:
        return 0
    if bits >= 64:
        return _M64
    return _M64 & ~((1 << (64 - bits)) - 1)


def _raw(e: Entry, now: float, window: float) -> tuple[Any, ...]:
    """Pack a copied entry, advanced to ``now``, for the Python side."""
    if now < e.last_seen:
        now = e.last_seen
    roll(e, now, window)
    return (e.key_hi, e.key_lo, e.active, e.total, e.first_seen, e.last_seen,
            e.patterns, now, tuple(e.cls_cur), tuple(e.cls_prev),
            e.hosts_cur, e.hosts_prev, e.ports_cur, e.ports_prev)


def _as_seconds(now: object) -> float:
    if isinstance(now, (str, bytes, bytearray)):
        raise TypeError(f"must be real number, not {type(now).__name__}")
    return float(now)  # type: ignore[arg-type]


class ShardedTable:
    """Sharded, bounded tables of one entry type, keyed by netblock or text.

    Shared by SourceTable, BanTable and BucketTable: the shards and their
    locks, the clock, source-address keys, and the aggregate counters.
    """

    # Written once in _setup, read-only afterwards; the contents of
    # _tables[i] are guarded by _shards[i].lock.
    _shards: tuple[Shard, ...] | None = None
    _tables: list[Table]

    def _setup(self, capacity: int, shards: int, factory: Callable[[int, int, float], Any],
               ipv4_prefix: int, ipv6_prefix: int, clock: Callable[[], float] | None,
               seed: int) -> None:
        if self._shards is not None:
            raise RuntimeError(f"{type(self).__name__} is already initialised")
        if shards == 0 or shards & (shards - 1) or capacity < shards:
            raise ValueError("shards must be a power of two no larger than capacity")
        self._seed = seed & _M64
        ipv4_prefix = min(ipv4_prefix, 32)
        self._mask_v4 = 0 if ipv4_prefix <= 0 else (0xFFFFFFFF << (32 - ipv4_prefix)) & 0xFFFFFFFF
        self._mask_hi = _prefix_mask(ipv6_prefix)
        self._mask_lo = _prefix_mask(ipv6_prefix - 64)
        self._clock = clock
        self._tables = [
            Table(capacity // shards + (1 if i < capacity % shards else 0),
                  fmix64((seed + i + 1) & _M64) | 1, factory)
            for i in range(shards)]
        self._shard_mask = shards - 1
        self._shards = tuple(Shard() for _ in range(shards))

    def _now(self, now: object) -> float:
        if now is None:
            if self._clock is None:
                return default_clock()
            now = self._clock()
        t = _as_seconds(now)
        if not math.isfinite(t):
            raise ValueError(f"now must be a finite number of seconds, got {now!r}")
        return t

    def _lock_of(self, i: int) -> threading.Lock:
        assert self._shards is not None
        return self._shards[i].lock

    def _key(self, source: str) -> tuple[int, int, int]:
        _check_str(source, "source")
        family, hi, lo = source_key(source)
        if family == 4:
            return family, 0, _V4_TAG | (lo & self._mask_v4)
        return family, hi & self._mask_hi, lo & self._mask_lo

    def _shard_of(self, hi: int, lo: int) -> int:
        return key_hash(hi, lo, self._seed) & self._shard_mask

    def source_key(self, source: str) -> tuple[int, int, int]:
        """Return ``(family, hi, lo)``: the masked netblock key of a source."""
        return self._key(source)

    def counters(self) -> tuple[int, int, int, int, int, int]:
        """Return (active_connections, active_sources, tracked_sources,
        flagged_sources, evictions, overflows), summed over the shards."""
        sums = [0] * 6
        for i, t in enumerate(self._tables):
            with self._lock_of(i):
                values = (t.active_connections, t.active_sources, len(t.entries),
                          t.flagged_sources, t.evictions, t.overflows)
            sums = [a + b for a, b in zip(sums, values, strict=True)]
        return tuple(sums)  # type: ignore[return-value]

    def flagged_by(self) -> tuple[int, ...]:
        """Return how many entries have each pattern bit set (PATTERN_BITS order)."""
        sums = [0] * len(PATTERN_BITS)
        for i, t in enumerate(self._tables):
            with self._lock_of(i):
                values = t.flagged_by[:len(PATTERN_BITS)]
            sums = [a + b for a, b in zip(sums, values, strict=True)]
        return tuple(sums)

    def memory_bytes(self) -> int:
        """Return the bytes held by the tables (entries, lists and indexes)."""
        total = 0
        for i, table in enumerate(self._tables):
            with self._lock_of(i):
                entries = list(table.entries)
                total += sys.getsizeof(table.entries) + sys.getsizeof(table.index)
            for e in entries:
                total += sys.getsizeof(e) + 2 * sys.getsizeof((e.key_hi, e.key_lo))
        return total

    @property
    def capacity(self) -> int:
        """The hard bound on entries."""
        return sum(t.capacity for t in self._tables)

    @property
    def shards(self) -> int:
        assert self._shards is not None
        return len(self._shards)


class SourceTable(ShardedTable):
    """Per-source connection counts in sharded, bounded hash tables.

    The public face is connguard.Tracker, which validates arguments and
    turns the raw tuples returned here into SourceStats.
    """

    def __init__(self, *, capacity: int, shards: int, window: float,
                 concurrent_threshold: int, rate_threshold: float,
                 ipv4_prefix: int, ipv6_prefix: int, deny: bool,
                 port_classes: bytes, clock: Callable[[], float] | None,
                 seed: int) -> None:
        if len(port_classes) != 65536 or max(port_classes) >= MAX_CLASSES:
            raise ValueError("port_classes must map all 65536 ports to a class id")
        self._setup(capacity, shards, Entry, ipv4_prefix, ipv6_prefix, clock, seed)
        self._port_class = bytes(port_classes)
        self._cfg = Config(float(window), float(rate_threshold), int(concurrent_threshold))
        self._deny = bool(deny)

    def accept(self, source: str, destination: str | None = "",
               now: float | None = None) -> bool:
        """Count an accepted connection; False only when overflow="deny" refuses it."""
        _, hi, lo = self._key(source)
        d = classify(destination, self._port_class)
        result = tracker_accept(self, hi, lo, d, self._now(now))
        return result != 0 or not self._deny

    def close(self, source: str, now: float | None = None) -> bool:
        """Count a closed connection; return False when there was none to close."""
        return tracker_close(self, source, now)

    def stats_raw(self, hi: int, lo: int, now: float | None = None) -> tuple[Any, ...] | None:
        """Return one source's raw counters, windows advanced to ``now``, or None."""
        t = self._now(now)
        i = self._shard_of(hi, lo)
        with self._lock_of(i):
            e = self._tables[i].copy(hi, lo)
        return None if e is None else _raw(e, t, self._cfg.window)

    def top_raw(self, n: int, by: int, now: float | None = None) -> list[tuple[Any, ...]]:
        """Return the raw counters of the n highest-ranked sources."""
        t = self._now(now)
        window = self._cfg.window
        ranked: list[tuple[float, int, int]] = []
        for i, table in enumerate(self._tables):
            with self._lock_of(i):
                for e in table.entries:
                    if by == 3 and not e.patterns:
                        continue
                    if by == 0:
                        score = float(e.active)
                    elif by == 1:
                        score = float(e.total)
                    else:
                        c = e.copy()
                        at = t if t > c.last_seen else c.last_seen
                        roll(c, at, window)
                        score = accept_rate(c, at, window)
                    ranked.append((-score, e.key_hi, e.key_lo))
        ranked.sort()
        result = []
        for _, hi, lo in ranked[:max(n, 0)]:
            raw = self.stats_raw(hi, lo, t)
            if raw is not None:
                result.append(raw)
        return result

    def memory_bytes(self) -> int:
        """Return the bytes held by the tables, their lists and the port classes."""
        return super().memory_bytes() + sys.getsizeof(self._port_class) + sum(
            sys.getsizeof(e.cls_cur) + sys.getsizeof(e.cls_prev)
            for t in self._tables for e in list(t.entries))


# --- bans ---------------------------------------------------------------------
# A ban is a bare Header: last_seen holds the time the ban ends, so the
# sampled eviction of a full table drops the ban that ends soonest.

class BanTable(ShardedTable):
    """Ban expiry per netblock: the hot-path half of connguard.BanManager."""

    def __init__(self, *, capacity: int, shards: int, ipv4_prefix: int,
                 ipv6_prefix: int, clock: Callable[[], float] | None, seed: int) -> None:
        self._setup(capacity, shards, Header, ipv4_prefix, ipv6_prefix, clock, seed)

    def is_banned(self, source: str, now: float | None = None) -> bool:
        """Return True while the source's netblock is banned."""
        _, hi, lo = self._key(source)
        return ban_active(self, hi, lo, self._now(now))

    def set_until(self, hi: int, lo: int, until: float) -> bool:
        """Ban a key until ``until``; False when the table had no room."""
        i = self._shard_of(hi, lo)
        with self._lock_of(i):
            return ban_set(self._tables[i], hi, lo, float(until))

    def clear(self, hi: int, lo: int) -> bool:
        """Lift a key's ban; False when it had none."""
        i = self._shard_of(hi, lo)
        with self._lock_of(i):
            return self._tables[i].delete(hi, lo)

    def until(self, hi: int, lo: int) -> float | None:
        """Return when a key's ban ends, or None when it has none."""
        i = self._shard_of(hi, lo)
        with self._lock_of(i):
            e = self._tables[i].find(hi, lo)
            return None if e is None else e.last_seen

    def active(self, now: float | None = None) -> int:
        """Count the bans in force at ``now``."""
        t = self._now(now)
        count = 0
        for i, table in enumerate(self._tables):
            with self._lock_of(i):
                count += ban_count(table, t)
        return count


def ban_set(self: Table, hi: int, lo: int, until: float) -> bool:
    e = self.find(hi, lo)
    if e is None:
        e = self.insert(hi, lo, until)
        if e is None:
            return False
    e.last_seen = until
    return True


def ban_count(self: Table, now: float) -> int:
    return sum(1 for e in self.entries if e.last_seen > now)


# --- rate limiting ------------------------------------------------------------

class Bucket(Header):
    __slots__ = ("tokens", "last_violation", "violations")

    def __init__(self, hi: int, lo: int, now: float) -> None:
        super().__init__(hi, lo, now)     # last_seen: when the tokens were last refilled
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


TAKE_ALLOWED, TAKE_WARNING, TAKE_VIOLATION, TAKE_ABUSE = 0, 1, 2, 3


def bucket_take(self: Table, hi: int, lo: int, now: float, cfg: LimitConfig) -> tuple[int, int]:
    """Spend one token; return TAKE_ALLOWED or the denial's escalation level, and the
    key's count of denials in the current window."""
    b = self.find(hi, lo)
    if b is None:
        b = self.insert(hi, lo, now)
        if b is None:
            return TAKE_ALLOWED, 0
        b.tokens = cfg.burst
    elif now > b.last_seen:
        tokens = b.tokens + (now - b.last_seen) * cfg.rate
        b.tokens = cfg.burst if tokens > cfg.burst else tokens
        b.last_seen = now
    if b.tokens >= 1.0:
        b.tokens -= 1.0
        return TAKE_ALLOWED, 0
    if b.violations and now - b.last_violation > cfg.violation_window:
        b.violations = 0
    if b.violations < 0xFFFFFFFF:
        b.violations += 1
    b.last_violation = now
    if b.violations <= cfg.warn_after:
        return TAKE_WARNING, b.violations
    if b.violations < cfg.abuse_after:
        return TAKE_VIOLATION, b.violations
    return TAKE_ABUSE, b.violations


class BucketTable(ShardedTable):
    """Token buckets per key with escalating violations: connguard.RateLimiter's core."""

    def __init__(self, *, capacity: int, shards: int, rate: float, burst: float,
                 warn_after: int, abuse_after: int, violation_window: float,
                 clock: Callable[[], float] | None, seed: int) -> None:
        self._setup(capacity, shards, Bucket, 32, 128, clock, seed)
        self._cfg = LimitConfig(float(rate), float(burst), float(violation_window),
                                int(warn_after), int(abuse_after))

    def _bucket_key(self, key: str) -> tuple[int, int]:
        _check_str(key, "key")
        return (_text_hash(key, self._seed ^ _GOLDEN, False),
                _text_hash(key, self._seed ^ _PORT_SALT, False))

    def _take(self, key: str, now: float | None) -> int:
        hi, lo = self._bucket_key(key)
        return limit_take(self, hi, lo, self._now(now))[0]

    def allow(self, key: str, now: float | None = None) -> bool:
        """Spend a token for ``key``; True when one was there."""
        return self._take(key, now) == TAKE_ALLOWED

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


# --- the guard ----------------------------------------------------------------

REASON_NONE, REASON_BANNED, REASON_OVERFLOW, REASON_LIMIT = 0, 1, 2, 3
VERDICT_REFUSED = 4
_LIMIT_SALT = 0xA0761D6478BD642F


class GuardTable:
    """One call per accepted connection: the ban table, the limiter, the tracker.

    The address is parsed once, with the tracker's prefixes (the Guard makes
    the ban table's match); each table's shard lock is taken in turn, never
    two at once. connguard.Guard is the public face.
    """

    def __init__(self, *, tracker: SourceTable, bans: BanTable | None,
                 limiter: BucketTable | None, enforce: bool, verdicts: tuple[Any, ...],
                 on_limit: Callable[[str, int], object] | None,
                 on_flag: Callable[[str, int], object] | None) -> None:
        if len(verdicts) != 8:
            raise ValueError("verdicts must hold 8 entries")
        self._tracker = tracker
        self._bans = bans
        self._limiter = limiter
        self._enforce = bool(enforce)
        self._verdicts = verdicts
        self._on_limit = on_limit
        self._on_flag = on_flag
        self._counts = [0] * 8                 # verdicts returned, by index
        self._counts_lock = threading.Lock()   # guards _counts

    def accept(self, source: str, destination: str | None = "", now: float | None = None) -> Any:
        """Check and count an accepted connection; return its verdict."""
        code = self._decide(source, destination, now)
        with self._counts_lock:
            self._counts[code] += 1
        return self._verdicts[code]

    def _decide(self, source: str, destination: str | None, now: float | None) -> int:
        tracker = self._tracker
        _, hi, lo = tracker._key(source)
        d = classify(destination, tracker._port_class)
        t = tracker._now(now)
        reason = REASON_NONE
        if self._bans is not None and ban_active(self._bans, hi, lo, t):
            if self._enforce:
                return REASON_BANNED + VERDICT_REFUSED
            reason = REASON_BANNED
        if self._limiter is not None:
            level, violations = limit_take(self._limiter, hi ^ _LIMIT_SALT, lo, t)
            if level != TAKE_ALLOWED:
                cfg = self._limiter._cfg
                if self._on_limit is not None and (
                        (level == TAKE_VIOLATION and violations == cfg.warn_after + 1)
                        or (level == TAKE_ABUSE and violations == cfg.abuse_after)):
                    self._on_limit(source, level)
                if self._enforce:
                    return (reason or REASON_LIMIT) + VERDICT_REFUSED
                if reason == REASON_NONE:
                    reason = REASON_LIMIT
        counted = tracker_accept(tracker, hi, lo, d, t)
        if counted == 0 and tracker._deny:
            return (reason or REASON_OVERFLOW) + VERDICT_REFUSED
        if counted >> 8 and self._on_flag is not None:
            self._on_flag(source, counted >> 8)
        return reason

    def verdict_counts(self) -> tuple[int, ...]:
        """Return how many times each verdict was returned, by verdict index."""
        with self._counts_lock:
            return tuple(self._counts)

    def close(self, source: str, now: float | None = None) -> bool:
        """Count a closed connection; return False when there was none to close."""
        return tracker_close(self._tracker, source, now)


def ban_active(bans: BanTable, hi: int, lo: int, t: float) -> bool:
    i = bans._shard_of(hi, lo)
    with bans._lock_of(i):
        e = bans._tables[i].find(hi, lo)
        return e is not None and e.last_seen > t


def limit_take(limiter: BucketTable, hi: int, lo: int, t: float) -> tuple[int, int]:
    i = limiter._shard_of(hi, lo)
    with limiter._lock_of(i):
        return bucket_take(limiter._tables[i], hi, lo, t, limiter._cfg)


def tracker_close(tracker: SourceTable, source: str, now: float | None) -> bool:
    _, hi, lo = tracker._key(source)
    t = tracker._now(now)
    i = tracker._shard_of(hi, lo)
    with tracker._lock_of(i):
        return table_close(tracker._tables[i], hi, lo, t, tracker._cfg)


def tracker_accept(tracker: SourceTable, hi: int, lo: int, d: tuple[int, int, int], t: float) -> int:
    i = tracker._shard_of(hi, lo)
    with tracker._lock_of(i):
        return table_accept(tracker._tables[i], hi, lo, d, t, tracker._cfg)
