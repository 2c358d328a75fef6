"""The contract both cores and the API layer share: codes, layouts, constants.

Everything that _core_c.pyx, _core_py and the public classes must agree on
is written here once. The pure core imports it; the compiled core keeps C
constants of its own (a C constant compiles into the instruction that uses
it) and asserts at import that each one equals the value here, so the two
can never drift apart silently.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, TypeAlias

# --- sizes and limits -----------------------------------------------------------

MAX_CLASSES = 8             #: "other" plus up to seven named destination classes
MAX_SOURCE_LENGTH = 100     #: longer text cannot be an address; rejected unread
EVICTION_SAMPLES = 8        #: entries sampled per eviction
SKETCH_BITS = 64            #: bits in a distinct-hosts or distinct-ports sketch
COUNT_MAX = 65535           #: per-class window counters saturate here
MAX_CAPACITY = 2**32 - 1    #: entries one shard can index (positions are 32-bit)
MAX_ACTIVE = 2**32 - 1      #: open connections one source entry can count
MAX_TIME = 1e15             #: |now| in seconds (about 32 million years) is at most this
#: What a source may be: address text, or a peername tuple as sockets and
#: asyncio report it, ``(host, port)`` or ``(host, port, flowinfo, scope_id)``.
Source: TypeAlias = str | tuple[str, int] | tuple[str, int, int, int]
#: In an accept's result: the source held the Guard's max_open connections
#: (alone: refused; with bit 1: counted over the cap).
CAPPED = 2
UNTRACKED_SLOTS = 64        #: netblocks per shard whose untracked opens are remembered
PATTERN_STATE_RATIO = 128   #: a shard holds pattern state for 1 in this many of its sources
PATTERN_STATE_MIN = 16      #: ... and for at least this many
PATTERN_STATE_MAX = 65535   #: ... and at most this many (record numbers are 16-bit)
TRIGGER_COUNT = 16          #: accepts of a volume class in the source's window that earn pattern state


# --- hashing ---------------------------------------------------------------------
# 64-bit constants the cores hash with; both must use the same ones for the
# twins to shard, sample and sketch identically.

GOLDEN = 0x9E3779B97F4A7C15        #: 2**64 / golden ratio: mixes hi into a key hash
FMIX_C1 = 0xFF51AFD7ED558CCD       #: murmur3 fmix64 multipliers
FMIX_C2 = 0xC4CEB9FE1A85EC53
XORSHIFT_STAR = 0x2545F4914F6CDD1D  #: xorshift64* output multiplier (eviction sampling)
V4_TAG = 0x0000FFFF00000000        #: IPv4 keys live in ::ffff:0:0/96
PORT_SALT = 0x5BD1E9955BD1E995     #: ports hash apart from hosts
FNV_OFFSET = 0xCBF29CE484222325    #: seed of the destination-host hash
LIMIT_SALT = 0xA0761D6478BD642F    #: the Guard's netblock buckets apart from text keys


# --- patterns ----------------------------------------------------------------------

class Pattern(enum.IntFlag):
    """A source entry's pattern bits; the public names are the lower-case member names."""

    CONN_FLOOD = 1
    CONN_RATE = 2
    SPAM_RELAY = 4
    PORT_SCAN = 8
    CREDENTIAL_STUFFING = 16
    DNS_TUNNEL = 32


#: pattern name -> bit, in bit order: "conn_flood", "conn_rate", ...
PATTERN_BITS: dict[str, int] = {name.lower(): int(bit) for name, bit in Pattern.__members__.items()}
#: Every pattern name a source can be flagged with, in bit order.
PATTERNS: tuple[str, ...] = tuple(PATTERN_BITS)


class Group(enum.IntEnum):
    """The windowed patterns, in the order of their evidence in a pattern-state record.

    Group ``g`` raises pattern bit ``1 << (g + GROUP_SHIFT)``.
    """

    SPAM_RELAY = 0
    PORT_SCAN = 1
    CREDENTIAL_STUFFING = 2
    DNS_TUNNEL = 3


#: Group g's pattern bit is 1 << (g + GROUP_SHIFT).
GROUP_SHIFT = 2
#: Pattern bits a record keeps raise times for: every Pattern member.
PATTERN_COUNT = 6


