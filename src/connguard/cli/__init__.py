"""The ``connguard`` command: one console script, a subcommand per job.

``connguard demo``, ``connguard replay``, ``connguard proxy`` and ``connguard bans``. Also
``python -m connguard``. This is the top layer: it may import anything below.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from collections.abc import Sequence
from typing import TextIO

from .. import __version__
from . import bans, demo, proxy, replay

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="connguard", description="See connection abuse as it happens.")
    parser.add_argument("--version", action="version", version=f"connguard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(commands)
    replay.add_parser(commands)
    proxy.add_parser(commands)
    bans.add_parser(commands)
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        if not _reader_gone(sys.stdout):
            raise                                # another pipe: not a quiet matter
        # The output's reader went away (``connguard replay ... | head``): stop
        # quietly, with stdout on devnull so that the flush at exit finds a
        # reader too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    return status


def _reader_gone(stream: TextIO) -> bool:
    """Whether ``stream`` is a pipe or socket whose reading end is closed.

    On Linux poll() reports an error condition on such a descriptor without
    writing to it; a file, a terminal or a pipe someone still reads reports
    none. Elsewhere every broken pipe is taken for stdout's.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not sys.platform.startswith("linux"):     # poll() is not known to say so elsewhere
        return True
    poller = select.poll()
    poller.register(fd, 0)                       # errors and hang-ups are always reported
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
