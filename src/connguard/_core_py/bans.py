"""Ban expiry per netblock (pairs with _pxi/bans.pxi).

A ban is a bare Header: ``stamp`` holds the time the ban ends.
connguard.BanManager sizes every shard to hold all its bans, so this table
never evicts one: which ban makes room is the manager's decision alone.
"""

from __future__ import annotations

from collections.abc import Callable

from .._spec import MAX_SOURCE_LENGTH, Source
from .parse import _DIGITS, _bad_source, parse_source_text, source_text
from .table import Header, ShardedTable, Table


class BanTable(ShardedTable):
    """Ban expiry per netblock: the hot-path half of connguard.BanManager."""

    def __init__(self, *, capacity: int, shards: int, ipv4_prefix: int,
                 ipv6_prefix: int, clock: Callable[[], float] | None, seed: int) -> None:
        self._setup(capacity, shards, Header, ipv4_prefix, ipv6_prefix, clock, seed)

    def is_banned(self, source: Source, now: float | None = None) -> bool:
        """Return True while the source's netblock is banned.

        ``source`` is an address, or netblock text as connguard writes it
        ("2001:db8::/64"), whose address part is keyed.
        """
        _, hi, lo = self._netblock_key(source)
        return ban_active(self, hi, lo, self._now(now))

    def _netblock_key(self, source: Source) -> tuple[int, int, int]:
        source = source_text(source, "source")
        if 0 < len(source) <= MAX_SOURCE_LENGTH and source.isascii():
            parsed = parse_source_text(source)
            if parsed is None:
                address, slash, length = source.partition("/")
                if slash and 1 <= len(length) <= 3 and _DIGITS.issuperset(length):
                    parsed = parse_source_text(address)
            if parsed is not None:
                return self._mask(*parsed)
        raise _bad_source(source)

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
            return None if e is None else e.stamp

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
    e.stamp = until
    return True


def ban_count(self: Table, now: float) -> int:
    return sum(1 for e in self.entries if e.stamp > now)

def ban_active(bans: BanTable, hi: int, lo: int, t: float) -> bool:
    i = bans._shard_of(hi, lo)
    with bans._lock_of(i):
        e = bans._tables[i].find(hi, lo)
        return e is not None and e.stamp > t
