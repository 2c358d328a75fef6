"""Sharded, bounded tables of entries that start with a Header (pairs with _pxi/table.pxi).

Locking: each Shard's fields are guarded by its ``lock`` (a threading.Lock),
and ``ShardedTable._tables[i]`` by ``_shards[i].lock``. Nothing under a lock
calls user code or raises on valid input.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from .._spec import (
    EVICTION_SAMPLES,
    PATTERN_BITS,
    UNTRACKED_SLOTS,
    V4_TAG,
    XORSHIFT_STAR,
    Broken,
    Source,
)
from .._validate import seconds_of
from .parse import _M64, default_clock, fmix64, key_hash, source_key, source_text
from .patterns import Pool, Record


class Header:
    """What every table entry starts with; all the table itself reads.

    ``stamp`` is a time, and a full table evicts the sampled entry with the
    smallest one first: when a source was last seen, when a ban ends, when a
    bucket was last refilled.
    """

    __slots__ = ("key_hi", "key_lo", "stamp", "active", "patterns", "reported", "rare")

    def __init__(self, hi: int, lo: int, now: float) -> None:
        self.key_hi = hi
        self.key_lo = lo
        self.stamp = now          # eviction order: smallest first
        self.active = 0           # > 0: never evicted
        self.patterns = 0         # Pattern bits (source entries)
        self.reported = 0         # pattern bits already announced (logged once per pattern)
        self.rare = 0             # number of the entry's pattern-state record; 0 for none

    def copy(self) -> Any:
        other = object.__new__(type(self))
        for cls in type(self).__mro__[:-1]:
            for name in cls.__dict__.get("__slots__", ()):
                value = getattr(self, name)
                setattr(other, name, list(value) if isinstance(value, list) else value)
        return other


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
        self.flagged_by = [0] * 8            # entries with each Pattern bit set
        self.evictions = 0
        self.overflows = 0
        # Connections counted open but untracked (no room for their source),
        # by netblock, for at most UNTRACKED_SLOTS netblocks: their closes are
        # absorbed here instead of closing a tracked connection.
        self.untracked: dict[tuple[int, int], int] = {}
        self.untracked_lost = 0              # untracked opens that found no slot
        self.pool: Pool | None = None        # pattern-state records (source tables only)
        self.class_accepts = [0] * 8         # accepts counted, by destination class
        self.raised_by = [0] * 8             # times each Pattern bit was raised

    def next_random(self) -> int:
        x = self.rng
        x ^= x >> 12
        x ^= (x << 25) & _M64
        x ^= x >> 27
        self.rng = x
        return (x * XORSHIFT_STAR) & _M64

    def find(self, hi: int, lo: int) -> Any:
        """Return the entry for a key, or None."""
        pos = self.index.get((hi, lo))
        return None if pos is None else self.entries[pos]

    def remove(self, pos: int) -> None:
        e = self.entries[pos]
        if e.rare:
            self.pool_release(e.rare)
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
            if e.active == 0 and (best < 0 or e.stamp < self.entries[best].stamp):
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

    def pool_take(self, e: Any, now: float) -> Record | None:
        """Give entry ``e`` a fresh pattern-state record; None when the pool has none to spare."""
        pool = self.pool
        assert pool is not None
        if pool.free:
            number = pool.free.pop()
        elif len(pool.records) < pool.capacity:
            pool.records.append(Record())
            number = len(pool.records)
        else:
            number = 0
            for _ in range(EVICTION_SAMPLES):
                i = self.next_random() % pool.capacity
                r = pool.records[i]
                if r.patterns == 0 and (number == 0 or r.stamp < pool.records[number - 1].stamp):
                    number = i + 1
            if number == 0:
                pool.full += 1
                return None
            r = pool.records[number - 1]
            self.find(r.key_hi, r.key_lo).rare = 0
            pool.used -= 1
        pool.used += 1
        r = pool.records[number - 1]
        r.reset(e.key_hi, e.key_lo, now)
        e.rare = number
        return r

    def pool_mark(self, number: int, patterns: int) -> None:
        """Mirror the owner's pattern bits in record ``number``; keep the flagged set."""
        pool = self.pool
        assert pool is not None
        pool.records[number - 1].patterns = patterns
        if patterns:
            pool.flagged.add(number)
        else:
            pool.flagged.discard(number)

    def pool_release(self, number: int) -> None:
        pool = self.pool
        assert pool is not None
        self.pool_mark(number, 0)
        pool.free.append(number)
        pool.used -= 1

    def copy(self, hi: int, lo: int) -> Any:
        """Return a copy of the entry for a key, or None when there is none."""
        e = self.find(hi, lo)
        return None if e is None else e.copy()

    def open_untracked(self, hi: int, lo: int) -> None:
        """Remember a connection counted open without an entry (see ``untracked``)."""
        count = self.untracked.get((hi, lo))
        if count is not None:
            self.untracked[(hi, lo)] = count + 1
        elif len(self.untracked) < UNTRACKED_SLOTS:
            self.untracked[(hi, lo)] = 1
        else:
            self.untracked_lost += 1

    def close_untracked(self, hi: int, lo: int) -> bool:
        """Absorb the close of an untracked connection; False when the key has none."""
        count = self.untracked.get((hi, lo))
        if count is None:
            return False
        if count == 1:
            del self.untracked[(hi, lo)]
        else:
            self.untracked[(hi, lo)] = count - 1
        return True


