"""An asyncio HTTP proxy with a Guard inside: CONNECT tunnels and plain HTTP forwarding.

What ``connguard proxy`` runs, and a worked example of embedding a Guard in
a proxy that learns each connection's destination from its first request:
the client's connection is read up to the end of its request head, then
opened in the Guard with the requested host:port as destination, and
closed there with its byte counts when the tunnel ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from ..guard import Guard, _GuardAPI
from ._http import REFUSAL_STATUS, retry_after

__all__ = ["ConnectProxy"]

log = logging.getLogger("connguard.proxy")

_CHUNK = 65536
_MAX_HEAD = 16384
# A DNS name (an IPv4 address is one too): labels of 1 to 63 letters, digits,
# '-' or '_', dot-separated, 253 characters at most, with an optional final dot.
_DNS_NAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?", re.ASCII)
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                         "proxy-authenticate", "te", "trailer", "upgrade"})


class BadRequest(ValueError):
    """A request head the proxy cannot serve (answered 400)."""


class ConnectProxy:
    """Tunnels ``CONNECT host:port`` and forwards ``GET http://host/...`` requests.

    Important:
    1. Every tunnel is one ``guard.open(peer, "host:port")`` once the
       request head is read, closed with ``sent`` (client to target) and
       ``received`` (target to client) bytes when the tunnel ends, also on
       errors and cancellation. With ``guard=None`` nothing is counted (the
       benchmark's baseline).
    2. A refused connection gets 403 (banned), 429 (limit, with
       Retry-After) or 503 (overflow, flood) and is closed; nothing is
       connected for it.
    3. A plain HTTP request is forwarded with ``Connection: close``: one
       request per client connection. Only ``http://`` targets are
       forwarded; HTTPS goes through CONNECT.
    4. ``drain(timeout)`` stops accepting, waits for open tunnels, then
       cancels what is left; the Guard's counts are back to zero after it.
    5. ``route(host, port) -> (host, port)``, when given, picks the address
       actually connected to (``connguard demo`` and tests send every
       tunnel to one local target); the Guard still sees what was asked for.
    6. A request head that is not one of those, or names a host that is
       neither a DNS name nor an IP address (an IPv6 zone included), or a
       port outside 1-65535, is answered 400 and nothing is counted or
       connected for it.
    """

    def __init__(self, guard: Guard | None, *, head_timeout: float = 10.0,
                 connect_timeout: float = 10.0,
                 route: Callable[[str, int], tuple[str, int]] | None = None) -> None:
        if guard is not None and not isinstance(guard, _GuardAPI):
            raise TypeError(f"guard must be a connguard Guard or None, not {type(guard).__name__}")
        self.guard = guard
        self._head_timeout = head_timeout
        self._connect_timeout = connect_timeout
        self._route = route
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._retry_after = retry_after(guard) if guard is not None else 1

    async def start(self, host: str, port: int) -> asyncio.Server:
        """Listen on host:port (0: any free port); return the server."""
        self._server = await asyncio.start_server(self._client, host, port, limit=_MAX_HEAD)
        return self._server

    async def drain(self, timeout: float) -> None:
        """Stop accepting; give open tunnels ``timeout`` seconds, then cancel them."""
        if self._server is not None:
            self._server.close()
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        except asyncio.CancelledError:
            # drain() cancelled it: the tunnel is closed below, and the task
            # ends quietly (Python 3.11's streams log a cancelled handler as
            # an error).
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._head_timeout)
            method, destination, host, port, upstream_head = _parse_head(head)
        except (BadRequest, asyncio.LimitOverrunError, UnicodeDecodeError) as exc:
            await _answer(writer, 400, "Bad Request", str(exc) if isinstance(exc, BadRequest)
                          else "request head too long or not ASCII")
            return
        conn = None
        if self.guard is not None:
            conn = self.guard.open(writer.get_extra_info("peername"), destination)
            if not conn:
                status, phrase = REFUSAL_STATUS[conn.reason or "banned"]
                extra = f"Retry-After: {self._retry_after}\r\n" if conn.reason == "limit" else ""
                await _answer(writer, status, phrase, f"refused: {conn.reason}", extra)
                return
        counts = [0, 0]
        try:
            try:
                if self._route is not None:
                    host, port = self._route(host, port)
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), self._connect_timeout)
            except (OSError, ValueError, asyncio.TimeoutError):
                # ValueError: a name the resolver refuses (UnicodeError is one),
                # or a route() that gave no usable address.
                await _answer(writer, 502, "Bad Gateway", f"cannot reach {destination}")
                return
            try:
                if method == "CONNECT":
                    writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                else:
                    up_writer.write(upstream_head)
                    counts[0] += len(head)
                await asyncio.gather(_pipe(reader, up_writer, counts, 0),
                                     _pipe(up_reader, writer, counts, 1))
            finally:
                up_writer.close()
                with contextlib.suppress(Exception):
                    await up_writer.wait_closed()
        finally:
            if conn is not None:
                conn.close(sent=counts[0], received=counts[1])


def _parse_head(head: bytes) -> tuple[str, str, str, int, bytes]:
    """(method, destination "host:port", host, port, head to send upstream) of a request."""
    lines = head.decode("ascii").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest("not an HTTP request line")
    method, target, version = parts
    if method == "CONNECT":
        host, port = _host_port(target, None)
        return method, target, host, port, b""
    try:
        url = urlsplit(target)
    except ValueError:                             # "http://[::1/", an unclosed bracket
        raise BadRequest("bad target URL") from None
    if url.scheme != "http" or not url.netloc:
        raise BadRequest("only CONNECT and absolute http:// targets are proxied")
    host, port = _host_port(url.netloc, 80)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    headers = [line for line in lines[1:] if line
               and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
    upstream = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close", "", ""])
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return method, shown, host, port, upstream.encode("ascii")


def _host_port(authority: str, default: int | None) -> tuple[str, int]:
    if "@" in authority:
        raise BadRequest("credentials in the target are not proxied")
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise BadRequest(f"text after the IPv6 host: {rest[:16]!r}")
        port_text = rest[1:]
        try:
            zoned = ipaddress.IPv6Address(host).scope_id is not None
        except ValueError:
            zoned = True
        if zoned:                                # (a zone names an interface of the client's)
            raise BadRequest(f"bad IPv6 host {host[:40]!r}")
    else:
        host, _, port_text = authority.rpartition(":") if ":" in authority else (authority, "", "")
        if not host:
            raise BadRequest("empty host")
        if not _DNS_NAME.fullmatch(host):
            raise BadRequest(f"bad host {host[:40]!r}")
    if not port_text:
        if default is None:
            raise BadRequest("CONNECT needs host:port")
        return host, default
    if not (len(port_text) <= 5 and port_text.isascii() and port_text.isdigit()
            and 0 < int(port_text) < 65536):
        raise BadRequest(f"bad port {port_text[:8]!r}")
    return host, int(port_text)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: list[int],
                index: int) -> None:
    """Copy until EOF, counting bytes into counts[index]; then half-close the writer."""
    try:
        while data := await reader.read(_CHUNK):
            counts[index] += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _answer(writer: asyncio.StreamWriter, status: int, phrase: str, body: str,
                  extra: str = "") -> None:
    data = body.encode("ascii", "replace") + b"\n"
    writer.write(f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\n{extra}"
                 f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
