# The C side of connguard._spec (pairs with _spec.py, which the pure core
# imports directly). Values that size arrays or fold into instructions are
# C enums and literals here; the checks at the end of this unit fail the
# import if any of them disagrees with _spec, so the cores cannot drift apart.

from connguard import _spec

cdef enum:
    _MAX_CLASSES = 8           # "other" plus up to seven named destination classes
    _SAMPLES = 8               # sources sampled per eviction
    _MAX_SOURCE = 100          # longer text cannot be an address; rejected unread
    _COUNT_MAX = 65535         # per-class counters saturate here
    _SKETCH_BITS = 64
    _UNTRACKED_SLOTS = 64      # netblocks per shard whose untracked opens are remembered
    _PATTERN_COUNT = 6         # Pattern bits a record dates
    _TRIGGER_COUNT = 16        # accepts of a volume class that earn pattern state
    _PATTERN_STATE_RATIO = 128
    _PATTERN_STATE_MIN = 16
    _PATTERN_STATE_MAX = 65535
    _CAPPED = 2                # accept result: the source was at the Guard's max_open

cdef enum:                     # _spec.Group, _spec.GROUP_SHIFT
    GROUP_SPAM = 0
    GROUP_SCAN = 1
    GROUP_CRED = 2
    GROUP_DNS = 3
    _GROUPS = 4
    _ALL_GROUPS = 15           # (1 << _GROUPS) - 1: a new record, every pattern judged
    _GROUP_SHIFT = 2

cdef enum:                     # _spec.Pattern
    _FLOOD = 1
    _RATE = 2

cdef enum:                     # _spec.TopBy
    TOP_ACTIVE = 0
    TOP_TOTAL = 1
    TOP_RATE = 2
    TOP_FLAGGED = 3

cdef enum:                     # _spec.Take
    TAKE_ALLOWED = 0
    TAKE_WARNING = 1
    TAKE_VIOLATION = 2
    TAKE_ABUSE = 3

cdef enum:                     # _spec.Reason, _spec.REFUSED, _spec.VERDICT_CODES
    REASON_NONE = 0
    REASON_BANNED = 1
    REASON_OVERFLOW = 2
    REASON_LIMIT = 3
    REASON_FLOOD = 4
    VERDICT_REFUSED = 5
    VERDICT_CODES = 10

cdef enum:                     # _spec.Broken
    BROKEN_NONE = 0
    BROKEN_OVER_CAPACITY = 1
    BROKEN_INDEX = 2
    BROKEN_ACTIVE_SOURCES = 3
    BROKEN_ACTIVE_CONNECTIONS = 4
    BROKEN_FLAGGED_SOURCES = 5
    BROKEN_FLAGGED_BY = 6
    BROKEN_UNTRACKED = 7
    BROKEN_PATTERN_STATE = 8

# Hash constants read from memory anyway: taken from _spec itself.
cdef uint64_t _GOLDEN = _spec.GOLDEN
cdef uint64_t _V4_TAG = _spec.V4_TAG
cdef uint64_t _PORT_SALT = _spec.PORT_SALT
cdef uint64_t _FNV_OFFSET = _spec.FNV_OFFSET
cdef uint64_t _LIMIT_SALT = _spec.LIMIT_SALT
cdef double _MAX_TIME = _spec.MAX_TIME            # |now| is at most this
cdef uint32_t _MAX_ACTIVE = _spec.MAX_ACTIVE      # open connections one entry can count
# Multipliers stay literals, so they fold into the multiply instructions.
cdef extern from *:
    """
    #define CG_FMIX_C1 0xFF51AFD7ED558CCDULL
    #define CG_FMIX_C2 0xC4CEB9FE1A85EC53ULL
    #define CG_XORSHIFT_STAR 0x2545F4914F6CDD1DULL
    """
    const uint64_t CG_FMIX_C1
    const uint64_t CG_FMIX_C2
    const uint64_t CG_XORSHIFT_STAR

cdef object RawStats = _spec.RawStats
cdef object RawRecord = _spec.RawRecord