def table_flags_changed(self: Table, before: int, after: int) -> None:
    """Keep flagged_sources and flagged_by in step with one entry's pattern bits."""
    if (before == 0) != (after == 0):
        self.flagged_sources += 1 if before == 0 else -1
    for bit in range(8):
        if (before ^ after) & (1 << bit):
            self.flagged_by[bit] += 1 if after & (1 << bit) else -1


def table_check(self: Table) -> int:
    """Return 0 when one shard's invariants hold, else the first broken one's Broken code."""
    n = len(self.entries)
    if n > self.capacity:
        return Broken.OVER_CAPACITY
    if len(self.index) != n or any(
            self.index.get((e.key_hi, e.key_lo)) != pos for pos, e in enumerate(self.entries)):
        return Broken.INDEX
    if self.active_sources != sum(1 for e in self.entries if e.active):
        return Broken.ACTIVE_SOURCES
    if self.active_connections != sum(e.active for e in self.entries):
        return Broken.ACTIVE_CONNECTIONS
    if self.flagged_sources != sum(1 for e in self.entries if e.patterns):
        return Broken.FLAGGED_SOURCES
    for bit in range(8):
        if self.flagged_by[bit] != sum(1 for e in self.entries if e.patterns & (1 << bit)):
            return Broken.FLAGGED_BY
    if len(self.untracked) > UNTRACKED_SLOTS or any(c <= 0 for c in self.untracked.values()):
        return Broken.UNTRACKED
    pool = self.pool
    owners = [e for e in self.entries if e.rare]
    if pool is None:
        return Broken.PATTERN_STATE if owners else Broken.NONE
    numbers = {e.rare for e in owners}
    if (len(numbers) != len(owners) or pool.used != len(owners)
            or len(pool.records) > pool.capacity
            or numbers & set(pool.free) or len(numbers) + len(pool.free) != len(pool.records)
            or any(pool.records[e.rare - 1].key_hi != e.key_hi
                   or pool.records[e.rare - 1].key_lo != e.key_lo
                   or pool.records[e.rare - 1].patterns != e.patterns for e in owners)
            or pool.flagged != {e.rare for e in owners if e.patterns}):
        return Broken.PATTERN_STATE
    return Broken.NONE


def _prefix_mask(bits: int) -> int:
    """Mask of the top ``bits`` bits of a 64-bit word (clamped to 0..64)."""
    if bits <= 0:
        return 0
    if bits >= 64:
        return _M64
    return _M64 & ~((1 << (64 - bits)) - 1)


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
        from_clock = now is None
        if from_clock:
            if self._clock is None:
                return default_clock()
            now = self._clock()
        return seconds_of(now, from_clock)

    def _lock_of(self, i: int) -> threading.Lock:
        assert self._shards is not None
        return self._shards[i].lock

    def _key(self, source: Source) -> tuple[int, int, int]:
        return self._mask(*source_key(source_text(source, "source")))

    def _mask(self, family: int, hi: int, lo: int) -> tuple[int, int, int]:
        """Mask a parsed address to its netblock."""
        if family == 4:
            return family, 0, V4_TAG | (lo & self._mask_v4)
        return family, hi & self._mask_hi, lo & self._mask_lo

    def _shard_of(self, hi: int, lo: int) -> int:
        return key_hash(hi, lo, self._seed) & self._shard_mask

    def source_key(self, source: Source) -> tuple[int, int, int]:
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
        active, sources, tracked, flagged, evictions, overflows = sums
        return active, sources, tracked, flagged, evictions, overflows

    def flagged_by(self) -> tuple[int, ...]:
        """Return how many entries have each pattern bit set (PATTERN_BITS order)."""
        sums = [0] * len(PATTERN_BITS)
        for i, t in enumerate(self._tables):
            with self._lock_of(i):
                values = t.flagged_by[:len(PATTERN_BITS)]
            sums = [a + b for a, b in zip(sums, values, strict=True)]
        return tuple(sums)

    def untracked(self) -> tuple[int, int]:
        """Return (connections open untracked, untracked opens whose close cannot be
        told apart), summed over the shards."""
        open_, lost = 0, 0
        for i, t in enumerate(self._tables):
            with self._lock_of(i):
                open_ += sum(t.untracked.values())
                lost += t.untracked_lost
        return open_, lost

    def check_consistency(self) -> None:
        """Raise AssertionError naming the first broken invariant of any shard.

        Checked per shard, under its lock: the index and the entries are a
        bijection, there are no more entries than capacity, and the
        active_sources, active_connections, flagged_sources and flagged_by
        counters match the entries. For tests and debugging: O(entries).
        """
        for i, table in enumerate(self._tables):
            with self._lock_of(i):
                broken = table_check(table)
            if broken:
                raise AssertionError(f"shard {i}: {Broken(broken).describe()}")

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

    @property
    def clock(self) -> Callable[[], float] | None:
        """The clock given when built; None for the default (monotonic) clock."""
        return self._clock
