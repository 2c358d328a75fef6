"""Typing for the compiled core; _core_py has the same names and signatures."""

from collections.abc import Callable
from typing import Any

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
        clock: Callable[[], float] | None,
        seed: int,
    ) -> None: ...
    def accept(self, source: str, destination: str | None = "", now: float | None = None) -> bool: ...
    def close(self, source: str, now: float | None = None) -> bool: ...
    def source_key(self, source: str) -> tuple[int, int, int]: ...
    def stats_raw(self, hi: int, lo: int, now: float | None = None) -> RawStats | None: ...
    def top_raw(self, n: int, by: int, now: float | None = None) -> list[RawStats]: ...
    def counters(self) -> tuple[int, int, int, int, int, int]: ...
    def memory_bytes(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def shards(self) -> int: ...
