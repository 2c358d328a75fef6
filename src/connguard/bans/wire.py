"""Infractions and bans as they travel between nodes: dataclasses, mappings, snapshots.

Everything that arrives from elsewhere (``apply``, ``restore``) is checked
here, field by field, before it touches a BanManager: every text field has a
length limit, and an error names the field that was wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

__all__ = ["Ban", "Incoming", "Infraction", "check_node_id", "read_infraction", "snapshot_items"]

SNAPSHOT_VERSION = 1
MAX_ID_LENGTH = 200
MAX_NODE_LENGTH = 128       # an id is node, ":", a counter, ":", 12 hex digits: <= 200
MAX_KIND_LENGTH = 64
MAX_SOURCE_LENGTH = 128     # an address (<= 100 characters) and "/prefix"


@dataclass(frozen=True, slots=True)
class Infraction:
    """One reported infraction; times are wall-clock seconds."""

    id: str           # unique: node, a per-process counter and random bits
    source: str       # the netblock, as Tracker keys it: "203.0.113.7", "2001:db8::/64"
    kind: str
    penalty: int
    created: float
    expires: float
    node: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban in force; ``until`` is wall-clock seconds."""

    source: str
    until: float
    score: int


class Incoming(NamedTuple):
    """The fields of an infraction from another node that this node takes from it.

    Penalty and expiry are not among them: they come from local policy.
    """

    id: str
    source: str
    kind: str
    created: float
    node: str


def _text(data: Mapping[str, Any], name: str, limit: int) -> str:
    if name not in data:
        raise ValueError(f"infraction is missing {name!r}")
    value = data[name]
    if not isinstance(value, str):
        raise ValueError(f"infraction {name} must be a str, not {type(value).__name__}")
    if not 0 < len(value) <= limit:
        raise ValueError(f"infraction {name} must be 1 to {limit} characters, got {len(value)}")
    return value


def read_infraction(data: object) -> Incoming:
    """Check an Infraction or a mapping from another node; raise ValueError naming the field."""
    if isinstance(data, Infraction):
        data = data.to_dict()
    if not isinstance(data, Mapping):
        raise TypeError(f"an infraction must be an Infraction or a mapping, not {type(data).__name__}")
    ident = _text(data, "id", MAX_ID_LENGTH)
    source = _text(data, "source", MAX_SOURCE_LENGTH)
    kind = _text(data, "kind", MAX_KIND_LENGTH)
    node = _text(data, "node", MAX_NODE_LENGTH)
    if "created" not in data:
        raise ValueError("infraction is missing 'created'")
    created = data["created"]
    if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created):
        raise ValueError(f"infraction created must be a finite number of seconds, got {created!r}")
    return Incoming(ident, source, kind, float(created), node)


def check_node_id(node_id: object) -> str:
    """A node id short enough for every id made from it to be accepted by other nodes."""
    if not isinstance(node_id, str) or not 0 < len(node_id) <= MAX_NODE_LENGTH:
        raise ValueError(f"node_id must be a str of 1 to {MAX_NODE_LENGTH} characters, got {node_id!r:.80}")
    return node_id


def snapshot_of(infractions: list[Infraction]) -> dict[str, Any]:
    """A JSON-able, versioned snapshot of live infractions, oldest first."""
    infractions.sort(key=lambda i: (i.created, i.id))
    return {"version": SNAPSHOT_VERSION, "infractions": [i.to_dict() for i in infractions]}


def snapshot_items(snapshot: object) -> list[Any]:
    """The infraction entries of a snapshot; ValueError when it is not one."""
    if not isinstance(snapshot, Mapping) or snapshot.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"not a version {SNAPSHOT_VERSION} ban snapshot")
    items = snapshot.get("infractions")
    if not isinstance(items, list):
        raise ValueError("snapshot infractions must be a list")
    return items
