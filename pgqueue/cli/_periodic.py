"""``pgqueue periodic list|pause NAME|resume NAME|run-now NAME``: the periodic jobs.

Each is a thin layer over one :class:`pgqueue.App` call; the schedules are read from the
database (the ``periodic_schedules`` view), so no ``--app`` is needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from pgqueue.app import App
from pgqueue.cli import _context
from pgqueue.cli._format import table
from pgqueue.errors import ConfigurationError

__all__ = ["add_parser", "cmd_periodic"]

ACTIONS = ("list", "pause", "resume", "run-now")


def add_parser(command: Any, common: Any) -> None:
    """Add ``periodic`` to the subcommands (``command(name, summary, description)`` makes the
    parser; ``common`` adds --database-url and --schema)."""
    sp = command("periodic", "periodic jobs: list|pause NAME|resume NAME|run-now NAME", """\
List the app's periodic schedules with their last and next tick (stale ones: removed from the
code, never fire), pause or resume one (ticks in between never fire), or enqueue its job now
(run-now leaves the schedule's ticks unchanged).""")
    common(sp)
    sp.add_argument("action", choices=ACTIONS)
    sp.add_argument("name", nargs="?", help="the schedule (for pause, resume, run-now)")
    sp.add_argument("--json", action="store_true", help="with list: one JSON array")
    sp.set_defaults(func=cmd_periodic)


def cmd_periodic(args: argparse.Namespace) -> int:
    """List the schedules (stale ones marked), or pause/resume/run one now."""
    app = _context.app_for(args)
    try:
        return _act(app, args)
    finally:
        app.close()


def _act(app: App, args: argparse.Namespace) -> int:
    if args.action == "list":
        schedules = app.periodic_schedules()
        if args.json:
            print(json.dumps([
                {"name": s.name, "spec": s.spec, "timezone": s.timezone,
                 "catch_up": s.catch_up, "task": s.task, "queue": s.queue,
                 "paused": s.paused, "stale": s.stale, "last_tick": _iso(s.last_tick),
                 "next_tick": _iso(s.next_tick), "last_fired_at": _iso(s.last_fired_at)}
                for s in schedules]))
        elif schedules:
            print(table(("name", "schedule", "tz", "task", "queue", "state", "last tick",
                         "next tick"),
                        [(s.name, s.spec, s.timezone, s.task, s.queue, _state(s.paused, s.stale),
                          _when(s.last_tick), "" if s.paused or s.stale else _when(s.next_tick))
                         for s in schedules]))
        else:
            print("no periodic jobs yet (workers record the schedules of their app at start)")
        return 0
    if not args.name:
        raise ConfigurationError(f"`pgqueue periodic {args.action}` needs a schedule NAME",
                                 key="name", source="command line")
    if args.action == "pause":
        app.pause_periodic(args.name)
        print(f"schedule {args.name!r} paused")
    elif args.action == "resume":
        app.resume_periodic(args.name)
        print(f"schedule {args.name!r} resumed")
    else:
        print(f"enqueued job {app.run_periodic_now(args.name)}")
    return 0


def _state(paused: bool, stale: bool) -> str:
    if stale:
        return "stale (not in the code; never fires)"
    return "paused" if paused else "active"


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()
