"""A fleet node's counters, as a scrape or a test reads them (no redis, no prometheus_client)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SKIP_REASONS", "FleetStats"]

#: Why an entry read from the stream was not applied (the ``reason`` label):
#: ``own``: this node's own entry, seen while following; ``noop``: applying
#: it changed nothing (a duplicate, an infraction already expired or about
#: an allow-listed source, a ban already over, a command seen before);
#: ``unknown``: an infraction kind or an entry type this node does not know;
#: ``lifted``: an infraction or ban created before an unban of its source.
SKIP_REASONS = ("own", "noop", "unknown", "lifted")


class FleetStats(NamedTuple):
    """One reading of a fleet node's counters; totals count since construction."""

    connected: bool           # the last commands of the publisher and the follower succeeded
    outbox_depth: int         # events waiting to be published
    published: int            # entries this node appended
    applied: int              # entries from the stream that changed this node's state
    dropped: int              # events dropped because the outbox was full (oldest first)
    lag: float                # seconds from the last applied entry's creation to its application
    skipped: dict[str, int]   # entries read and not applied, by reason (SKIP_REASONS)
    malformed: int            # entries read that were not valid entries
    reconnects: int           # times a lost connection to Redis was made again
    resyncs: int              # replays after the first (lost stream), or serving resync()
    replayed: bool            # the live part of the stream has been replayed into the BanManager
    clashes: int              # entries of another process with this node's id (applied)
