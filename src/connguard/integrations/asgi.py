"""ASGI middleware: one Guard connection per HTTP request or WebSocket.

``GuardMiddleware(app, guard, *, trusted_proxies=(), forwarded_header="x-forwarded-for")``
wraps any ASGI 3 application (Starlette, FastAPI, Quart, a bare coroutine)
and needs nothing beyond the standard library.

What ASGI lets it see, and what it does with it:

- It counts **requests, not TCP connections**. ASGI hands an application one
  scope per HTTP request or WebSocket; the connection under it stays with
  the server. An HTTP/1.1 keep-alive connection carries many requests one
  after the other and HTTP/2 multiplexes many at once, so a browser that
  holds one connection shows here as a stream of short-lived ones. Size the
  Guard's limiter (and ``max_open``) for requests per source, not
  connections.
- ``http`` and ``websocket`` scopes are counted; ``lifespan`` and every
  other scope type go straight to the application.
- The source is the direct peer, ``scope["client"][0]``. Only when that
  peer lies inside ``trusted_proxies`` is the forwarding header read: the
  source is then the right-most address in it that is not itself a trusted
  proxy (the left-most when every one is). A header that cannot be parsed,
  or whose walk reaches an ``unknown``, obfuscated (``_name``) or missing
  identifier before an untrusted address, counts the request under the
  direct peer; nothing in a header ever fails the request.
- The header read is ``forwarded_header``: ``"x-forwarded-for"`` (the
  default) or ``"forwarded"`` (RFC 7239, its ``for=`` values; quoted
  strings, bracketed IPv6 and ports are understood). Name the one your
  proxy writes: a proxy that writes one usually passes the other through
  from the client untouched, so reading both would let a client choose its
  own address.
- Forwarding headers from a peer outside ``trusted_proxies`` are ignored
  (a client may write anything there) and logged once, as a warning on the
  ``connguard.asgi`` logger without any address: most likely a proxy in
  front that ``trusted_proxies`` does not name, so every client shares the
  proxy's address, its limit and its bans.
- The server may already rewrite ``scope["client"]`` from these headers:
  uvicorn does by default (``--proxy-headers``) for the peers in
  ``--forwarded-allow-ips`` (127.0.0.1 unless set), hypercorn and others
  can too. Use the server's handling or ``trusted_proxies``, not both:
  after the server's rewrite the peer seen here is the client, and a
  header the client wrote could be read again.
- A request whose ``scope["client"]`` is missing (a Unix socket, some test
  clients) or is not an IP address (Starlette's TestClient says
  ``"testclient"``) is passed to the application uncounted, with one debug
  log line the first time.
- The destination is the ``Host`` header as the Guard classifies it,
  ``host:port``, the port taken from the scheme when the header has none
  (http and ws 80, https and wss 443); ``""`` when there is no Host header.

A refused request (a falsy ``guard.open``, which only ``Guard(enforce=True)``
or an ``overflow="deny"`` tracker gives) never reaches the application: it
is answered 403 for "banned", 429 with ``Retry-After`` for "limit" (the
seconds one limiter token takes to come back, at least 1 and at most 3600;
1 when the Guard has no limiter), and 503 for "overflow", "flood" or any
other reason, with a short ``text/plain`` body. A refused WebSocket is
answered with the same status through the server's WebSocket Denial
Response extension when ``scope["extensions"]`` offers
``"websocket.http.response"``, else closed with code 1008 (policy
violation) before the handshake completes (servers answer that with 403).

An allowed request's connection is closed exactly once: when the final
part of the response has been sent (the last ``http.response.body``, or the
trailers when the response announced some), or else when the application
returns, raises or is cancelled; a WebSocket's when the application
returns, raises or is cancelled. Its bytes follow the Guard's convention,
from the client's side: ``sent`` is the request body bytes the application
read through ``receive`` (WebSocket: the message bytes it received, text
counted as UTF-8), ``received`` is the response body bytes it sent
(WebSocket: the message bytes it sent). Bodies the server handles itself
(``http.response.pathsend``, ``http.response.zerocopysend``) make
``received`` unknown (None); headers are never counted.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ..guard import Guard, _GuardAPI
from ._http import REFUSAL_STATUS, retry_after

if TYPE_CHECKING:
    from ..tracker import Connection

__all__ = ["GuardMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
NetworkLike: TypeAlias = str | _Network | _Address

log = logging.getLogger("connguard.asgi")

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HEADERS = frozenset({"x-forwarded-for", "forwarded"})
_WS_POLICY_VIOLATION = 1008

# reason -> (status, body); any reason not here is answered as "overflow".
_REFUSALS: dict[str | None, tuple[int, bytes]] = {
    reason: (status, f"{phrase}\n".encode()) for reason, (status, phrase) in REFUSAL_STATUS.items()}


def _networks(trusted: Iterable[NetworkLike] | NetworkLike) -> tuple[_Network, ...]:
    """Parse trusted_proxies up front; a bad entry raises ValueError naming it."""
    if isinstance(trusted, (str, ipaddress.IPv4Network, ipaddress.IPv6Network,
                            ipaddress.IPv4Address, ipaddress.IPv6Address)):
        trusted = (trusted,)
    try:
        entries = list(trusted)
    except TypeError:
        raise TypeError("trusted_proxies must be an iterable of networks ('10.0.0.0/8', "
                        f"'2001:db8::/32', '192.0.2.1'), not {type(trusted).__name__}") from None
    networks: list[_Network] = []
    for entry in entries:
        if isinstance(entry, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            networks.append(entry)
        elif isinstance(entry, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            networks.append(ipaddress.ip_network(entry))
        elif isinstance(entry, str):
            try:
                networks.append(ipaddress.ip_network(entry.strip()))
            except ValueError as exc:
                raise ValueError(f"trusted_proxies: {entry!r} is not a network: {exc}") from None
        else:
            raise TypeError("trusted_proxies entries must be str or ipaddress networks, not "
                            f"{type(entry).__name__}")
    return tuple(networks)


def _port_ok(text: str, obfuscated: bool) -> bool:
    if text.isascii() and text.isdigit():
        return len(text) <= 5 and int(text) <= 65535
    # RFC 7239 obfport: "_" followed by ALPHA / DIGIT / "." / "_" / "-"
    return obfuscated and _obfuscated(text)


def _obfuscated(text: str) -> bool:
    return (len(text) > 1 and text[0] == "_" and text.isascii()
            and all(c.isalnum() or c in "._-" for c in text[1:]))


def _node(text: str, forwarded: bool) -> _Address | None:
    """The address of one forwarding entry: "192.0.2.1", "192.0.2.1:80",
    "2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:443".

    None for anything else, including "unknown", obfuscated identifiers and
    IPv6 zones ("fe80::1%eth0"): the walk stops there.
    """
    host = text
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1:]
        if end < 0 or (rest and not (rest[0] == ":" and _port_ok(rest[1:], forwarded))):
            return None
        host = text[1:end]
        version = 6
    elif text.count(":") == 1:
        host, port = text.split(":")
        if not _port_ok(port, forwarded):
            return None
        version = 4
    else:
        version = 0
    if "%" in host:                           # a zone is only meaningful on its own host
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if version and address.version != version else address


def _forwarded_for(value: str) -> list[str | None] | None:
    """The for= value of each element of an RFC 7239 Forwarded header, in order.

    An element without for= gives None. Returns None when the header is
    malformed (empty elements, a pair without "=", an unterminated quoted
    string, for= twice in one element).
    """
    fors: list[str | None] = []
    current: str | None = None
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in " \t":
            i += 1
        eq = value.find("=", i)
        if eq <= i:
            return None
        name = value[i:eq].strip().lower()
        if not name or any(c in name for c in ',;" \t'):
            return None
        j = eq + 1
        if j < n and value[j] == '"':
            chars: list[str] = []
            j += 1
            while j < n and value[j] != '"':
                if value[j] == "\\":
                    j += 1
                    if j == n:
                        return None
                chars.append(value[j])
                j += 1
            if j == n:
                return None
            j += 1
            text = "".join(chars)
        else:
            start = j
            while j < n and value[j] not in ',;" \t':
                j += 1
            text = value[start:j]
            if not text:
                return None
        if name == "for":
            if current is not None:
                return None
            current = text
        while j < n and value[j] in " \t":
            j += 1
        if j == n:
            fors.append(current)
            return fors
        if value[j] == ",":
            fors.append(current)
            current = None
        elif value[j] != ";":
            return None
        i = j + 1


class GuardMiddleware:
    """Count every HTTP request and WebSocket of an ASGI 3 app in a Guard.

    ``guard.open(source, destination)`` before the application runs; a
    refused one is answered here (403, 429 or 503) and never reaches it; an
    allowed one is closed once when its response (or WebSocket) ends. See
    the module docstring for what ASGI can and cannot show, how the source,
    the destination and the byte counts are found, and how it works with a
    server's own proxy-header handling.

    ``trusted_proxies``: networks ("10.0.0.0/8", "2001:db8::/32") or
    addresses of the proxies in front, as str or ipaddress objects; a single
    str is one network. A bad entry raises ValueError naming it.
    ``forwarded_header``: "x-forwarded-for" or "forwarded", the header
    those proxies write (read only from a trusted peer).
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        guard: Guard,
        *,
        trusted_proxies: Iterable[NetworkLike] | NetworkLike = (),
        forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, not {type(app).__name__}")
        if not isinstance(guard, _GuardAPI):
            raise TypeError(f"guard must be a connguard Guard, not {type(guard).__name__}")
        header = forwarded_header.lower() if isinstance(forwarded_header, str) else None
        if header not in _HEADERS:
            raise ValueError("forwarded_header must be 'x-forwarded-for' or 'forwarded', "
                             f"got {forwarded_header!r}")
        self.app: ASGIApp = app
        self._guard = guard
        self._trusted = _networks(trusted_proxies)
        self._rfc7239 = header == "forwarded"
        self._retry_after = retry_after(guard)
        self._warned_untrusted = False
        self._noted_uncounted = False

    @property
    def guard(self) -> Guard:
        """The Guard every request and WebSocket is opened in."""
        return self._guard

    @property
    def trusted_proxies(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The parsed trusted_proxies networks."""
        return self._trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        conn = self._open(scope)
        if conn is None:
            await self.app(scope, receive, send)
        elif not conn:
            status, body = _REFUSALS.get(conn.reason, _REFUSALS["overflow"])
            if kind == "http":
                await self._refuse_http(send, status, body)
            else:
                await self._refuse_websocket(scope, receive, send, status, body)
        elif kind == "http":
            await self._http(conn, scope, receive, send)
        else:
            await self._websocket(conn, scope, receive, send)

    # -- source and destination ------------------------------------------------

    def _open(self, scope: Scope) -> Connection | None:
        """Open the scope's connection in the Guard; None when it cannot be counted."""
        host: bytes | None = None
        forwarded: list[bytes] = []
        seen_forwarding = False
        wanted = b"forwarded" if self._rfc7239 else b"x-forwarded-for"
        try:
            for name, value in scope.get("headers") or ():
                if name == b"host":
                    if host is None:
                        host = value
                elif name == wanted:
                    forwarded.append(value)
                    seen_forwarding = True
                elif name == b"x-forwarded-for" or name == b"forwarded":
                    seen_forwarding = True
        except (TypeError, ValueError):      # not a list of pairs: count what we have
            pass
        peer = _peer(scope.get("client"))
        if peer is None:
            self._note_uncounted()
            return None
        source = peer
        if seen_forwarding:
            if self._trusted and self._is_trusted(_address(peer)):
                if forwarded:
                    source = self._walk(peer, forwarded)
            elif not self._warned_untrusted:
                self._warned_untrusted = True
                log.warning(
                    "connguard: requests carry X-Forwarded-For or Forwarded headers from a peer "
                    "outside trusted_proxies; they are counted under the peer's address. If a "
                    "proxy or load balancer is in front, pass its network as "
                    "GuardMiddleware(trusted_proxies=...) (or let the server rewrite the "
                    "client, not both), or every client shares one address")
        destination = _destination(host, scope)
        try:
            return self._guard.open(source, destination)
        except (ValueError, TypeError):       # not an IP address ("testclient", a path)
            if source is peer:
                self._note_uncounted()
                return None
        # A forwarded address the Guard would not take counts under the peer,
        # so that a header can never take a request out of the count.
        try:
            return self._guard.open(peer, destination)
        except (ValueError, TypeError):
            self._note_uncounted()
            return None

    def _note_uncounted(self) -> None:
        if not self._noted_uncounted:
            self._noted_uncounted = True
            log.debug("connguard: a request whose client is missing or not an IP address was "
                      "passed through uncounted (further ones are not logged)")

    def _is_trusted(self, address: _Address | None) -> bool:
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            mapped: _Address = address.ipv4_mapped
            if any(mapped in network for network in self._trusted):
                return True
        return any(address in network for network in self._trusted)

    def _walk(self, peer: str, values: list[bytes]) -> str:
        """The right-most untrusted address of the forwarding header, else the peer."""
        text = ",".join(value.decode("latin-1") for value in values)
        entries: list[str | None] | None
        if self._rfc7239:
            entries = _forwarded_for(text)
            if entries is None:
                return peer
        else:
            entries = [entry.strip() for entry in text.split(",")]
        address: _Address | None = None
        for entry in reversed(entries):
            address = None if entry is None else _node(entry, self._rfc7239)
            if address is None:
                return peer                   # malformed, unknown or obfuscated: stop
            if not self._is_trusted(address):
                return str(address)
        return peer if address is None else str(address)   # every hop trusted: the first

    # -- answering ---------------------------------------------------------------

    def _refusal_headers(self, status: int, body: bytes) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"text/plain; charset=utf-8"),
                   (b"content-length", str(len(body)).encode())]
        if status == 429:
            headers.append((b"retry-after", str(self._retry_after).encode()))
        return headers

    async def _refuse_http(self, send: Send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": self._refusal_headers(status, body)})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _refuse_websocket(self, scope: Scope, receive: Receive, send: Send, status: int,
                                body: bytes) -> None:
        message = await receive()
        if message.get("type") != "websocket.connect":
            return                            # the client has gone already
        extensions = scope.get("extensions") or {}
        if "websocket.http.response" in extensions:
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": self._refusal_headers(status, body)})
            await send({"type": "websocket.http.response.body", "body": body,
                        "more_body": False})
        else:
            await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION})

    # -- counting allowed ones ---------------------------------------------------

    async def _http(self, conn: Connection, scope: Scope, receive: Receive, send: Send) -> None:
        sent = 0                              # request body bytes the app read
        received: int | None = 0              # response body bytes it sent; None: unknown
        trailers = False

        async def counting_receive() -> Message:
            nonlocal sent
            message = await receive()
            if message.get("type") == "http.request":
                sent += len(message.get("body") or b"")
            return message

        async def counting_send(message: Message) -> None:
            nonlocal received, trailers
            kind = message.get("type")
            if kind == "http.response.start":
                trailers = bool(message.get("trailers", False))
                await send(message)
                return
            if kind == "http.response.body":
                if received is not None:
                    received += len(message.get("body") or b"")
                last = not message.get("more_body", False)
            elif kind == "http.response.zerocopysend":
                received = None
                last = not message.get("more_body", False)
            elif kind == "http.response.pathsend":
                received = None
                last = True
            elif kind == "http.response.trailers":
                last = not message.get("more_trailers", False)
                trailers = False
            else:
                last = False
            await send(message)
            if last and not trailers:
                conn.close(sent=sent, received=received)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            conn.close(sent=sent, received=received)

    async def _websocket(self, conn: Connection, scope: Scope, receive: Receive,
                         send: Send) -> None:
        sent = 0                              # message bytes the client sent
        received = 0                          # message bytes (and a denial body) it was sent

        async def counting_receive() -> Message:
            nonlocal sent
            message = await receive()
            if message.get("type") == "websocket.receive":
                sent += _message_bytes(message)
            return message

        async def counting_send(message: Message) -> None:
            nonlocal received
            kind = message.get("type")
            if kind == "websocket.send":
                received += _message_bytes(message)
            elif kind == "websocket.http.response.body":
                received += len(message.get("body") or b"")
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            conn.close(sent=sent, received=received)


def _peer(client: object) -> str | None:
    """The host of scope["client"] (a tuple or a list), or None."""
    if not isinstance(client, (tuple, list)) or not client:
        return None
    host = client[0]
    return host if isinstance(host, str) and host else None


def _address(text: str) -> _Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _destination(host: bytes | None, scope: Scope) -> str:
    """The Host header as "host:port", the port from the scheme when it has none."""
    if not host or not isinstance(host, bytes):
        return ""
    text = host.decode("latin-1").strip()
    if not text:
        return ""
    port = _DEFAULT_PORTS.get(scope.get("scheme") or ("http" if scope["type"] == "http" else "ws"))
    if port is None:
        return text
    if text.startswith("["):
        return f"{text}:{port}" if text.endswith("]") else text
    return text if ":" in text else f"{text}:{port}"


def _message_bytes(message: Message) -> int:
    data = message.get("bytes")
    if data is not None:
        return len(data)
    text = message.get("text")
    if text is None:
        return 0
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))