class PatternLimits(NamedTuple):
    """The windowed patterns' thresholds as the cores take them.

    Built and validated by connguard.patterns from the typed configuration
    objects; the cores only compare against these numbers. Sketch bounds are
    counts of zero bits in a 64-bit sketch: an estimate of at least T
    distinct items is at most ``floor(64 * exp(-T / 64))`` zero bits, one of
    at most H is at least ``ceil(64 * exp(-H / 64))``.
    """

    enabled: int                      # bit g: Group g is evaluated
    windows: tuple[float, ...]        # seconds, by group
    accept_masks: tuple[int, ...]     # class bits whose accepts count in ``n``, by group
    aux_masks: tuple[int, ...]        # class bits whose accepts count in ``aux``, by group
    trigger_classes: int              # an accept of these classes earns pattern state
    volume_classes: int               # ... and of these, TRIGGER_COUNT in the source's window
    spam_connections: float
    spam_hosts_zeros: int             # at most: at least the hosts threshold
    spam_min_closed: float            # smtp closes with byte counts before failures are judged
    spam_empty_share: float           # below this share of them empty: mail was delivered
    scan_ports_zeros: int             # vertical, at most: at least the ports threshold
    scan_vertical_hosts_zeros: int    # vertical, at least: at most a few hosts
    scan_hosts_zeros: int             # horizontal, at most: at least the hosts threshold
    scan_horizontal_ports_zeros: int  # horizontal, at least: at most a few ports
    scan_min_closed: float            # closes with byte counts before failures are judged
    scan_empty_share: float           # share of those that received nothing
    cred_connections: float
    cred_hosts_zeros: int             # at least: at most a few hosts
    cred_min_closed: float
    cred_mean_received: float         # bytes received per close, at most
    cred_login_connections: float     # accepts of the watch-list class
    dns_connections: float
    dns_bytes: float
    dns_mean_bytes: float


def pattern_names(bits: int) -> frozenset[str]:
    """The names of the pattern bits set in ``bits``."""
    return frozenset(name for name, bit in PATTERN_BITS.items() if bits & bit)


# --- ranking -------------------------------------------------------------------------

class TopBy(enum.IntEnum):
    """What SourceTable.top_raw ranks by."""

    ACTIVE = 0
    TOTAL = 1
    RATE = 2
    FLAGGED = 3       # by rate, sources with a pattern raised only


# --- rate limiting ---------------------------------------------------------------------

class Take(enum.IntEnum):
    """BucketTable.take's result: allowed, or how far a denial has escalated."""

    ALLOWED = 0
    WARNING = 1
    VIOLATION = 2
    ABUSE = 3


# --- the guard ----------------------------------------------------------------------------

class Reason(enum.IntEnum):
    """Why the Guard refused, or would have refused, a connection."""

    NONE = 0
    BANNED = 1
    OVERFLOW = 2
    LIMIT = 3
    FLOOD = 4       # the source holds the Guard's max_open connections already


#: Added to a Reason in a verdict code when the connection was refused.
REFUSED = 5
#: Verdict codes run from 0 to VERDICT_CODES - 1: reason + (REFUSED if refused).
VERDICT_CODES = 10


def verdict_parts(code: int) -> tuple[Reason, bool]:
    """Split a verdict code into its reason and whether it was a refusal."""
    return Reason(code % REFUSED), code >= REFUSED


# --- raw statistics --------------------------------------------------------------------------

class RawStats(NamedTuple):
    """One source entry as the cores hand it to the API layer, windows advanced to ``now``."""

    key_hi: int
    key_lo: int
    active: int
    total: int
    first_seen: float
    last_seen: float
    patterns: int
    weight: float                 # share of the previous window bucket still inside the window
    cls_cur: tuple[int, ...]      # accepts per class, current bucket
    cls_prev: tuple[int, ...]     # accepts per class, previous bucket
    hosts_cur: int                # distinct-host sketches
    hosts_prev: int
    ports_cur: int                # distinct-port sketches
    ports_prev: int


class RawRecord(NamedTuple):
    """A source's pattern-state record, copied; windows advanced to ``now``."""

    stamp: float
    since: tuple[float, ...]      # by pattern bit: when it was raised
    above: tuple[float, ...]      # by pattern bit: when its evidence was last at the threshold
    weights: tuple[float, ...]    # by group: share of the previous bucket inside the window
    windows: tuple[tuple[int, ...], ...]   # by group: n, aux, closed, empty, bytes,
                                           # hosts, ports; each (current, previous)


# --- consistency ----------------------------------------------------------------------------

class Broken(enum.IntEnum):
    """Which invariant of a shard ShardedTable.check_consistency found broken."""

    NONE = 0
    OVER_CAPACITY = 1         # more entries than the shard's capacity (or its allocation)
    INDEX = 2                 # index slots and entry positions are not a bijection
    ACTIVE_SOURCES = 3        # active_sources != entries with a connection open
    ACTIVE_CONNECTIONS = 4    # active_connections != the entries' open connections
    FLAGGED_SOURCES = 5       # flagged_sources != entries with a pattern raised
    FLAGGED_BY = 6            # flagged_by[bit] != entries with that pattern bit
    UNTRACKED = 7             # untracked slots in use != slots with open connections
    PATTERN_STATE = 8         # pattern-state records and their owners do not match

    def describe(self) -> str:
        return self.name.lower().replace("_", " ") + " invariant broken"
