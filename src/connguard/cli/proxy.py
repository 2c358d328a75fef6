"""``connguard proxy``: an HTTP CONNECT (and plain HTTP) proxy with a Guard inside.

Every tunnel is opened in the Guard with the requested host:port as its
destination and closed with its byte counts; with ``--enforce`` bans,
limits and ``--max-open`` refuse at the CONNECT (403/429/503). Metrics are
served at ``--metrics`` (prometheus_client's exposition; never an address).
SIGTERM or SIGINT drains the open tunnels and exits 0. uvloop runs the
event loop when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from ..guard import FINDING_KINDS, Guard
from ..integrations.proxy import ConnectProxy
from ..replay.engine import ConfigError, build_tracker
from .replay import _config

__all__ = ["add_parser", "address", "build_guard", "serve_metrics"]

log = logging.getLogger("connguard.proxy")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "proxy", help="run an HTTP CONNECT proxy with a Guard inside",
        description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                        type=address, help="where to accept clients (default 127.0.0.1:8080)")
    parser.add_argument("--metrics", default="127.0.0.1:9108", metavar="HOST:PORT",
                        type=address, help="where to serve /metrics (default 127.0.0.1:9108; "
                        "'off' for none)")
    parser.add_argument("--enforce", action="store_true",
                        help="refuse banned, rate-limited and flooding sources (default: "
                        "monitor only) and ban sources that show a pattern")
    parser.add_argument("--max-open", type=int, metavar="N",
                        help="open tunnels one source may hold (reason 'flood')")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML: [tracker] keywords and pattern sections, as for replay")
    parser.add_argument("--redis", metavar="URL",
                        help="share bans with a fleet over Redis Streams (extra: redis)")
    parser.add_argument("--drain", type=float, default=10.0, metavar="SECONDS",
                        help="on SIGTERM, how long open tunnels may finish (default 10)")
    parser.add_argument("--no-guard", action="store_true", help=argparse.SUPPRESS)  # benchmarks
    parser.set_defaults(run=run)


def address(text: str) -> tuple[str, int] | None:
    """Parse HOST:PORT ([v6]:PORT for IPv6); 'off' is None."""
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def build_guard(config_path: str | None, *, enforce: bool, max_open: int | None) -> Guard:
    """The proxy's Guard: tracker from the config file, patterns reported as
    infractions (so they lead to bans) when enforcing."""
    tracker = build_tracker(_config(config_path))
    return Guard(tracker=tracker, enforce=enforce, max_open=max_open,
                 finding_kinds=FINDING_KINDS if enforce else None)


def serve_metrics(guard: Guard, where: tuple[str, int]) -> tuple[Callable[[], None], int]:
    """Serve the Guard's collector at http://HOST:PORT/metrics (port 0: any free
    one); return the stopper and the port."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise SystemExit("connguard proxy: --metrics needs prometheus_client "
                         "(pip install 'connguard[metrics]'), or pass --metrics off") from None
    from ..metrics import GuardCollector

    registry = CollectorRegistry()
    registry.register(GuardCollector(guard))
    server, thread = start_http_server(where[1], addr=where[0], registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5.0)

    return stop, server.server_port


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    try:
        guard = None if args.no_guard else build_guard(
            args.config, enforce=args.enforce, max_open=args.max_open)
    except (ConfigError, OSError, ValueError, TypeError) as exc:
        print(f"connguard proxy: {exc}", file=sys.stderr)
        return 2
    runner: Any
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    if sys.version_info >= (3, 11):
        runner = asyncio.Runner(loop_factory=loop_factory)
    else:  # pragma: no cover - 3.10
        if loop_factory is not None:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        runner = contextlib.nullcontext()
    with runner:
        main = _main(args, guard)
        return runner.run(main) if sys.version_info >= (3, 11) else asyncio.run(main)


async def _main(args: argparse.Namespace, guard: Guard | None) -> int:
    stop_metrics = None
    if guard and args.metrics:
        stop_metrics, metrics_port = serve_metrics(guard, args.metrics)
    fleet = _fleet(guard, args.redis) if guard and args.redis else None
    proxy = ConnectProxy(guard)
    try:
        server = await proxy.start(*args.listen)
        host, port = server.sockets[0].getsockname()[:2]
        mode = "off" if guard is None else "enforcing" if args.enforce else "monitor only"
        metrics = f", metrics on http://{args.metrics[0]}:{metrics_port}/metrics" \
            if stop_metrics else ""
        print(f"connguard proxy listening on {host}:{port} (guard {mode}{metrics})", flush=True)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
        print("connguard proxy: draining", flush=True)
        await proxy.drain(args.drain)
    finally:
        if fleet is not None:
            fleet.stop()
        if stop_metrics is not None:
            stop_metrics()
    return 0


def _fleet(guard: Guard, url: str) -> Any:
    try:
        from ..fleet.redis import RedisFleet
    except ImportError as exc:
        raise SystemExit(f"connguard proxy: --redis needs the redis extra "
                         f"(pip install 'connguard[redis]'): {exc}") from None
    fleet = RedisFleet(guard.bans, url=url)
    fleet.start()
    return fleet
