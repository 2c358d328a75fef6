"""``connguard bans``: see and change a fleet's bans through its Redis stream.

``connguard bans list|show SOURCE|ban SOURCE SECONDS|unban SOURCE --redis
URL [--stream NAME] [--json]``. ``list`` and ``show`` replay the live part
of the stream into a throwaway BanManager (the default ban policy) and
report what it holds; ``ban`` and ``unban`` append a command entry that
every node following the stream applies. Nothing here needs a node to be
reachable, only Redis.

Exit status 0 when the command ran, 2 with a message on stderr for a bad
argument, a missing redis-py or a Redis that does not answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from .._spec import MAX_TIME
from ..bans import BanManager

__all__ = ["add_parser", "main"]

STREAM = "connguard:infractions"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "bans", help="list, show, ban and unban sources across a fleet (through Redis)",
        description="Read and write a fleet's bans through its Redis stream: list and show "
                    "replay the stream (default ban policy); ban and unban append a command "
                    "every node applies.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis", required=True, metavar="URL",
                        help="the fleet's Redis, e.g. redis://127.0.0.1:6379/0")
    common.add_argument("--stream", default=STREAM, metavar="NAME",
                        help=f"the fleet's stream (default {STREAM})")
    common.add_argument("--json", action="store_true", help="print one JSON document")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="the bans in force")
    show = actions.add_parser("show", parents=[common],
                              help="one source: ban, score and live infractions")
    show.add_argument("source", metavar="SOURCE", help="an address or netblock")
    ban = actions.add_parser("ban", parents=[common], help="ban a source on every node")
    ban.add_argument("source", metavar="SOURCE", help="an address or netblock")
    ban.add_argument("seconds", type=float, metavar="SECONDS", help="how long")
    unban = actions.add_parser("unban", parents=[common],
                               help="lift a source's ban on every node, and forgive its "
                                    "infractions so far")
    unban.add_argument("source", metavar="SOURCE", help="an address or netblock")
    parser.set_defaults(run=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``connguard bans`` with ``argv`` (the words after ``bans``); return the exit status."""
    parser = argparse.ArgumentParser(prog="connguard")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(commands)
    args = parser.parse_args(["bans", *(sys.argv[1:] if argv is None else argv)])
    status: int = args.run(args)
    return status


def _fail(message: str) -> int:
    print(f"connguard bans: {message}", file=sys.stderr)
    return 2


class _NoBanLines(logging.Filter):
    """Drops the throwaway BanManager's "banned" lines: the command reports
    what it did itself, and only once the write to Redis is done (the
    manager logs a ban when it starts, before the write that may still
    fail), and ``list`` would log every ban it reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("connguard: banned ")


def run(args: argparse.Namespace) -> int:
    quiet = _NoBanLines()
    logger = logging.getLogger("connguard.bans")
    logger.addFilter(quiet)
    try:
        return _run(args)
    finally:
        logger.removeFilter(quiet)


def _run(args: argparse.Namespace) -> int:
    try:
        import redis

        from ..fleet.redis import RedisFleet
    except ImportError:
        return _fail("needs redis-py: pip install 'connguard[redis]'")
    node = f"cli-{socket.gethostname()[:64]}-{os.urandom(3).hex()}"
    bans = BanManager(node_id=node, capacity=1_000_000)
    try:
        fleet = RedisFleet(bans, args.redis, args.stream, timeout=5.0)
    except (TypeError, ValueError) as exc:
        return _fail(f"--redis/--stream: {exc}")
    where = f"{args.stream} at {fleet.redis_address}"
    try:
        if args.action in ("ban", "unban"):
            return _command(args, bans, fleet, where)
        read = fleet.replay()
    except redis.RedisError as exc:
        return _fail(f"cannot use {where}: {type(exc).__name__}: {exc}")
    finally:
        fleet.stop(timeout=0.0)
    if args.action == "list":
        return _list(args, bans, fleet, read)
    return _show(args, bans, read)


def _command(args: argparse.Namespace, bans: BanManager, fleet: Any, where: str) -> int:
    try:
        if args.action == "ban":
            if not 0 < args.seconds <= MAX_TIME:
                return _fail(f"SECONDS must be a number > 0 and at most {MAX_TIME:g}, "
                             f"got {args.seconds!r}")
            source = bans.netblock(args.source)
            bans.ban(source, args.seconds)
        else:
            source = bans.netblock(args.source)
            bans.unban(source)
    except ValueError as exc:
        return _fail(f"SOURCE: {exc}")
    fleet.flush()
    if args.json:
        document: dict[str, Any] = {"action": args.action, "source": source, "stream": args.stream}
        if args.action == "ban":
            document["seconds"] = args.seconds
        json.dump(document, sys.stdout)
        print()
    elif args.action == "ban":
        print(f"ban of {source} for {args.seconds:g} s written to {where}")
    else:
        print(f"unban of {source} written to {where}")
    return 0


def _list(args: argparse.Namespace, bans: BanManager, fleet: Any, read: int) -> int:
    now = time.time()
    found = bans.banned()
    skipped = fleet.stats()
    if args.json:
        json.dump({"stream": args.stream, "entries": read, "malformed": skipped.malformed,
                   "bans": [{"source": b.source, "until": b.until,
                             "seconds_left": round(max(0.0, b.until - now), 3), "score": b.score}
                            for b in found]}, sys.stdout, indent=1)
        print()
        return 0
    if found:
        width = max(len("SOURCE"), *(len(b.source) for b in found))
        print(f"{'SOURCE':<{width}}  {'UNTIL (UTC)':<19}  {'LEFT':>9}  SCORE")
        for b in found:
            print(f"{b.source:<{width}}  {_utc(b.until)}  {_left(b.until - now):>9}  {b.score:>5}")
    print(f"{len(found)} bans in force ({read} entries read from {args.stream})")
    return 0


def _show(args: argparse.Namespace, bans: BanManager, read: int) -> int:
    try:
        source = bans.netblock(args.source)
    except ValueError as exc:
        return _fail(f"SOURCE: {exc}")
    now = time.time()
    ban = next((b for b in bans.banned() if b.source == source), None)
    infractions = [i for i in bans.snapshot()["infractions"] if i["source"] == source]
    score = bans.score(source)
    if args.json:
        json.dump({"source": source, "banned": ban is not None,
                   "until": None if ban is None else ban.until, "score": score,
                   "infractions": [{k: i[k] for k in ("id", "kind", "penalty", "created",
                                                      "expires", "node")} for i in infractions],
                   "entries": read}, sys.stdout, indent=1)
        print()
        return 0
    if ban is None:
        print(f"{source}: not banned (score {score})")
    else:
        print(f"{source}: banned until {_utc(ban.until)} UTC, {_left(ban.until - now)} left "
              f"(score {score})")
    for i in infractions:
        print(f"  {_utc(i['created'])}  {i['kind']:<22} +{i['penalty']:<3} until "
              f"{_utc(i['expires'])}  from {i['node']}")
    return 0


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _left(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


if __name__ == "__main__":
    sys.exit(main())
