"""Infractions and bans as they travel between nodes: dataclasses, mappings, snapshots.

Everything that arrives from elsewhere (``apply``, ``restore``) is checked
here, field by field, before it touches a BanManager: every text field has a
length limit, and an error names the field that was wrong.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Ban", "Incoming", "Infraction", "check_node_id", "check_wall", "read_infraction",
           "snapshot_items"]

SNAPSHOT_VERSION = 1
MAX_ID_LENGTH = 200
MAX_NODE_LENGTH = 128       # an id is node, ":", a counter, ":", 12 hex digits: <= 200
MAX_KIND_LENGTH = 64
MAX_SOURCE_LENGTH = 128     # an address (<= 100 characters) and "/prefix"


class Infraction(NamedTuple):
    """One reported infraction; times are wall-clock seconds. Immutable.

    A named tuple: a node may hold millions (a restored snapshot), and
    tuples are the cheapest immutable records Python has.
    """

    id: str           # unique: node, a per-process counter and random bits
    source: str       # the netblock, as Tracker keys it: "203.0.113.7", "2001:db8::/64"
    kind: str
    penalty: int
    created: float
    expires: float
    node: str

    def to_dict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban in force; ``until`` is wall-clock seconds."""

    source: str
    until: float
    score: int


#: The fields of an infraction from another node that this node takes from
#: it: id, source, kind, created, node. Penalty and expiry are not among them:
#: they come from local policy.
Incoming = tuple[str, str, str, float, str]


_MISSING: Any = object()
_TEXT_FIELDS = (("id", MAX_ID_LENGTH), ("source", MAX_SOURCE_LENGTH), ("kind", MAX_KIND_LENGTH),
                ("node", MAX_NODE_LENGTH))


def read_infraction(data: object) -> Incoming:
    """Check an Infraction or a mapping from another node; raise ValueError naming the field."""
    if type(data) is not dict:                  # the wire's form; checked first for speed
        if isinstance(data, Infraction):        # from elsewhere too: checked like any other
            data = data.to_dict()
        elif not isinstance(data, Mapping):
            raise TypeError(f"an infraction must be an Infraction or a mapping, "
                            f"not {type(data).__name__}")
    get = data.get
    ident, source, kind, node, created = (get("id", _MISSING), get("source", _MISSING),
                                          get("kind", _MISSING), get("node", _MISSING),
                                          get("created", _MISSING))
    # One check for the common case; the slow path below says what was wrong.
    if not (type(ident) is str and 0 < len(ident) <= MAX_ID_LENGTH
            and type(source) is str and 0 < len(source) <= MAX_SOURCE_LENGTH
            and type(kind) is str and 0 < len(kind) <= MAX_KIND_LENGTH
            and type(node) is str and 0 < len(node) <= MAX_NODE_LENGTH
            and type(created) is float and -math.inf < created < math.inf):
        _explain(data)
        created = float(created)                # an int: the only other valid form
    return ident, source, kind, created, node


def _explain(data: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first field of an infraction that is wrong, if any."""
    for name, limit in _TEXT_FIELDS:
        value = data.get(name, _MISSING)
        if value is _MISSING:
            raise ValueError(f"infraction is missing {name!r}")
        if not isinstance(value, str):
            raise ValueError(f"infraction {name} must be a str, not {type(value).__name__}")
        if not 0 < len(value) <= limit:
            raise ValueError(f"infraction {name} must be 1 to {limit} characters, got {len(value)}")
    created = data.get("created", _MISSING)
    if created is _MISSING:
        raise ValueError("infraction is missing 'created'")
    check_wall("infraction created", created)


def check_wall(name: str, value: object) -> None:
    """A wall-clock time from a peer or a caller: a finite int or float (an int
    beyond every float, which JSON may carry, is not); ValueError naming it."""
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) \
            and math.isfinite(value)
    except OverflowError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r:.80}")


def check_node_id(node_id: object) -> str:
    """A node id short enough for every id made from it to be accepted by other
    nodes: 1 to MAX_NODE_LENGTH bytes in UTF-8 (a fleet's entries bound their
    fields in bytes, so characters of several bytes count for them)."""
    size = 0
    if isinstance(node_id, str):
        with contextlib.suppress(UnicodeEncodeError):    # a lone surrogate: no UTF-8 at all
            size = len(node_id.encode("utf-8"))
    if not isinstance(node_id, str) or not 0 < size <= MAX_NODE_LENGTH:
        raise ValueError(f"node_id must be a str of 1 to {MAX_NODE_LENGTH} bytes in UTF-8, "
                         f"got {node_id!r:.80}")
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
