"""A real ``redis-server`` for the fleet tests: loopback only, no persistence, bounded waits.

Import the fixtures into a test module (``from .redis_server import redis_url_fixture``):
``redis_url`` is a server shared by the module's tests (each test uses its own
stream name, ``stream``); ``redis_factory`` makes servers a test may kill and
restart; ``make_node`` builds a BanManager on the core under test and its
RedisFleet. Every test using them is skipped, with the reason, only when no
``redis-server`` binary is on PATH (a failure with CONNGUARD_REQUIRE_REDIS=1,
as .ci/run sets).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from connguard._core import on_core
from connguard.bans import BanManager
from connguard.fleet.redis import RedisFleet

START_TIMEOUT = 10.0
Node = tuple[BanManager, RedisFleet]
MakeNode = Callable[..., Node]
#: Short waits for tests: XREAD blocks 50 ms, reconnects start at 20 ms, sockets time out in 1 s.
FAST: dict[str, Any] = {"block": 0.05, "backoff": (0.02, 0.2), "timeout": 1.0}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def binary() -> str:
    """The redis-server binary; skip without one (fail instead with CONNGUARD_REQUIRE_REDIS=1)."""
    found = shutil.which("redis-server")
    if found is None:
        reason = ("no redis-server binary on PATH (Debian: apt-get install redis-server; "
                  ".ci/run installs it)")
        if os.environ.get("CONNGUARD_REQUIRE_REDIS"):
            pytest.fail(f"CONNGUARD_REQUIRE_REDIS is set and there is {reason}")
        pytest.skip(reason)
    return found


class PortTaken(RuntimeError):
    """redis-server could not bind its port: another process holds it."""


class RedisServer:
    """One redis-server process on 127.0.0.1:<port>, no RDB or AOF; restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.binary = binary()
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self._answered = False                  # a server on self.port has answered

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers.

        free_port() lets go of the port it found before the server binds it,
        so another process may take it meanwhile: a first start that finds
        it taken tries a new port, twice at most. A restart keeps its port.
        """
        for attempt in range(3):
            try:
                self._start_once()
                return
            except PortTaken:
                if self._answered or attempt == 2:
                    raise
                self.port = free_port()

    def _start_once(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.log = self.workdir / f"redis-{self.port}.log"      # servers may share workdir
        self.log.unlink(missing_ok=True)
        early = self.workdir / f"redis-{self.port}.stderr"     # what it says before the log opens
        with early.open("wb") as stderr:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes",
                 "--loglevel", "warning", "--logfile", str(self.log)],
                stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = early.read_text(errors="replace")
                if self.log.exists():
                    log += self.log.read_text(errors="replace")
                kind = PortTaken if "Address already in use" in log else RuntimeError
                raise kind(f"redis-server exited with {self.process.returncode}: {log[-2000:]}")
            if self.answers():
                self._answered = True
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port} "
                           f"within {START_TIMEOUT} s")

    def answers(self) -> bool:
        """Whether the server this object started answers on its port.

        The server's own process id is checked: another redis-server that
        took the port meanwhile answers too, and must not pass for it.
        """
        pid = self.process.pid if self.process is not None else None
        try:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5,
                             socket_connect_timeout=0.5) as r:
                info: Any = r.info("server")
                return bool(info.get("process_id") == pid)
        except (redis.RedisError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL: the server dies as in a crash, taking its (unpersisted) data with it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=START_TIMEOUT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module", name="redis_url")
def redis_url_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server shared by a module's tests; stopped after them."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(name="redis_factory")
def redis_factory_fixture(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Make started servers for one test (to kill and restart); all stopped after it."""
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(tmp_path)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(name="stream")
def stream_fixture() -> str:
    """A stream name of its own for each test."""
    return f"connguard:test:{uuid.uuid4().hex[:12]}"


@pytest.fixture(name="make_node")
def make_node_fixture(core: ModuleType, redis_url: str, stream: str) -> Iterator[MakeNode]:
    """Build a BanManager (node id ``name``) on the core under test and its RedisFleet on
    ``redis_url``/``stream``, started unless ``start=False``; all stopped after the test."""
    fleets: list[RedisFleet] = []

    def make(name: str, *, url: str | None = None, start: bool = True,
             bans: dict[str, Any] | None = None, **kwargs: Any) -> Node:
        b = on_core(BanManager, core)(node_id=name, seed=7, **(bans or {}))
        fleet = RedisFleet(b, url or redis_url, stream, **{**FAST, **kwargs})
        fleets.append(fleet)
        if start:
            fleet.start(timeout=kwargs.get("timeout", 1.0))
        return b, fleet

    try:
        yield make
    finally:
        for fleet in fleets:
            fleet.stop()


def wait_for(check: Callable[[], object], timeout: float = 1.0) -> bool:
    """Poll ``check`` until true or ``timeout`` seconds passed; its last answer."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return bool(check())
        time.sleep(0.005)
    return True


def client(url: str) -> redis.Redis:
    """A plain redis-py client, to write forged entries and read the stream's length."""
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
