"""A Guard around an ``asyncio.start_server`` client handler.

    server = await asyncio.start_server(guarded(guard, handle), "127.0.0.1", 8080)

needs nothing beyond the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ..guard import Guard, _GuardAPI

__all__ = ["guarded"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Destination = str | Callable[[asyncio.StreamWriter], str] | None

#: Seconds a refused connection's close may take before it is abandoned.
_CLOSE_TIMEOUT = 5.0


def guarded(guard: Guard, handler: Handler, *, destination: Destination = None) -> Handler:
    """Wrap ``handler`` so every connection is opened in ``guard`` first.

    Important:
    1. The source is the transport's peername. A connection without an
       address to key (a Unix socket) runs unguarded and uncounted.
    2. A refused connection (``enforce=True``: banned, limited, flooding) is
       closed at once and the handler never runs.
    3. The connection is closed in the guard when the handler ends:
       normally, by an exception or by cancellation (which propagate, after
       the writer is closed: the handler can no longer do it). Its
       bytes are counted from the stream: ``sent`` is what the client sent
       (data that reached the reader, read or not), ``received`` what was
       written to it.
    4. ``destination`` is a str, a callable given the writer (for a server
       that knows where each connection goes), or None for none. A proxy
       that learns the destination only from the client's first request
       should call ``guard.open`` itself once it has read it (see the
       README's proxy section).
    """
    if not isinstance(guard, _GuardAPI):
        raise TypeError(f"guard must be a connguard Guard, not {type(guard).__name__}")
    if not callable(handler):
        raise TypeError("handler must be an async callable (reader, writer)")
    if destination is not None and not (isinstance(destination, str) or callable(destination)):
        raise TypeError("destination must be a str, a callable(writer) -> str, or None")

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not isinstance(peer, tuple):
            await handler(reader, writer)
            return
        where = destination(writer) if callable(destination) else destination or ""
        conn = guard.open(peer, where)
        if not conn:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), _CLOSE_TIMEOUT)
            return
        counts = _count_bytes(reader, writer)
        try:
            await handler(reader, writer)
        except BaseException:
            writer.close()           # the handler cannot any more
            raise
        finally:
            conn.close(sent=counts[0], received=counts[1])

    return client


def _count_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[int]:
    """Count what reaches ``reader`` and what goes through ``writer``: [in, out]."""
    counts = [0, 0]
    feed, write, writelines = reader.feed_data, writer.write, writer.writelines

    def feed_data(data: bytes) -> None:
        counts[0] += len(data)
        feed(data)

    def write_data(data: Any) -> None:
        counts[1] += len(data)
        write(data)

    def write_lines(data: Any) -> None:
        chunks = list(data)
        counts[1] += sum(len(chunk) for chunk in chunks)
        writelines(chunks)

    reader.feed_data = feed_data            # type: ignore[method-assign, assignment]
    writer.write = write_data               # type: ignore[method-assign]
    writer.writelines = write_lines         # type: ignore[method-assign]
    return counts
