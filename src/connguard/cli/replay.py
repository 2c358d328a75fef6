"""``connguard replay``: flow logs in, findings out, as a table, JSON or an HTML report.

Exit status 0 when the replay ran (also when some rows were malformed:
they are counted and listed in the summary), 2 with a message on stderr for
a missing or unreadable file, an unknown format or a bad configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..privacy import Pseudonymizer
from ..replay.engine import REORDER, ConfigError, build_tracker, replay_files
from ..replay.readers import FORMATS, FormatError
from ..report.html import render_html
from ..report.text import render_text

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "replay", help="replay flow logs and report what would have been flagged",
        description="Replay Zeek conn.log (TSV or JSON), Argus binetflow or CSV flow logs "
                    "through a Tracker, in event time, and report what it flags.")
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="flow logs (several are merged in time; .gz is read as is)")
    parser.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                        help="input format (default: told from each file's first line)")
    parser.add_argument("--window", type=float, metavar="S",
                        help="seconds of the tracker's and every pattern's window")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML: [tracker] keywords, and per pattern its fields or "
                             "enabled = false")
    parser.add_argument("--top", type=int, default=100, metavar="N",
                        help="flagged sources listed in the table and the report "
                             "(default 100; --json lists all)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (summary and every finding)")
    parser.add_argument("--html", metavar="REPORT.html",
                        help="also write a self-contained HTML report")
    parser.add_argument("--pseudonymize", metavar="KEY",
                        help="replace sources by keyed pseudonyms (a secret of 16+ bytes)")
    parser.add_argument("--reorder", type=int, default=REORDER, metavar="N",
                        help=f"flows held back to restore start order (default {REORDER:,})")
    parser.set_defaults(run=run)


def _fail(message: str) -> int:
    print(f"connguard replay: {message}", file=sys.stderr)
    return 2


def _config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:                                     # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            raise ConfigError("reading a TOML config needs Python 3.11+ or the tomli "
                              "package (pip install 'connguard[cli]')") from None
    try:
        with open(path, "rb") as f:
            return dict(tomllib.load(f))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _progress() -> Any:
    """A progress callback drawing on stderr when it is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    try:
        from rich.console import Console
        from rich.progress import Progress
    except ImportError:
        def plain(done: int, total: int) -> None:
            print(f"\rreplaying: {done / max(total, 1):6.1%}", end="", file=sys.stderr,
                  flush=True)
        return plain
    bar = Progress(console=Console(stderr=True), transient=True)
    bar.start()
    task = bar.add_task("replaying", total=None)

    def draw(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        bar.refresh()
        if done >= total:
            bar.stop()
    return draw


def run(args: argparse.Namespace) -> int:
    if args.top < 0:
        return _fail("--top must be >= 0")
    if args.reorder < 0:
        return _fail("--reorder must be >= 0")
    if args.window is not None and not args.window > 0:
        return _fail("--window must be a number of seconds > 0")
    try:
        pseudonymize = None if args.pseudonymize is None else Pseudonymizer(
            args.pseudonymize, rotate=None)
    except ValueError as exc:
        return _fail(f"--pseudonymize: {exc}")
    for path in args.files:
        if not os.path.exists(path):
            return _fail(f"{path}: no such file")
    progress = None
    try:
        tracker = build_tracker(_config(args.config), args.window)
        progress = _progress()
        result = replay_files(args.files, fmt=args.format, tracker=tracker,
                              reorder=args.reorder, progress=progress)
    except (FormatError, ConfigError) as exc:
        return _fail(str(exc))
    finally:
        if progress is not None:                 # done: take the bar down
            progress(1, 1)
            print("\r", end="", file=sys.stderr)
    document = result.document(None if args.json else args.top, pseudonymize)
    if args.html:
        report = result.document(args.top, pseudonymize) if args.json else document
        page = render_html(report)               # before the file is opened: no empty file
        try:
            with open(args.html, "w", encoding="utf-8") as f:
                f.write(page)
        except OSError as exc:
            return _fail(f"cannot write {args.html}: {exc.strerror or exc}")
    if args.json:
        json.dump({"summary": document["summary"], "findings": document["findings"]},
                  sys.stdout, indent=1)
        print()
    else:
        render_text(document, sys.stdout)
        if args.html:
            print(f"report written to {args.html}")
    return 0
