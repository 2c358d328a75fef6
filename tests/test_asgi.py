"""GuardMiddleware: hand-made ASGI scopes, then a real uvicorn server on loopback; both cores."""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest

from connguard.integrations.asgi import GuardMiddleware

Make = Callable[..., Any]
Message = MutableMapping[str, Any]

PEER = "198.51.100.1"
BANNED = "203.0.113.7"


class Recorded:
    """A Connection whose opens and closes are written down (the real one does the work)."""

    def __init__(self, conn: Any, source: Any, destination: str, log: list[Recorded]) -> None:
        self.conn, self.source, self.destination = conn, source, destination
        self.closes: list[tuple[int | None, int | None, bool]] = []
        log.append(self)

    def __bool__(self) -> bool:
        return bool(self.conn)

    @property
    def reason(self) -> str | None:
        return self.conn.reason  # type: ignore[no-any-return]

    def close(self, sent: int | None = None, received: int | None = None) -> bool:
        counted = bool(self.conn.close(sent=sent, received=received))
        self.closes.append((sent, received, counted))
        return counted

    @property
    def counted_closes(self) -> list[tuple[int | None, int | None]]:
        return [(s, r) for s, r, counted in self.closes if counted]


def spy(guard: Any) -> list[Recorded]:
    """Record every guard.open the middleware makes (the Guard still decides)."""
    opened: list[Recorded] = []
    real_open = guard.open

    def open_(source: Any, destination: str = "") -> Recorded:
        return Recorded(real_open(source, destination), source, destination, opened)

    guard.open = open_
    return opened


def scope(kind: str = "http", client: Any = (PEER, 50000), headers: dict[str, str] | None = None,
          scheme: str | None = None, **extra: Any) -> Message:
    s: Message = {"type": kind, "asgi": {"version": "3.0"}, "path": "/", "client": client,
                  "headers": [(k.encode(), v.encode("latin-1"))
                              for k, v in (headers or {"host": "example.com"}).items()]}
    if scheme is not None:
        s["scheme"] = scheme
    s.update(extra)
    return s


class App:
    """A tiny ASGI app: reads the request body, answers 200 with ``reply``."""

    def __init__(self, reply: bytes = b"hello", chunks: int = 1) -> None:
        self.calls: list[Message] = []
        self.reply, self.chunks = reply, chunks
        self.read = b""

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        self.calls.append(scope)
        more = True
        while more:
            message = await receive()
            self.read += message.get("body", b"")
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(self.chunks):
            await send({"type": "http.response.body", "body": self.reply,
                        "more_body": i < self.chunks - 1})


async def call(mw: GuardMiddleware, s: Message, body: tuple[bytes, ...] = (b"",)) -> list[Message]:
    """Run one request through ``mw``; return what it sent."""
    incoming = [{"type": "http.request", "body": part, "more_body": i < len(body) - 1}
                for i, part in enumerate(body)]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await mw(s, receive, send)
    return sent


def run(mw: GuardMiddleware, s: Message, body: tuple[bytes, ...] = (b"",)) -> list[Message]:
    return asyncio.run(call(mw, s, body))


def status(sent: list[Message]) -> int:
    assert sent[0]["type"] == "http.response.start"
    return int(sent[0]["status"])


def header(sent: list[Message], name: bytes) -> bytes | None:
    return dict(sent[0]["headers"]).get(name)


