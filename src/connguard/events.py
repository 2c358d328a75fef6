"""The process-wide connection listener.

Inbound protocols emit an accept event (+1, source, destination) when they
take a connection and a close event (-1, source) when it ends; one listener
-- a Tracker, a Guard, anything callable -- receives them.

Listeners run synchronously on the emitting thread and must not block. A
listener that raises never breaks the emitter: the exception is caught,
counted (``listener_errors()``) and logged at most once a minute.

The listener is one module global: reading it is atomic, on free-threaded
builds too, so ``notify`` with no listener costs one read and a None check.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple

from . import _core, _core_py

__all__ = [
    "ACCEPT",
    "CLOSE",
    "Connection",
    "Event",
    "acquire",
    "connection",
    "listener_errors",
    "notify",
    "notify_accept",
    "notify_close",
    "set_listener",
]

ACCEPT = 1
CLOSE = -1

log = logging.getLogger("connguard.events")

Listener = Callable[["Event"], object]


class Event(NamedTuple):
    """One accepted (``direction`` ACCEPT, +1) or closed (CLOSE, -1) connection.

    A close event names its destination when the emitter knows it (a
    Connection does; notify_close does not) and carries the bytes the
    source sent and received on the connection: None when unknown, 0 when
    nothing was transferred.
    """

    direction: int
    source: str
    destination: str = ""
    sent: int | None = None
    received: int | None = None

    @property
    def state(self) -> int:
        """Deprecated name of ``direction``."""
        warnings.warn("Event.state is deprecated; use Event.direction", DeprecationWarning,
                      stacklevel=2)
        return self.direction


def byte_count(value: object) -> int | None:
    """An event's byte count as a listener takes it: an int >= 0, else None (unknown).

    A listener may not raise into the emitter, and a bad count must not
    lose the close it came with, so it is read as unknown.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


_listener: Listener | None = None

# Error accounting; guarded by _errors_lock (only taken when a listener raised).
_errors_lock = threading.Lock()
_errors = 0
_suppressed = 0
_last_logged = -float("inf")
_LOG_EVERY = 60.0


def set_listener(listener: Listener | None) -> None:
    """Install the process-wide listener; the last call wins, None clears it."""
    global _listener
    if listener is not None and not callable(listener):
        raise TypeError(f"a listener must be callable or None, not {type(listener).__name__}")
    _listener = listener


def acquire() -> Listener | None:
    """Return the current listener, or None: hold it to emit both halves of a pair."""
    return _listener


def listener_errors() -> int:
    """Count the exceptions listeners have raised (and connguard has swallowed)."""
    return _errors


def _deliver(listener: Listener, event: Event) -> None:
    """Hand ``event`` to ``listener``; whatever it raises stays here."""
    try:
        listener(event)
    except Exception:
        _count_error()


def _count_error() -> None:
    global _errors, _suppressed, _last_logged
    now = time.monotonic()
    with _errors_lock:
        _errors += 1
        if now - _last_logged < _LOG_EVERY:
            _suppressed += 1
            return
        suppressed, _suppressed, _last_logged = _suppressed, 0, now
    # Logged outside the lock: a logging handler may be slow.
    log.exception("connguard: a connection listener raised (%d more since the last report)",
                  suppressed)


def notify(event: Event) -> None:
    """Send ``event`` to the current listener, if any."""
    listener = _listener
    if listener is not None:
        _deliver(listener, event)


def notify_accept(source: str, destination: str = "") -> None:
    """Send an accept event to the current listener, if any."""
    listener = _listener
    if listener is not None:
        _deliver(listener, Event(ACCEPT, source, destination))


def notify_close(source: str, *, sent: int | None = None, received: int | None = None) -> None:
    """Send a close event to the current listener, if any, with the connection's bytes."""
    listener = _listener
    if listener is not None:
        _deliver(listener, Event(CLOSE, source, "", sent, received))


class Connection:
    """Both halves of one connection, sent to the listener current at accept.

    Emitting accept and close with two separate reads of the registry could
    send them to two listeners if the listener changed in between, leaving
    one with an accept it never sees closed. A Connection holds the listener
    it sent the accept to and sends the close there too, whatever happened
    to the registry since. ``close()`` is idempotent; used as a context
    manager, the close is also sent when the body raises. The close names
    the destination and carries ``sent`` and ``received``: set them on the
    handle (or pass them to close()) as the connection learns its bytes.
    """

    __slots__ = ("_listener", "_source", "_destination", "_closed", "_lock", "_handle", "sent",
                 "received")

    def __init__(self, source: str, destination: str = "") -> None:
        self._source = source
        self._destination = destination
        self.sent: int | None = None          # bytes the source sent; None: unknown
        self.received: int | None = None      # bytes it received
        self._listener = listener = _listener
        self._handle = None
        self._closed = False
        if listener is None:
            return
        if isinstance(listener, _HANDLE_LISTENERS):
            # A Tracker or Guard as the listener: open a handle in it, which
            # counts what the events would and closes without parsing again.
            # A source it cannot take goes the event way (counted unattributed).
            try:
                self._handle = listener.open(source, destination)
                return
            except (ValueError, TypeError):
                pass
        self._lock = threading.Lock()
        _deliver(listener, Event(ACCEPT, source, destination))

    @property
    def source(self) -> str:
        return self._source

    def close(self, sent: int | None = None, received: int | None = None) -> None:
        """Send the close (once, however often this is called), with the bytes given
        here or set on the handle."""
        if sent is not None:
            self.sent = sent
        if received is not None:
            self.received = received
        if self._handle is not None:
            # The handle closes once by itself; bad counts are read as unknown,
            # as a listener reads them, so the close is never lost.
            try:
                self._handle.close(byte_count(self.sent), byte_count(self.received))
            except Exception:
                _count_error()
            return
        if self._listener is None:
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _deliver(self._listener, Event(CLOSE, self._source, self._destination,
                                       self.sent, self.received))

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# Listeners whose connections a Connection opens as handles: the cores'
# tables, which connguard.Tracker and connguard.Guard are built on.
_HANDLE_LISTENERS = (_core.core.SourceTable, _core.core.GuardTable, _core_py.SourceTable,
                     _core_py.GuardTable)


def connection(source: str, destination: str = "") -> Connection:
    """Announce an accepted connection; close the returned handle (or leave its ``with``) when it ends."""
    return Connection(source, destination)
