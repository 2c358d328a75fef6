"""Typing for the compiled core; _core_py has the same names and signatures."""

from typing import Any, Callable, Optional

MAX_CLASSES: int
MAX_SOURCE_LENGTH: int
PATTERN_BITS: dict[str, int]
EVICTION_SAMPLES: int
SKETCH_BITS: int
TOP_BY: dict[str, int]

RawStats = tuple[Any, ...]

def parse_source(source: str) -> tuple[int, int]: ...

class Shard: ...

class SourceTable:
    def __init__(
        self,
        *,
        capacity: int,
        shards: int,
        window: float,
        concurrent_threshold: int,
        rate_threshold: float,
        ipv4_prefix: int,
        ipv6_prefix: int,
        deny: bool,
        port_classes: bytes,
        clock: Optional[Callable[[], float]],
        seed: int,
    ) -> None: ...
    def accept(self, source: str, destination: Optional[str] = "", now: Optional[float] = None) -> bool: ...
    def close(self, source: str, now: Optional[float] = None) -> bool: ...
    def source_key(self, source: str) -> tuple[int, int, int]: ...
    def stats_raw(self, hi: int, lo: int, now: Optional[float] = None) -> Optional[RawStats]: ...
    def top_raw(self, n: int, by: int, now: Optional[float] = None) -> list[RawStats]: ...
    def counters(self) -> tuple[int, int, int, int, int, int]: ...
    def memory_bytes(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def shards(self) -> int: ...