def body(sent: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


# -- allowed and refused requests ----------------------------------------------


def test_allowed_request_reaches_the_app_and_is_closed_once_with_its_bytes(make_guard: Make) -> None:
    g = make_guard(enforce=True, limiter=False)
    opened = spy(g)
    app = App(reply=b"0123456789", chunks=3)
    seen: list[int] = []

    async def watching(s: Message, receive: Any, send: Any) -> None:
        seen.append(g.tracker.stats(PEER).active)
        await app(s, receive, send)

    sent = run(GuardMiddleware(watching, g), scope(), body=(b"abc", b"defg"))
    assert status(sent) == 200 and body(sent) == b"0123456789" * 3
    assert app.read == b"abcdefg" and seen == [1]
    assert g.tracker.stats(PEER).active == 0 and g.tracker.active_connections == 0
    (conn,) = opened
    assert conn.source == PEER and conn.destination == "example.com:80"
    # From the client's side: it sent the request body and received the response body.
    assert conn.counted_closes == [(7, 30)]


def test_connection_closes_when_the_response_ends_not_when_the_app_returns(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    during: list[int] = []

    async def background_work(s: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        during.append(g.tracker.active_connections)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        during.append(g.tracker.active_connections)    # e.g. a background task running on

    run(GuardMiddleware(background_work, g), scope())
    assert during == [1, 0]
    assert g.tracker.active_connections == 0


def test_response_with_trailers_ends_after_the_trailers(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    during: list[int] = []

    async def trailing(s: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"x", "more_body": False})
        during.append(g.tracker.active_connections)
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})
        during.append(g.tracker.active_connections)

    run(GuardMiddleware(trailing, g), scope())
    assert during == [1, 0]


def test_banned_source_gets_403_and_never_reaches_the_app(make_guard: Make) -> None:
    g = make_guard(enforce=True, limiter=False)
    g.bans.ban(BANNED, 3600)
    app = App()
    sent = run(GuardMiddleware(app, g), scope(client=(BANNED, 1234)))
    assert status(sent) == 403 and app.calls == []
    assert header(sent, b"content-type") == b"text/plain; charset=utf-8"
    assert body(sent) == b"Forbidden\n"
    assert header(sent, b"content-length") == str(len(body(sent))).encode()
    assert header(sent, b"retry-after") is None
    assert g.tracker.stats(BANNED) is None
    # Another source is still served.
    assert status(run(GuardMiddleware(app, g), scope())) == 200 and len(app.calls) == 1


def test_monitor_mode_lets_a_banned_source_through(make_guard: Make) -> None:
    g = make_guard(limiter=False)                  # enforce=False: nothing refused
    g.bans.ban(BANNED, 3600)
    app = App()
    assert status(run(GuardMiddleware(app, g), scope(client=(BANNED, 1)))) == 200
    assert len(app.calls) == 1 and g.tracker.stats(BANNED).total == 1


@pytest.mark.parametrize(("rate", "retry_after"), [(0.5, b"2"), (4.0, b"1"), (1e-6, b"3600")])
def test_rate_limited_source_gets_429_with_retry_after(make_guard: Make, rate: float,
                                                      retry_after: bytes) -> None:
    g = make_guard(enforce=True, limiter={"rate": rate, "burst": 1.0})   # the clock stands still
    app = App()
    mw = GuardMiddleware(app, g)
    assert status(run(mw, scope())) == 200
    sent = run(mw, scope())
    assert status(sent) == 429 and body(sent) == b"Too Many Requests\n"
    assert header(sent, b"retry-after") == retry_after
    assert len(app.calls) == 1 and g.tracker.active_connections == 0


def test_without_a_limiter_retry_after_is_one_second(make_guard: Make) -> None:
    g = make_guard(enforce=True, limiter=False)

    class Limited:
        """Stands in for a limit refusal: the Guard without a limiter gives none."""

        reason = "limit"

        def __bool__(self) -> bool:
            return False

        def close(self, sent: int | None = None, received: int | None = None) -> bool:
            return False

    g.open = lambda source, destination="": Limited()
    sent = run(GuardMiddleware(App(), g), scope())
    assert status(sent) == 429 and header(sent, b"retry-after") == b"1"


def test_flooding_source_gets_503_while_its_first_request_is_open(make_guard: Make) -> None:
    g = make_guard(enforce=True, limiter=False, max_open=1)
    answers: list[list[Message]] = []

    async def scenario() -> None:
        gate = asyncio.Event()

        async def slow(s: Message, receive: Any, send: Any) -> None:
            await gate.wait()
            await App()(s, receive, send)

        mw = GuardMiddleware(slow, g)
        first = asyncio.ensure_future(call(mw, scope()))
        await asyncio.sleep(0)
        answers.append(await asyncio.wait_for(call(mw, scope()), 5))
        gate.set()
        answers.append(await asyncio.wait_for(first, 5))
        answers.append(await asyncio.wait_for(call(mw, scope()), 5))

    asyncio.run(scenario())
    assert [status(a) for a in answers] == [503, 200, 200]
    assert body(answers[0]) == b"Service Unavailable\n"
    assert g.tracker.active_connections == 0


def test_overflow_gets_503(make_guard: Make) -> None:
    g = make_guard(tracker={"capacity": 1, "overflow": "deny"}, limiter=False)
    held: list[int] = []

    async def nested(s: Message, receive: Any, send: Any) -> None:
        # While this request holds the only slot, another source's overflows.
        inner = await call(GuardMiddleware(App(), g), scope(client=("198.51.100.2", 1)))
        held.append(status(inner))
        await App()(s, receive, send)

    assert status(run(GuardMiddleware(nested, g), scope())) == 200
    assert held == [503]


# -- closing on errors and cancellation ------------------------------------------


def test_app_raising_still_closes_exactly_once(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)

    async def broken(s: Message, receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(GuardMiddleware(broken, g), scope())
    (conn,) = opened
    assert conn.counted_closes == [(0, 0)]
    assert g.tracker.active_connections == 0


def test_app_raising_after_the_response_closes_once(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)

    async def late_failure(s: Message, receive: Any, send: Any) -> None:
        await App(reply=b"ok")(s, receive, send)
        raise RuntimeError("after the response")

    with pytest.raises(RuntimeError):
        run(GuardMiddleware(late_failure, g), scope())
    (conn,) = opened
    assert conn.counted_closes == [(0, 2)] and len(conn.closes) == 2   # the second is a no-op
    assert g.tracker.active_connections == 0


def test_cancellation_closes_exactly_once(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    started = []

    async def hangs(s: Message, receive: Any, send: Any) -> None:
        started.append(g.tracker.active_connections)
        await asyncio.sleep(60)

    async def scenario() -> None:
        task = asyncio.ensure_future(call(GuardMiddleware(hangs, g), scope()))
        for _ in range(100):
            if started:
                break
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert started == [1]
    (conn,) = opened
    assert len(conn.counted_closes) == 1
    assert g.tracker.active_connections == 0


# -- source: the direct peer, and forwarding headers from trusted proxies -----------


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored_and_warned_once(
        make_guard: Make, caplog: pytest.LogCaptureFixture) -> None:
    g = make_guard(enforce=True, limiter=False)
    g.bans.ban(PEER, 3600)
    opened = spy(g)
    caplog.set_level(logging.DEBUG, logger="connguard.asgi")
    app = App()
    mw = GuardMiddleware(app, g)
    # A banned client cannot claim another address...
    sent = run(mw, scope(headers={"host": "a", "x-forwarded-for": "192.0.2.50"}))
    assert status(sent) == 403 and app.calls == []
    # ...nor escape onto a banned one, with either header.
    other = ("198.51.100.77", 9)
    for name in ("x-forwarded-for", "forwarded"):
        value = BANNED if name == "x-forwarded-for" else f"for={BANNED}"
        assert status(run(mw, scope(client=other, headers={"host": "a", name: value}))) == 200
    assert [c.source for c in opened] == [PEER, other[0], other[0]]
    warnings = [r for r in caplog.records if r.name == "connguard.asgi"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "trusted_proxies" in warnings[0].getMessage()
    for address in (PEER, BANNED, "192.0.2.50", other[0]):
        assert address not in warnings[0].getMessage()


def test_untrusted_peer_with_trusted_proxies_set_is_also_ignored(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    mw = GuardMiddleware(App(), g, trusted_proxies=["10.0.0.0/8"])
    run(mw, scope(headers={"host": "a", "x-forwarded-for": BANNED}))
    assert [c.source for c in opened] == [PEER]


TRUSTED = ["10.0.0.0/8", "2001:db8:ffff::/48"]


@pytest.mark.parametrize(("peer", "xff", "expected"), [
    ("10.0.0.2", BANNED, BANNED),
    ("10.0.0.2", f"{BANNED}, 10.0.0.1", BANNED),                         # a trusted hop skipped
    ("10.0.0.2", f"192.0.2.99, {BANNED}:5555, 10.1.1.1", BANNED),       # right-most untrusted
    ("10.0.0.2", "2001:db8::7", "2001:db8::7"),
    ("10.0.0.2", "[2001:db8::7]:443, [2001:db8:ffff::1]", "2001:db8::7"),
    ("2001:db8:ffff::9", "192.0.2.5,10.0.0.1", "192.0.2.5"),
    ("::ffff:10.0.0.2", "192.0.2.5", "192.0.2.5"),                     # IPv4-mapped peer
    ("10.0.0.2", "10.0.0.9, 10.0.0.1", "10.0.0.9"),                    # every hop trusted
], ids=["one", "skip-trusted", "right-most", "ipv6", "ipv6-bracket-port", "ipv6-peer",
        "mapped-peer", "all-trusted"])
def test_trusted_x_forwarded_for_resolves_right_most_untrusted(
        make_guard: Make, peer: str, xff: str, expected: str) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    run(GuardMiddleware(App(), g, trusted_proxies=TRUSTED),
        scope(client=(peer, 1), headers={"host": "a", "x-forwarded-for": xff}))
    assert [c.source for c in opened] == [expected]


def test_trusted_chain_lets_a_banned_client_be_refused(make_guard: Make) -> None:
    g = make_guard(enforce=True, limiter=False)
    g.bans.ban(BANNED, 3600)
    app = App()
    mw = GuardMiddleware(app, g, trusted_proxies="10.0.0.0/8")
    proxy = ("10.0.0.2", 40000)
    # The client put a fake address first; the proxy appended the real one.
    spoof = {"host": "a", "x-forwarded-for": f"192.0.2.1, {BANNED}"}
    assert status(run(mw, scope(client=proxy, headers=spoof))) == 403
    fine = {"host": "a", "x-forwarded-for": f"{BANNED}, 192.0.2.1"}
    assert status(run(mw, scope(client=proxy, headers=fine))) == 200
    assert len(app.calls) == 1


@pytest.mark.parametrize(("forwarded", "expected"), [
    (f"for={BANNED}", BANNED),
    (f'for=192.0.2.60;proto=http;by=203.0.113.43, for="{BANNED}:4711", for=10.0.0.1', BANNED),
    ('For="[2001:db8:cafe::17]:4711";proto=https', "2001:db8:cafe::17"),
    ('for="[2001:db8:cafe::17]"', "2001:db8:cafe::17"),
    ('for="\\[2001:db8::5\\]";host="a,b;c", for=10.0.0.1', "2001:db8::5"),   # escapes, quoted , ;
    (f"for=unknown, for={BANNED}", BANNED),           # the walk stops before reaching unknown
    (f'for="{BANNED}:_port"', BANNED),                  # an obfuscated port keeps the address
    ("for=10.0.0.7", "10.0.0.7"),                     # every hop trusted
], ids=["plain", "chain", "ipv6-port", "ipv6", "escapes", "unknown-left", "obfport", "all-trusted"])
def test_trusted_forwarded_header_resolves_right_most_untrusted(
        make_guard: Make, forwarded: str, expected: str) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    run(GuardMiddleware(App(), g, trusted_proxies=TRUSTED, forwarded_header="forwarded"),
        scope(client=("10.0.0.2", 1), headers={"host": "a", "forwarded": forwarded}))
    assert [c.source for c in opened] == [expected]


def test_only_the_named_forwarding_header_is_read(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    proxy = ("10.0.0.2", 1)
    both = {"host": "a", "x-forwarded-for": "192.0.2.1", "forwarded": "for=192.0.2.2"}
    run(GuardMiddleware(App(), g, trusted_proxies=TRUSTED), scope(client=proxy, headers=both))
    run(GuardMiddleware(App(), g, trusted_proxies=TRUSTED, forwarded_header="forwarded"),
        scope(client=proxy, headers=both))
    run(GuardMiddleware(App(), g, trusted_proxies=TRUSTED, forwarded_header="forwarded"),
        scope(client=proxy, headers={"host": "a", "x-forwarded-for": "192.0.2.1"}))
    assert [c.source for c in opened] == ["192.0.2.1", "192.0.2.2", "10.0.0.2"]


def test_repeated_forwarding_headers_are_one_list(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    s = scope(client=("10.0.0.2", 1))
    s["headers"] += [(b"x-forwarded-for", b"192.0.2.1"), (b"x-forwarded-for", b"10.0.0.5")]
    run(GuardMiddleware(App(), g, trusted_proxies=TRUSTED), s)
    assert [c.source for c in opened] == ["192.0.2.1"]


@pytest.mark.parametrize("xff", [
    "", " ", "not-an-address", f"{BANNED},,", f"{BANNED}, unknown", f"{BANNED}, _hidden",
    "[2001:db8::1", "[2001:db8::1]x", "[192.0.2.1]", "2001:db8::1]:80", f"{BANNED}:99999",
    f"{BANNED}:", f"{BANNED}:_obf", "2001:db8::1:80x", "999.1.1.1", "\xff\xfe", "fe80::1%eth0",
    "[fe80::1%25eth0]:80",
])
def test_malformed_x_forwarded_for_falls_back_to_the_peer(make_guard: Make, xff: str) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    sent = run(GuardMiddleware(App(), g, trusted_proxies=TRUSTED),
               scope(client=("10.0.0.2", 1), headers={"host": "a", "x-forwarded-for": xff}))
    assert status(sent) == 200
    assert [c.source for c in opened] == ["10.0.0.2"]


@pytest.mark.parametrize("forwarded", [
    "", "for", "for=", "for=;", f"for={BANNED};for=192.0.2.1", 'for="[2001:db8::1]', 'for="a\\',
    f"for={BANNED},", f"for={BANNED},,for=192.0.2.1", f"proto=https, for={BANNED}x",
    f"for={BANNED}, proto=https", f"for={BANNED}, for=unknown", f"for={BANNED}, for=_hidden",
    f"for={BANNED} x", f'for="{BANNED}"x', "=1", "for=[2001:db8::1]:99999",
])
def test_malformed_forwarded_falls_back_to_the_peer(make_guard: Make, forwarded: str) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    sent = run(GuardMiddleware(App(), g, trusted_proxies=TRUSTED, forwarded_header="forwarded"),
               scope(client=("10.0.0.2", 1), headers={"host": "a", "forwarded": forwarded}))
    assert status(sent) == 200
    assert [c.source for c in opened] == ["10.0.0.2"]


def test_forwarded_address_the_guard_refuses_to_parse_counts_under_the_peer(
        make_guard: Make) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    recording_open = g.open

    def picky_open(source: Any, destination: str = "") -> Any:
        if source != "10.0.0.2":
            raise ValueError("the core takes no such address")
        return recording_open(source, destination)

    g.open = picky_open
    app = App()
    sent = run(GuardMiddleware(app, g, trusted_proxies=TRUSTED),
               scope(client=("10.0.0.2", 1), headers={"host": "a", "x-forwarded-for": BANNED}))
    assert status(sent) == 200 and len(app.calls) == 1
    assert [c.source for c in opened] == ["10.0.0.2"]
    assert g.tracker.tracked_sources == 1 and g.tracker.active_connections == 0


@pytest.mark.parametrize("client", [None, (), ("testclient", 50000), ["/tmp/sock", None], (None, 0)])
def test_client_that_is_no_address_passes_through_uncounted(
        make_guard: Make, client: Any, caplog: pytest.LogCaptureFixture) -> None:
    g = make_guard(enforce=True, limiter=False)
    caplog.set_level(logging.DEBUG, logger="connguard.asgi")
    app = App()
    mw = GuardMiddleware(app, g)
    for _ in range(2):
        assert status(run(mw, scope(client=client))) == 200
    assert len(app.calls) == 2
    assert g.tracker.tracked_sources == 0
    notes = [r for r in caplog.records if r.name == "connguard.asgi"]
    assert len(notes) == 1 and notes[0].levelno == logging.DEBUG
    assert "testclient" not in notes[0].getMessage() and "/tmp/sock" not in notes[0].getMessage()


def test_client_given_as_a_list_is_read(make_guard: Make) -> None:
    g = make_guard(enforce=True, limiter=False)
    g.bans.ban(BANNED, 3600)
    assert status(run(GuardMiddleware(App(), g), scope(client=[BANNED, 1234]))) == 403


def test_malformed_headers_list_still_counts_the_peer(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    s = scope()
    s["headers"] = [(b"host", b"example.com"), (b"broken",)]
    assert status(run(GuardMiddleware(App(), g), s)) == 200
    assert [(c.source, c.destination) for c in opened] == [(PEER, "example.com:80")]


# -- destination ---------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "scheme", "host", "expected"), [
    ("http", None, "example.com", "example.com:80"),
    ("http", "https", "Example.COM", "Example.COM:443"),
    ("http", "http", "example.com:8080", "example.com:8080"),
    ("http", "https", "[2001:db8::1]", "[2001:db8::1]:443"),
    ("http", "http", "[2001:db8::1]:8443", "[2001:db8::1]:8443"),
    ("http", "http", None, ""),
    ("http", "http", "", ""),
    ("websocket", None, "chat.example", "chat.example:80"),
    ("websocket", "wss", "chat.example", "chat.example:443"),
    ("http", "gopher", "example.com", "example.com"),
])
def test_destination_comes_from_the_host_header(make_guard: Make, kind: str, scheme: str | None,
                                                host: str | None, expected: str) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    headers = {"user-agent": "t"} if host is None else {"host": host}
    s = scope(kind=kind, scheme=scheme, headers=headers)
    if kind == "http":
        run(GuardMiddleware(App(), g), s)
    else:
        asyncio.run(ws_call(GuardMiddleware(echo_ws, g), s, ["hi"]))
    assert [c.destination for c in opened] == [expected]


# -- websocket and lifespan -------------------------------------------------------------


async def echo_ws(s: Message, receive: Any, send: Any) -> None:
    """Accept, echo every text message, return at disconnect."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"] * 2})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def ws_call(mw: GuardMiddleware, s: Message, messages: list[str | bytes]) -> list[Message]:
    incoming: list[Message] = [{"type": "websocket.connect"}]
    incoming += [{"type": "websocket.receive", "text": m} if isinstance(m, str)
                 else {"type": "websocket.receive", "bytes": m} for m in messages]
    incoming.append({"type": "websocket.disconnect", "code": 1000})
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await mw(s, receive, send)
    return sent


def test_websocket_is_counted_until_the_app_returns(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    opened = spy(g)
    sent = asyncio.run(ws_call(GuardMiddleware(echo_ws, g), scope("websocket"),
                               ["hé", b"\x00\x01\x02"]))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.send"]
    (conn,) = opened
    # "hé" is 3 UTF-8 bytes, echoed twice (6); the 3 binary bytes echoed once.
    assert conn.counted_closes == [(6, 9)]
    assert g.tracker.active_connections == 0


@pytest.mark.parametrize("reason", ["banned", "limit"])
def test_refused_websocket_is_closed_with_1008_and_never_reaches_the_app(make_guard: Make,
                                                                       reason: str) -> None:
    g = make_guard(enforce=True, limiter={"rate": 1.0, "burst": 1.0})
    if reason == "banned":
        g.bans.ban(PEER, 3600)
    else:
        assert g.open(PEER)                       # spends the only token
    called: list[Message] = []

    async def app(s: Message, receive: Any, send: Any) -> None:
        called.append(s)

    sent = asyncio.run(ws_call(GuardMiddleware(app, g), scope("websocket"), []))
    assert sent == [{"type": "websocket.close", "code": 1008}] and called == []


def test_refused_websocket_gets_a_denial_response_when_the_server_offers_one(
        make_guard: Make) -> None:
    g = make_guard(enforce=True, limiter=False)
    g.bans.ban(PEER, 3600)
    s = scope("websocket", extensions={"websocket.http.response": {}})
    sent = asyncio.run(ws_call(GuardMiddleware(echo_ws, g), s, []))
    assert [m["type"] for m in sent] == ["websocket.http.response.start",
                                         "websocket.http.response.body"]
    assert sent[0]["status"] == 403 and sent[1]["body"] == b"Forbidden\n"


def test_refused_websocket_whose_client_left_sends_nothing(make_guard: Make) -> None:
    g = make_guard(enforce=True, limiter=False)
    g.bans.ban(PEER, 3600)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.disconnect", "code": 1006}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(GuardMiddleware(echo_ws, g)(scope("websocket"), receive, send))
    assert sent == []


def test_lifespan_and_unknown_scopes_pass_straight_through(make_guard: Make) -> None:
    g = make_guard(enforce=True, limiter=False)
    opened = spy(g)
    seen: list[tuple[str, Any, Any]] = []

    async def app(s: Message, receive: Any, send: Any) -> None:
        seen.append((s["type"], receive, send))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    mw = GuardMiddleware(app, g)
    asyncio.run(mw({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    asyncio.run(mw({"type": "custom.thing", "client": (PEER, 1)}, receive, send))
    assert seen == [("lifespan", receive, send), ("custom.thing", receive, send)]
    assert opened == [] and g.tracker.tracked_sources == 0


# -- construction -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-a-network", "10.0.0.1/8", "2001:db8::/129"])
def test_bad_trusted_proxies_raise_value_error_naming_them(make_guard: Make, bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad).replace("[", r"\[").replace(".", r"\.")):
        GuardMiddleware(App(), make_guard(), trusted_proxies=["10.0.0.0/8", bad])


def test_trusted_proxies_take_networks_addresses_and_one_string(make_guard: Make) -> None:
    import ipaddress

    mw = GuardMiddleware(App(), make_guard(), trusted_proxies=[
        "192.0.2.1", ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_address("2001:db8::1")])
    assert [str(n) for n in mw.trusted_proxies] == ["192.0.2.1/32", "10.0.0.0/8", "2001:db8::1/128"]
    one = GuardMiddleware(App(), make_guard(), trusted_proxies="10.0.0.0/8")
    assert [str(n) for n in one.trusted_proxies] == ["10.0.0.0/8"]


def test_bad_arguments_raise(make_guard: Make) -> None:
    g = make_guard()
    with pytest.raises(TypeError, match="trusted_proxies"):
        GuardMiddleware(App(), g, trusted_proxies=[10])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="trusted_proxies"):
        GuardMiddleware(App(), g, trusted_proxies=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="forwarded_header"):
        GuardMiddleware(App(), g, forwarded_header="x-real-ip")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Guard"):
        GuardMiddleware(App(), object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ASGI"):
        GuardMiddleware(None, g)  # type: ignore[arg-type]


# -- a real uvicorn server on loopback ----------------------------------------------------------


class Lifespan(App):
    """App that also answers lifespan, to show it passes through a real server."""

    def __init__(self) -> None:
        super().__init__(reply=b"served")
        self.lifespan: list[str] = []

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await super().__call__(scope, receive, send)
            return
        while True:
            message = await receive()
            self.lifespan.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


@pytest.fixture
def served(make_guard: Make) -> Iterator[tuple[int, Any, Lifespan]]:
    """uvicorn on 127.0.0.1, on a free port, in a thread; stopped and joined after the test."""
    uvicorn = pytest.importorskip("uvicorn")
    g = make_guard(enforce=True, limiter=False)
    app = Lifespan()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # proxy_headers=False: the middleware sees the real peer, not uvicorn's rewrite.
    config = uvicorn.Config(GuardMiddleware(app, g), lifespan="on", log_level="warning",
                            proxy_headers=False, access_log=False, http="h11", ws="none",
                            log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert server.started, "uvicorn did not start within 10 s"
        yield port, g, app
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop within 10 s"
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]


def request(port: int, source: str, n: int = 1, xff: str | None = None) -> list[tuple[int, bytes]]:
    """n requests on one keep-alive connection from ``source``; (status, body) each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        answers = []
        for _ in range(n):
            headers = {} if xff is None else {"X-Forwarded-For": xff}
            conn.request("GET", "/", headers=headers)
            response = conn.getresponse()
            answers.append((response.status, response.read()))
        return answers
    finally:
        conn.close()


def settled(guard: Any) -> int:
    """Active connections once the server has closed what it answered (bounded wait)."""
    deadline = time.monotonic() + 5
    while guard.tracker.active_connections and time.monotonic() < deadline:
        time.sleep(0.005)
    return int(guard.tracker.active_connections)


def test_under_uvicorn_allowed_and_banned_sources_and_counts_back_to_zero(
        served: tuple[int, Any, Lifespan]) -> None:
    port, g, app = served
    g.bans.ban("127.0.0.3", 3600)
    assert request(port, "127.0.0.2") == [(200, b"served")]
    assert request(port, "127.0.0.3") == [(403, b"Forbidden\n")]
    # A spoofed header from an untrusted peer changes nothing.
    assert request(port, "127.0.0.3", xff="127.0.0.2") == [(403, b"Forbidden\n")]
    assert request(port, "127.0.0.2", xff="127.0.0.3") == [(200, b"served")]
    assert settled(g) == 0
    assert g.tracker.stats("127.0.0.2").total == 2 and g.tracker.stats("127.0.0.3") is None
    assert len(app.calls) == 2 and all(s["client"][0] == "127.0.0.2" for s in app.calls)


def test_under_uvicorn_requests_are_counted_not_tcp_connections(
        served: tuple[int, Any, Lifespan]) -> None:
    port, g, _ = served
    assert request(port, "127.0.0.4", n=3) == [(200, b"served")] * 3     # one keep-alive
    assert settled(g) == 0
    assert g.tracker.stats("127.0.0.4").total == 3
