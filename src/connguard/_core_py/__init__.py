"""Pure-Python twin of the compiled core: the same names and observable behaviour.

Each module here pairs with the ``_pxi/`` unit of the same name that
_core_c.pyx includes, and mirrors it function for function, down to the hash
functions, the eviction sampler's random numbers and the order of
floating-point operations, so the two cores agree on every observable. A
change to one is a change to the other, with a differential test
(tests/test_cores_agree.py).

Locking: each Shard's fields are guarded by its ``lock`` (a threading.Lock).
Nothing under a lock calls user code or raises on valid input.
"""

from .bans import BanTable
from .destinations import host_hash
from .guard import GuardTable
from .limits import BucketTable
from .parse import default_clock, parse_source
from .sources import Connection, SourceTable
from .table import Shard, ShardedTable

__all__ = [
    "BanTable",
    "BucketTable",
    "Connection",
    "GuardTable",
    "Shard",
    "ShardedTable",
    "SourceTable",
    "default_clock",
    "host_hash",
    "parse_source",
]
