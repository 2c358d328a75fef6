"""Stream entries: what a fleet node writes with XADD and what it reads back, checked.

An entry is flat string fields. An infraction is ``id``, ``source``,
``kind``, ``created`` (wall-clock seconds), ``node`` and ``run``; a command
adds ``type`` ("ban" or "unban") and, for a ban, ``duration`` (seconds), and
has no ``kind``. An entry without ``type`` is an infraction. ``run`` is a
random token of the publishing RedisFleet: a node tells its own entries from
those of another process given the same node id by it (entries of versions
before it have none). Nothing here imports redis.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..bans.wire import (
    MAX_ID_LENGTH,
    MAX_NODE_LENGTH,
    MAX_SOURCE_LENGTH,
    Infraction,
    read_infraction,
)

__all__ = ["BAN", "INFRACTION", "UNBAN", "Command", "Malformed", "UnknownType", "ban_fields",
           "command_id", "infraction_fields", "read_entry", "unban_fields"]

INFRACTION, BAN, UNBAN = "infraction", "ban", "unban"
MAX_FIELDS = 16             # an entry with more fields is malformed
MAX_FIELD_BYTES = 256       # nor may a field's name or value be longer (UTF-8 bytes)


class Malformed(ValueError):
    """An entry that is not one: too big, not UTF-8, a field missing or wrong."""


class UnknownType(ValueError):
    """An entry of a type this version does not know (a newer node may write it)."""


class Command(NamedTuple):
    """A ban or unban entry as read: an operator's command, passed on by its node."""

    type: str           # BAN or UNBAN
    id: str
    source: str
    created: float      # wall-clock seconds on the sending node
    node: str
    duration: float     # seconds, as sent (0.0 for an unban); receivers clamp it
    run: str | None     # the publishing RedisFleet's token (None: an older version's entry)


def infraction_fields(infraction: Infraction, run: str) -> dict[str, str]:
    """The entry of a local infraction; penalty and expiry stay home (receivers use their own)."""
    return {"id": infraction.id, "source": infraction.source, "kind": infraction.kind,
            "created": repr(infraction.created), "node": infraction.node, "run": run}


def command_id(node: str, kind: str) -> str:
    """A new id for a ban or unban entry: the node, the type and random bits; <= 200 characters."""
    return f"{node}:{kind}:{os.urandom(8).hex()}"


def ban_fields(ident: str, source: str, duration: float, created: float, node: str,
               run: str) -> dict[str, str]:
    return {"type": BAN, "id": ident, "source": source, "created": repr(created), "node": node,
            "run": run, "duration": repr(duration)}


def unban_fields(ident: str, source: str, created: float, node: str, run: str) -> dict[str, str]:
    return {"type": UNBAN, "id": ident, "source": source, "created": repr(created), "node": node,
            "run": run}


def read_entry(fields: Mapping[Any, Any]) -> dict[str, Any] | Command:
    """Check an entry as redis-py returns it (bytes or str names and values).

    Important:
    1. Returns an infraction as a mapping for ``BanManager.apply`` (id,
       source, kind, created as a float, node: the fields ``apply`` takes;
       and run, when given, which it ignores; any other field, such as a
       forged penalty, is left out), or a Command for a ban or unban.
    2. Raises UnknownType for a ``type`` it does not know, and Malformed
       (naming the field) for anything else wrong: more than MAX_FIELDS
       fields, a name or value over MAX_FIELD_BYTES bytes or not UTF-8, a
       field missing, too long or not a finite number. The kind and the
       source's syntax are checked by the BanManager, not here.
    """
    if not isinstance(fields, Mapping):
        raise Malformed(f"an entry must be a mapping of fields, not {type(fields).__name__}")
    if len(fields) > MAX_FIELDS:
        raise Malformed(f"an entry has at most {MAX_FIELDS} fields, got {len(fields)}")
    text: dict[str, str] = {}
    for name, value in fields.items():
        text[_text("a field name", name)] = _text(f"field {_name(name)}", value)
    kind = text.get("type", INFRACTION)
    if kind == INFRACTION:
        entry: dict[str, Any] = {name: text[name] for name in ("id", "source", "kind", "node",
                                                               "run") if name in text}
        entry["created"] = _seconds(text, "created")
        try:
            read_infraction(entry)
        except ValueError as exc:
            raise Malformed(str(exc)) from None
        return entry
    if kind not in (BAN, UNBAN):
        raise UnknownType(f"unknown entry type {kind[:40]!r}")
    ident = _bounded(text, "id", MAX_ID_LENGTH)
    source = _bounded(text, "source", MAX_SOURCE_LENGTH)
    node = _bounded(text, "node", MAX_NODE_LENGTH)
    created = _seconds(text, "created")
    duration = 0.0
    if kind == BAN:
        duration = _seconds(text, "duration")
        if duration <= 0.0:
            raise Malformed(f"ban duration must be > 0 seconds, got {duration!r}")
    return Command(kind, ident, source, created, node, duration, text.get("run"))


def _name(name: object) -> str:
    if isinstance(name, bytes):
        return repr(name[:40].decode("utf-8", "replace"))
    return repr(str(name)[:40])


def _text(what: str, value: object) -> str:
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, bytes):
        raw = value
    else:
        raise Malformed(f"{what} must be bytes or str, not {type(value).__name__}")
    if len(raw) > MAX_FIELD_BYTES:
        raise Malformed(f"{what} must be at most {MAX_FIELD_BYTES} bytes, got {len(raw)}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(f"{what} is not UTF-8") from None


def _bounded(text: Mapping[str, str], name: str, limit: int) -> str:
    value = text.get(name)
    if value is None:
        raise Malformed(f"entry is missing {name!r}")
    if not 0 < len(value) <= limit:
        raise Malformed(f"entry {name} must be 1 to {limit} characters, got {len(value)}")
    return value


def _seconds(text: Mapping[str, str], name: str) -> float:
    value = text.get(name)
    if value is None:
        raise Malformed(f"entry is missing {name!r}")
    try:
        seconds = float(value)
    except ValueError:
        raise Malformed(f"entry {name} must be a number of seconds, got {value[:40]!r}") from None
    if not math.isfinite(seconds):
        raise Malformed(f"entry {name} must be finite, got {value[:40]!r}")
    return seconds