def _check_spec():
    """Raise ImportError naming every C value that disagrees with _spec."""
    pairs = [
        ("MAX_CLASSES", _MAX_CLASSES, _spec.MAX_CLASSES),
        ("EVICTION_SAMPLES", _SAMPLES, _spec.EVICTION_SAMPLES),
        ("MAX_SOURCE_LENGTH", _MAX_SOURCE, _spec.MAX_SOURCE_LENGTH),
        ("COUNT_MAX", _COUNT_MAX, _spec.COUNT_MAX),
        ("SKETCH_BITS", _SKETCH_BITS, _spec.SKETCH_BITS),
        ("UNTRACKED_SLOTS", _UNTRACKED_SLOTS, _spec.UNTRACKED_SLOTS),
        ("MAX_ACTIVE", 0xFFFFFFFF, _spec.MAX_ACTIVE),
        ("CAPPED", _CAPPED, _spec.CAPPED),
        ("PATTERN_COUNT", _PATTERN_COUNT, _spec.PATTERN_COUNT),
        ("TRIGGER_COUNT", _TRIGGER_COUNT, _spec.TRIGGER_COUNT),
        ("PATTERN_STATE_RATIO", _PATTERN_STATE_RATIO, _spec.PATTERN_STATE_RATIO),
        ("PATTERN_STATE_MIN", _PATTERN_STATE_MIN, _spec.PATTERN_STATE_MIN),
        ("PATTERN_STATE_MAX", _PATTERN_STATE_MAX, _spec.PATTERN_STATE_MAX),
        ("GROUP_SHIFT", _GROUP_SHIFT, _spec.GROUP_SHIFT),
        ("len(Group)", _GROUPS, len(_spec.Group)),
        ("Pattern.CONN_FLOOD", _FLOOD, _spec.Pattern.CONN_FLOOD),
        ("Pattern.CONN_RATE", _RATE, _spec.Pattern.CONN_RATE),
        ("REFUSED", VERDICT_REFUSED, _spec.REFUSED),
        ("VERDICT_CODES", VERDICT_CODES, _spec.VERDICT_CODES),
        ("FMIX_C1", CG_FMIX_C1, _spec.FMIX_C1),
        ("FMIX_C2", CG_FMIX_C2, _spec.FMIX_C2),
        ("XORSHIFT_STAR", CG_XORSHIFT_STAR, _spec.XORSHIFT_STAR),
    ]
    pairs += [(f"Group.{m.name}", c, m) for c, m in zip(
        (GROUP_SPAM, GROUP_SCAN, GROUP_CRED, GROUP_DNS), _spec.Group, strict=True)]
    pairs += [(f"TopBy.{m.name}", c, m) for c, m in zip(
        (TOP_ACTIVE, TOP_TOTAL, TOP_RATE, TOP_FLAGGED), _spec.TopBy, strict=True)]
    pairs += [(f"Take.{m.name}", c, m) for c, m in zip(
        (TAKE_ALLOWED, TAKE_WARNING, TAKE_VIOLATION, TAKE_ABUSE), _spec.Take, strict=True)]
    pairs += [(f"Reason.{m.name}", c, m) for c, m in zip(
        (REASON_NONE, REASON_BANNED, REASON_OVERFLOW, REASON_LIMIT, REASON_FLOOD), _spec.Reason, strict=True)]
    pairs += [(f"Broken.{m.name}", c, m) for c, m in zip(
        (BROKEN_NONE, BROKEN_OVER_CAPACITY, BROKEN_INDEX, BROKEN_ACTIVE_SOURCES,
         BROKEN_ACTIVE_CONNECTIONS, BROKEN_FLAGGED_SOURCES, BROKEN_FLAGGED_BY, BROKEN_UNTRACKED,
         BROKEN_PATTERN_STATE),
        _spec.Broken, strict=True)]
    wrong = [f"{name}: C {c} != _spec {int(py)}" for name, c, py in pairs if c != py]
    if VERDICT_CODES > CG_STRIPE_WORDS - 8:             # see CG_STRIPE_WORDS
        wrong.append(f"VERDICT_CODES: {VERDICT_CODES} > {CG_STRIPE_WORDS - 8}, the counters "
                     "a stripe has room for a cache line apart")
    if wrong:
        raise ImportError("connguard._core_c disagrees with connguard._spec: " + "; ".join(wrong))


_check_spec()
