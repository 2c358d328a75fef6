"""connguard.integrations.asyncio.guarded over real loopback sockets, on both cores."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from connguard.integrations.asyncio import guarded


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


async def _serve(guard: Any, handler: Any) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(guarded(guard, handler, destination="svc.example:443"),
                                        "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_allowed_connection_is_counted_with_its_bytes(make_guard: Callable[..., Any]) -> None:
    g = make_guard(enforce=True)
    seen: list[int] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)
        seen.append(g.tracker.stats("127.0.0.1").active)
        writer.write(data * 2)
        await writer.drain()
        writer.close()

    async def main() -> bytes:
        server, port = await _serve(g, echo)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"12345")
            answer = await reader.read()
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
            return answer

    assert run(main()) == b"1234512345"
    assert seen == [1]
    stats = g.tracker.stats("127.0.0.1")
    assert stats.active == 0 and stats.total == 1


def test_refused_connection_never_reaches_the_handler(make_guard: Callable[..., Any]) -> None:
    g = make_guard(enforce=True)
    g.bans.ban("127.0.0.1", 60)
    called: list[bool] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        called.append(True)

    async def main() -> bytes:
        server, port = await _serve(g, handler)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answer = await reader.read()            # closed at once
            writer.close()
            await writer.wait_closed()
            return answer

    assert run(main()) == b""
    assert not called
    assert g.tracker.stats("127.0.0.1") is None


@pytest.mark.parametrize("ending", ["raise", "cancel"])
def test_handle_closes_when_the_handler_fails(make_guard: Callable[..., Any],
                                              ending: str) -> None:
    g = make_guard()
    async def main() -> None:
        begun = asyncio.Event()
        handlers: list[asyncio.Task[Any] | None] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.append(asyncio.current_task())
            begun.set()
            if ending == "raise":
                raise RuntimeError("handler failed")
            await asyncio.sleep(60)

        server, port = await _serve(g, handler)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: None)   # the handler's error
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await begun.wait()
            if ending == "cancel":
                assert g.tracker.stats("127.0.0.1").active == 1
                task = handlers[0]
                assert task is not None
                task.cancel()
            assert await reader.read() == b""       # the server side was closed
            writer.close()
            await writer.wait_closed()

    run(main())
    assert g.tracker.stats("127.0.0.1").active == 0


def test_arguments_are_checked(make_guard: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match="guard must be"):
        guarded(object(), _nothing)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="destination must be"):
        guarded(make_guard(), _nothing, destination=443)  # type: ignore[arg-type]


async def _nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    pass
