"""RedisFleet: a BanManager's infractions and bans shared with other nodes over a Redis Stream.

Threads: the caller's (``start`` replays in it), a publisher (drains the
outbox with pipelined XADDs, trims the stream) and a follower (XREAD BLOCK
from the last id read, applies what others wrote). Every Redis command runs
in one of the last two, or in the caller's thread for ``start``,
``replay`` and ``flush`` before the threads run; none runs under a lock.

Locking: ``_outbox_lock`` guards the outbox and its counters;
``_memory_lock`` guards ``_lifted`` and ``_seen`` (local commands write
them from any thread). Both are held only for a few dict or deque
operations. Every other field has one writer: the publisher thread (or
``flush``'s caller before ``start``) for the publishing side, the thread
applying entries for the following side: ``start``'s or ``replay``'s
caller until the follower runs, the follower after. (Fields are grouped so
in ``__init__``.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:                       # pragma: no cover - the extra is missing
    raise ImportError("connguard.fleet.redis needs redis-py: pip install 'connguard[redis]'") from exc

from .._validate import int_arg, number_arg
from ..bans import BanManager, Infraction, Watch, _BanAPI
from ..bans.wire import check_node_id
from .entries import (
    BAN,
    Command,
    Malformed,
    UnknownType,
    ban_fields,
    command_id,
    infraction_fields,
    read_entry,
    unban_fields,
)
from .stats import SKIP_REASONS, FleetStats

__all__ = ["DEFAULT_STREAM", "DEFAULT_URL", "RedisFleet"]

log = logging.getLogger("connguard.fleet")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "connguard:infractions"
MAX_STREAM_LENGTH = 256
REMEMBERED = 100_000        # command ids seen, and netblocks with an unban, kept for dedup
PAGE = 10_000               # entries per XRANGE while replaying
READ = 1_000                # entries per XREAD while following

# An outbox event: a local infraction, or a command's stream fields.
Outgoing = Infraction | dict[str, str]


class RedisFleet:
    """Share a BanManager's infractions, bans and unbans with every node following one stream.

    ``RedisFleet(bans, url, stream, node_id=None, maxlen=1_000_000,
    outbox=100_000).start()``; ``stop()`` (or ``with``/``async with``,
    ``await start_async()``/``stop_async()``, which run them off the event
    loop).

    Important:
    1. Only this node's own ``report()``, ``ban()`` and ``unban()`` calls
       are published (``BanManager.watch``, from construction until
       ``stop()``: what comes before ``start()`` waits in the outbox);
       what it applies from the stream is never published again.
       Publishing never blocks the caller and never runs under a lock: the
       callback appends to a bounded outbox, and a background thread does
       pipelined XADDs. When the outbox holds ``outbox`` events, the
       oldest is dropped for the newest; drops are counted and logged.
    2. Receivers trust no weight from the stream: an infraction goes
       through ``BanManager.apply`` (penalty and lifetime from local
       policy, duplicates no-ops), a ban lasts at most ``max_ban`` seconds
       from its creation (default: the longest lifetime among the
       manager's kinds), fields the entry format does not have are
       ignored, every field is bounded. Unknown kinds or entry types and
       malformed entries are counted and skipped, never fatal.
    3. An unban lifts the ban on every node and stays lifted: each node
       forgives the infractions about that netblock created (sender's
       wall clock) at or before the unban -- remembered, so resending
       them counts nothing -- and skips such infractions and bans that
       arrive later (from an outbox that held them through an outage);
       offences after the unban count as usual. Node clocks should agree
       to well within the time between an unban and the next offence.
    4. ``start()`` replays the live part of the stream (entries younger
       than the longest lifetime, or ``max_ban`` if longer) before it
       returns, so the node is ban-aware before it serves; its own
       infractions are applied too then (a restart under the same node
       id). Following, its own entries are skipped: those this RedisFleet
       published, known by a random token in each. Entries of another
       process under the same node id are applied as a peer's, counted
       (``clashes``) and logged: give every node its own. The stream is capped
       at about ``maxlen`` entries (``MAXLEN ~``: whole blocks of entries
       go, so it may hold a hundred or so more), and the publisher trims
       entries older than that horizon (``XTRIM MINID ~``) every
       ``trim_every`` seconds.
    5. Redis down or restarted: local enforcement goes on; the outbox
       keeps the newest ``outbox`` events and flushes them on reconnect;
       events published within the last ``resend`` seconds are published
       again when the server turns out to have restarted (a new run_id:
       what followers had not read yet may have died with it). Both
       threads reconnect with exponential backoff (``backoff=(first,
       cap)`` seconds); the follower resumes from its last id, or replays
       the live stream when the stream was lost (gone, or made again
       behind its last id). Delivery is at least once; duplicates are
       no-ops.
    6. ``stop()`` returns within about ``block`` + ``timeout`` seconds
       (the follower's XREAD blocks at most ``block`` seconds; the
       publisher makes one last attempt to flush the outbox) and is
       idempotent; a RedisFleet starts once.
    7. Times: infractions carry the BanManager's wall-clock ``created``;
       commands compare with this machine's ``time.time()``, so a
       BanManager's ``clock=``, when given, must count wall-clock seconds
       for bans and unbans to mean the same on every node.
    8. Logs name a source only as the BanManager's pseudonymizer shows it,
       when it has one; the URL is logged without its password. Metrics:
       ``stats()``, exposed by ``connguard.fleet.metrics.FleetCollector``.
    9. ``node_id``, when given, must be the BanManager's (its
       infractions carry it); ``url`` is a redis://, rediss:// or unix://
       URL; bad arguments raise TypeError or ValueError naming them.
    """

    def __init__(
        self,
        bans: BanManager,
        url: str = DEFAULT_URL,
        stream: str = DEFAULT_STREAM,
        node_id: str | None = None,
        maxlen: int = 1_000_000,
        outbox: int = 100_000,
        *,
        max_ban: float | None = None,
        block: float = 0.25,
        backoff: tuple[float, float] = (0.05, 2.0),
        batch: int = 500,
        trim_every: float = 60.0,
        timeout: float = 5.0,
        resend: float = 10.0,
    ) -> None:
        if not isinstance(bans, _BanAPI):
            raise TypeError(f"bans must be a connguard.BanManager, not {type(bans).__name__}")
        if node_id is not None and check_node_id(node_id) != bans.node_id:
            raise ValueError(f"node_id must be the BanManager's node_id ({bans.node_id!r}), which "
                             f"its infractions carry; got {node_id!r:.80}")
        if not isinstance(stream, str) or not 0 < len(stream) <= MAX_STREAM_LENGTH:
            raise ValueError(f"stream must be a str of 1 to {MAX_STREAM_LENGTH} characters, "
                             f"got {stream!r:.80}")
        self._maxlen = int_arg("maxlen", maxlen, 1, 2**63 - 1)
        self._outbox_max = int_arg("outbox", outbox, 1, 2**31)
        longest = max(lifetime for _, lifetime in bans.kinds.values())
        self._max_ban = longest if max_ban is None else number_arg("max_ban", max_ban)
        self._horizon = max(longest, self._max_ban)
        self._block = number_arg("block", block)
        if self._block > 60.0:
            raise ValueError(f"block must be at most 60 seconds, got {block!r}")
        if not isinstance(backoff, tuple) or len(backoff) != 2:
            raise TypeError("backoff must be a (first, cap) tuple of seconds")
        self._backoff = (number_arg("backoff first", backoff[0]),
                         number_arg("backoff cap", backoff[1]))
        self._batch = int_arg("batch", batch, 1, 100_000)
        self._trim_every = number_arg("trim_every", trim_every)
        self._timeout = number_arg("timeout", timeout)
        self._resend = number_arg("resend", resend, allow_low=True)
        self._bans = bans
        self._node = bans.node_id
        self._run_token = os.urandom(8).hex()    # in every entry published: which are this one's
        self._stream = stream
        self._pub = _client("url", url, self._timeout)
        self._sub = _client("url", url, self._timeout + self._block)
        self._shown_url = _shown_url(self._pub)
        self._watch = Watch(on_report=self._on_report, on_ban=self._on_ban, on_unban=self._on_unban)
        self._applying = threading.local()     # .active: this thread applies stream entries
        self._stopping = threading.Event()
        self._wake = threading.Event()         # the outbox went from empty to not empty
        self._resynced = threading.Condition()
        # --- guarded by _resynced (the follower polls them unlocked: ints, written whole) ---
        self._asked = 0                         # resync() requests so far
        self._served = 0                        # of those, made before a completed replay began
        self._threads: list[threading.Thread] = []
        self._started = False
        self._outbox_lock = threading.Lock()
        # --- guarded by _outbox_lock ---
        self._outbox: deque[Outgoing] = deque()
        self._sending = 0                       # events taken from the outbox, being published
        self._published = 0                     # written by the publisher thread (or flush())
        self._dropped = 0
        self._overflowing = False               # dropped since the outbox was last half empty
        self._memory_lock = threading.Lock()
        # --- guarded by _memory_lock ---
        self._lifted: OrderedDict[str, float] = OrderedDict()   # netblock -> latest unban's created
        self._seen: OrderedDict[str, None] = OrderedDict()      # command ids applied or issued here
        # --- one writer: the publisher thread (or flush()'s caller before start) ---
        self._recent: deque[tuple[float, Outgoing]] = deque()   # (monotonic, event) published
        self._run_id: str | None = None         # the server's, as last seen
        self._pub_ok = False
        self._pub_failed = False                # a publish failed and none has worked since
        self._reconnects = 0                    # the publisher's; _sub_reconnects the follower's
        # --- one writer: the thread applying entries (start/replay's caller, then the follower) ---
        self._sub_ok = False
        self._sub_failed = False                # a read failed and none has worked since
        self._sub_reconnects = 0
        self._applied = 0
        self._skipped = dict.fromkeys(SKIP_REASONS, 0)
        self._malformed = 0
        self._clashes = 0
        self._lag = 0.0
        self._resyncs = 0
        self._last_id: bytes | None = None      # None: the live stream has not been replayed
        bans.watch(self._watch)                 # last: callbacks may run from now on

    # --- lifecycle ----------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> bool:
        """Replay the live stream, then publish and follow in background threads.

        Returns True when the replay completed before returning; False when
        Redis could not be reached within ``timeout`` seconds (logged): the
        node then serves on local state, and the follower replays as soon as
        it connects. No new attempt starts after ``timeout``, but one under
        way runs to its end, bounded by the socket timeout given at
        construction: a server that accepts and never answers holds start()
        up to the sum of both. RuntimeError when already started or stopped.
        """
        deadline = time.monotonic() + number_arg("timeout", timeout, allow_low=True)
        if self._started or self._stopping.is_set():
            raise RuntimeError("a RedisFleet starts once, and not after stop()")
        self._started = True
        delay = self._backoff[0]
        while True:
            try:
                self._replay(self._sub)
                self._sub_ok = True
                self._sub_failed = False
                break
            except redis.RedisError as exc:
                self._sub_failed = True
                if time.monotonic() + delay >= deadline:
                    log.warning("connguard fleet: no Redis at %s (%s); serving on local bans, "
                                "replaying when it answers", self._shown_url, _error(exc))
                    break
                time.sleep(delay)
                delay = min(delay * 2, self._backoff[1])
        for name, target in (("publish", self._publish_loop), ("follow", self._follow_loop)):
            thread = threading.Thread(target=target, name=f"connguard-fleet-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self._last_id is not None

    def stop(self, timeout: float | None = None) -> None:
        """Stop publishing and following; the publisher tries once more to flush the outbox.

        Local callbacks are removed first, so later reports stay local.
        Returns when both threads ended, or after ``timeout`` seconds
        (default ``block`` + ``timeout`` given at construction + 1).
        Idempotent.
        """
        self._bans.unwatch(self._watch)
        self._stopping.set()
        self._wake.set()
        with self._resynced:
            self._resynced.notify_all()         # resync() waiters give up
        wait = self._block + self._timeout + 1.0 if timeout is None else timeout
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not any(thread.is_alive() for thread in self._threads):
            self._pub.close()
            self._sub.close()

    async def start_async(self, timeout: float = 10.0) -> bool:
        """``start()`` in a worker thread, so the event loop keeps running during the replay."""
        return await asyncio.to_thread(self.start, timeout)

    async def stop_async(self, timeout: float | None = None) -> None:
        """``stop()`` in a worker thread."""
        await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> RedisFleet:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> RedisFleet:
        await self.start_async()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop_async()

    # --- one-shot use (the CLI), and resync ----------------------------------------

    def replay(self) -> int:
        """Apply the live part of the stream now, in this thread; return how many entries were read.

        For a fleet that is not started (``connguard bans`` reads state
        this way); raises redis.RedisError when Redis does not answer, and
        RuntimeError once started (use ``resync()``).
        """
        if self._started:
            raise RuntimeError("replay() is for a RedisFleet that is not started; use resync()")
        read = self._replay(self._sub)
        self._sub_ok = True
        return read

    def flush(self, timeout: float = 5.0) -> bool:
        """Publish what the outbox holds; True when it was emptied within ``timeout`` seconds.

        Not started: in this thread, raising redis.RedisError when Redis
        does not answer. Started: waits for the publisher.
        """
        deadline = time.monotonic() + number_arg("timeout", timeout, allow_low=True)
        if not self._started:
            while self._send_batch():
                pass
            return True
        while self.outbox_depth and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self.outbox_depth

    def resync(self, timeout: float = 10.0) -> bool:
        """Have the follower replay the live stream again; True when it did within ``timeout``.

        Only a replay that begins after this call answers it, so everything
        in the live part of the stream when resync() was called has been
        applied when it returns True.

        Replaying is idempotent: infractions held or forgiven and commands
        seen count nothing again. RuntimeError when not started; False at
        once when stop() is called meanwhile.
        """
        if not self._started or self._stopping.is_set():
            raise RuntimeError("resync() needs a started RedisFleet")
        with self._resynced:
            self._asked += 1
            ticket = self._asked
            self._resynced.wait_for(
                lambda: self._served >= ticket or self._stopping.is_set(), timeout)
            return self._served >= ticket

    # --- read-only state ------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._node

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def redis_address(self) -> str:
        """Where Redis is, as logs show it: host:port/db or unix://path, never a password."""
        return self._shown_url

    @property
    def outbox_depth(self) -> int:
        """Events waiting to be published, the batch being sent included."""
        with self._outbox_lock:
            return len(self._outbox) + self._sending

    def stats(self) -> FleetStats:
        """The counters now (see FleetStats); what FleetCollector exposes."""
        with self._outbox_lock:
            # A batch being sent is still waiting: counted until XADD succeeds.
            depth, dropped = len(self._outbox) + self._sending, self._dropped
            published = self._published
        return FleetStats(
            connected=self._pub_ok and self._sub_ok, outbox_depth=depth,
            published=published, applied=self._applied, dropped=dropped, lag=self._lag,
            skipped=dict(self._skipped), malformed=self._malformed, clashes=self._clashes,
            reconnects=self._reconnects + self._sub_reconnects, resyncs=self._resyncs,
            replayed=self._last_id is not None)

    # --- local events: enqueue only (any thread, no lock held by the caller) -------------

    def _on_report(self, infraction: Infraction) -> None:
        if infraction.node == self._node:          # this node's own: the only kind published
            self._enqueue(infraction)

    def _on_ban(self, command: tuple[str, float, float]) -> None:
        if getattr(self._applying, "active", False):   # a ban from the stream: not ours to pass on
            return
        source, duration, created = command
        ident = command_id(self._node, "ban")
        self._remember(ident)                       # a replay does not apply it a second time
        self._enqueue(ban_fields(ident, source, duration, created, self._node, self._run_token))

    def _on_unban(self, command: tuple[str, float]) -> None:
        if getattr(self._applying, "active", False):
            return
        source, created = command
        ident = command_id(self._node, "unban")
        self._remember(ident)
        self._lift(source, created)
        self._enqueue(unban_fields(ident, source, created, self._node, self._run_token))

    def _enqueue(self, event: Outgoing) -> None:
        """Append to the outbox, dropping its oldest event when full; wake the publisher."""
        first_drop = False
        with self._outbox_lock:
            was_empty = not self._outbox
            if len(self._outbox) >= self._outbox_max:
                self._outbox.popleft()
                self._dropped += 1
                first_drop, self._overflowing = not self._overflowing, True
            self._outbox.append(event)
        if was_empty:
            self._wake.set()
        if first_drop:
            log.warning("connguard fleet: outbox full (%d events, Redis at %s not keeping up); "
                        "dropping the oldest", self._outbox_max, self._shown_url)

    # --- publisher thread ------------------------------------------------------------------

    def _publish_loop(self) -> None:
        delay = self._backoff[0]
        next_trim = next_check = 0.0
        while True:
            stopping = self._stopping.is_set()
            try:
                if (self._run_id is None or self._pub_failed
                        or (self._recent and time.monotonic() >= next_check)):
                    self._check_server()
                    next_check = time.monotonic() + 1.0
                while self._send_batch():
                    pass
                if time.monotonic() >= next_trim:
                    self._trim()
                    next_trim = time.monotonic() + self._trim_every
                self._publisher_ok(True)
                delay = self._backoff[0]
            except Exception as exc:                 # RedisError, or a bug: never fatal
                if not isinstance(exc, redis.RedisError):
                    log.exception("connguard fleet: publishing failed unexpectedly")
                self._publisher_ok(False, exc)
                if stopping:
                    break
                self._stopping.wait(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            if stopping:
                break
            self._wake.wait(max(0.0, min(1.0, next_trim - time.monotonic(),
                                         next_check - time.monotonic() if self._recent else 1.0)))
            self._wake.clear()
        with self._outbox_lock:
            left = len(self._outbox)
        if left:
            log.warning("connguard fleet: stopped with %d events not published", left)

    def _send_batch(self) -> bool:
        """XADD up to ``batch`` events in one pipeline; False when the outbox was empty.

        On an error the events go back to the front of the outbox (the
        oldest dropped if it filled meanwhile) and the error propagates.
        """
        with self._outbox_lock:
            n = min(self._batch, len(self._outbox))
            events = [self._outbox.popleft() for _ in range(n)]
            self._sending = n
        if not events:
            return False
        sent = False
        try:
            pipe = self._pub.pipeline(transaction=False)
            try:
                for event in events:
                    fields: Any = infraction_fields(event, self._run_token) \
                        if isinstance(event, Infraction) else event
                    pipe.xadd(self._stream, fields, maxlen=self._maxlen, approximate=True)
                pipe.execute()
                sent = True
            finally:
                pipe.reset()
        finally:
            # One step from "being sent" to "published" (or back to the outbox): stats()
            # never sees the batch in neither count.
            with self._outbox_lock:
                if sent:
                    self._published += len(events)
                else:
                    self._outbox.extendleft(reversed(events))
                    excess = max(0, len(self._outbox) - self._outbox_max)
                    for _ in range(excess):
                        self._outbox.popleft()
                    self._dropped += excess
                self._sending = 0
                if self._overflowing and len(self._outbox) <= self._outbox_max // 2:
                    self._overflowing = False       # the next overflow is logged again
        if self._resend:
            now = time.monotonic()
            recent = self._recent
            recent.extend((now, event) for event in events)
            while recent and (len(recent) > self._outbox_max or recent[0][0] < now - self._resend):
                recent.popleft()
        return True

    def _check_server(self) -> None:
        """Notice a Redis that restarted (a new run_id); publish the recent events again.

        A server that restarts without persistence (or with a second of
        AOF) loses entries that followers may not have read yet; entries
        published within the last ``resend`` seconds go back to the front
        of the outbox (receivers take duplicates as no-ops).
        """
        run_id = str(self._pub.info("server").get("run_id", ""))
        previous, self._run_id = self._run_id, run_id
        if previous is None or previous == run_id or not self._recent:
            return
        events = [event for _, event in self._recent]
        self._recent.clear()
        with self._outbox_lock:
            self._outbox.extendleft(reversed(events))
            excess = max(0, len(self._outbox) - self._outbox_max)
            for _ in range(excess):
                self._outbox.popleft()
            self._dropped += excess
        log.warning("connguard fleet: Redis at %s restarted; publishing the last %d events "
                    "again", self._shown_url, len(events))

    def _trim(self) -> None:
        """Drop entries older than the horizon (XTRIM MINID ~), by the server's clock."""
        self._pub.xtrim(self._stream, minid=self._horizon_id(self._pub), approximate=True)

    def _publisher_ok(self, ok: bool, exc: Exception | None = None) -> None:
        """Note a publish that worked or failed; log the first failure and the recovery."""
        if ok:
            if self._pub_failed:
                self._pub_failed = False
                self._reconnects += 1
                with self._outbox_lock:
                    dropped = self._dropped
                log.warning("connguard fleet: publishing to %s again (%d events dropped so far)",
                            self._shown_url, dropped)
        elif not self._pub_failed:
            self._pub_failed = True
            log.warning("connguard fleet: cannot publish to %s (%s); local enforcement goes on, "
                        "up to %d events held", self._shown_url, _error(exc), self._outbox_max)
        self._pub_ok = ok

    # --- follower thread -----------------------------------------------------------------

    def _follow_loop(self) -> None:
        delay = self._backoff[0]
        client = self._sub
        while not self._stopping.is_set():
            try:
                if self._last_id is None or self._asked > self._served:
                    self._replay(client, resync=self._last_id is not None)
                elif self._sub_failed and self._stream_lost(client):
                    log.warning("connguard fleet: stream %s was lost; replaying it", self._stream)
                    self._replay(client, resync=True)
                if self._sub_failed:
                    self._sub_failed = False
                    self._sub_reconnects += 1
                    log.warning("connguard fleet: following %s at %s again", self._stream,
                                self._shown_url)
                self._sub_ok = True
                delay = self._backoff[0]
                self._follow(client)
            except Exception as exc:                 # RedisError, or a bug: never fatal
                if not isinstance(exc, redis.RedisError):
                    log.exception("connguard fleet: following failed unexpectedly")
                elif not self._sub_failed:
                    log.warning("connguard fleet: cannot read from %s (%s); following resumes "
                                "when it answers", self._shown_url, _error(exc))
                self._sub_ok = False
                self._sub_failed = True
                self._stopping.wait(delay)
                delay = min(delay * 2, self._backoff[1])

    def _follow(self, client: redis.Redis) -> None:
        """One XREAD BLOCK from the last id; apply what it returns (own entries skipped)."""
        assert self._last_id is not None
        reply: Any = client.xread({self._stream: self._last_id}, count=READ,
                             block=max(1, int(self._block * 1000)))
        for _, entries in reply or ():
            for entry_id, fields in entries:
                self._apply(fields, following=True)
                self._last_id = entry_id

    def _stream_lost(self, client: redis.Redis) -> bool:
        """Whether the stream is gone, or was made again behind the last id read."""
        try:
            info: Any = client.xinfo_stream(self._stream)
        except redis.ResponseError:
            return True                          # no such key
        last = info.get("last-generated-id")
        assert self._last_id is not None
        return last is not None and _id_tuple(last) < _id_tuple(self._last_id)

    # --- applying entries (start/replay's caller, then the follower) -------------------------

    def _replay(self, client: redis.Redis, *, resync: bool = False) -> int:
        """XRANGE the live part of the stream in pages and apply every entry; set the last id.

        Serves the resync() requests made before it began, once it completes:
        a request made while it runs waits for the next replay, and one whose
        replay fails is served by the replay after the reconnect. A replay
        that is a ``resync`` or serves a request counts as a resync, before
        resync() waiters wake, so their stats() already shows it.
        """
        with self._resynced:
            serves = self._asked
        start = self._horizon_id(client)
        cursor = start
        last = start.encode()
        read = 0
        while True:
            page: Any = client.xrange(self._stream, min=cursor, max="+", count=PAGE)
            for entry_id, fields in page:
                self._apply(fields, following=False)
                last = entry_id
            read += len(page)
            if len(page) < PAGE:
                break
            cursor = "(" + last.decode()
        with self._resynced:
            self._last_id = last
            self._resyncs += resync or serves > self._served     # a replay resync() waits for
            self._served = serves
            self._resynced.notify_all()
        if read:
            log.info("connguard fleet: replayed %d entries of %s", read, self._stream)
        return read

    def _apply(self, fields: Mapping[Any, Any], following: bool) -> None:
        """Apply one entry; count it as applied, skipped (by reason) or malformed. Never raises."""
        try:
            entry = read_entry(fields)
        except UnknownType:
            self._skipped["unknown"] += 1
            return
        except Malformed as exc:
            self._malformed_entry(exc)
            return
        node, run = (entry.node, entry.run) if isinstance(entry, Command) \
            else (entry["node"], entry.get("run"))
        if following and node == self._node:
            if run == self._run_token:
                self._skipped["own"] += 1
                return
            self._clash()
        self._applying.active = True
        try:
            if isinstance(entry, Command):
                reason = self._command(entry)
            else:
                reason = self._infraction(entry)
        except ValueError as exc:            # a source no address, or a kind apply refuses
            self._malformed_entry(exc)
            return
        except Exception:                    # a bug: logged, the entry counted, never fatal
            log.exception("connguard fleet: applying an entry of %s failed", self._stream)
            self._malformed += 1
            return
        finally:
            self._applying.active = False
        if reason is None:
            self._applied += 1
            if following:
                created = entry.created if isinstance(entry, Command) else entry["created"]
                self._lag = max(0.0, time.time() - created)
        else:
            self._skipped[reason] += 1

    def _infraction(self, entry: dict[str, Any]) -> str | None:
        if entry["kind"] not in self._bans.kinds:
            return "unknown"
        if self._was_lifted(self._bans.netblock(entry["source"]), entry["created"]):
            return "lifted"
        return None if self._bans.apply(entry) else "noop"

    def _command(self, command: Command) -> str | None:
        netblock = self._bans.netblock(command.source)
        if not self._remember(command.id):
            return "noop"
        now = time.time()
        # From the future counts as now, as an infraction's time does: a ban
        # then lasts max_ban at most, and an unban cannot shadow what follows.
        created = min(command.created, now)
        if command.type == BAN:
            if self._was_lifted(netblock, created):
                return "lifted"
            remaining = created + min(command.duration, self._max_ban) - now
            if remaining <= 0.0:
                return "noop"
            self._bans.ban(netblock, remaining, made=created)
            log.info("connguard fleet: node %r banned %s for %.0f s", command.node[:64],
                     self._shown(netblock), remaining)
            return None
        self._lift(netblock, created)
        self._bans.unban(netblock, before=created)   # later offences and bans still count
        log.info("connguard fleet: node %r lifted the ban on %s", command.node[:64],
                 self._shown(netblock))
        return None

    def _remember(self, ident: str) -> bool:
        """Remember a command id; False when it was known already (a duplicate)."""
        with self._memory_lock:
            if ident in self._seen:
                return False
            self._seen[ident] = None
            if len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
        return True

    def _lift(self, netblock: str, created: float) -> None:
        """Remember an unban: infractions and bans created before it are skipped."""
        horizon = time.time() - self._horizon
        with self._memory_lock:
            lifted = self._lifted
            lifted[netblock] = max(created, lifted.pop(netblock, created))
            while lifted and (len(lifted) > REMEMBERED or next(iter(lifted.values())) < horizon):
                lifted.popitem(last=False)

    def _was_lifted(self, netblock: str, created: float) -> bool:
        with self._memory_lock:
            lifted = self._lifted.get(netblock)
        return lifted is not None and created <= lifted

    def _clash(self) -> None:
        """Another process publishes under this node's id: its entries are applied
        as any peer's (they are events from elsewhere), counted and logged."""
        self._clashes += 1
        if _worth_logging(self._clashes):
            log.warning("connguard fleet: another process writes to %s as node %r (%d entries "
                        "so far); give each node its own node_id", self._stream,
                        self._node[:64], self._clashes)

    def _malformed_entry(self, exc: Exception) -> None:
        self._malformed += 1
        if _worth_logging(self._malformed):
            log.warning("connguard fleet: skipped a malformed entry of %s (%d so far): %s",
                        self._stream, self._malformed, type(exc).__name__
                        if self._bans.pseudonymizer is not None else exc)

    # --- helpers ---------------------------------------------------------------------------

    def _horizon_id(self, client: redis.Redis) -> str:
        """The stream id ``horizon`` seconds before the server's clock (ms part only)."""
        seconds, micros = client.time()
        return str(max(0, int((seconds + micros / 1e6 - self._horizon) * 1000)))

    def _shown(self, netblock: str) -> str:
        pseudonymizer = self._bans.pseudonymizer
        return pseudonymizer(netblock) if pseudonymizer is not None else netblock


def _worth_logging(count: int) -> bool:
    """Whether the ``count``-th of a kind of problem is logged: the first ten,
    then every thousandth, so that a flood logs little."""
    return count <= 10 or count % 1000 == 0


def _client(name: str, url: object, timeout: float) -> redis.Redis:
    """A client that does not connect until used and never retries on its own."""
    if not isinstance(url, str):
        raise TypeError(f"{name} must be a str, not {type(url).__name__}")
    # redis-py reads a path that is no number as database 0, and "/1/2" as 12.
    parts = urllib.parse.urlsplit(url)
    db = parts.path.strip("/") if parts.scheme.lower() in ("redis", "rediss") else ""
    if db and not (db.isascii() and db.isdigit()):
        raise ValueError(f"{name} must name its database by number (redis://host:6379/0), "
                         f"got the path {parts.path[:40]!r}")
    try:
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                    retry=Retry(NoBackoff(), 0), health_check_interval=0)
    except ValueError as exc:
        raise ValueError(f"{name} must be a redis://, rediss:// or unix:// URL: {exc}") from None


def _shown_url(client: redis.Redis) -> str:
    """Where a client connects, without credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def _error(exc: Exception | None) -> str:
    return type(exc).__name__ if exc is None else f"{type(exc).__name__}: {exc}"


def _id_tuple(ident: bytes | str) -> tuple[int, int]:
    text = ident.decode() if isinstance(ident, bytes) else ident
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)

