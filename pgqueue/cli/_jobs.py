"""Commands on queues and jobs: ``enqueue``, ``status``, ``failed``, ``pause``, ``resume``.

Each is a thin layer over one or two :class:`pgqueue.App` calls.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pgqueue.cli import _context
from pgqueue.cli._format import age, failed_dict, queue_stats_dict, short, table
from pgqueue.errors import CannotConnectError, ConfigurationError, DatabaseUnavailableError

__all__ = ["cmd_enqueue", "cmd_failed", "cmd_pause", "cmd_status"]


def cmd_enqueue(args: argparse.Namespace) -> int:
    """Enqueue one job of ``args.task`` with the JSON ``--args``; prints its id."""
    app = _context.app_for(args)
    try:
        payload = json.loads(args.args)
    except ValueError as exc:
        raise ConfigurationError(f"--args is not valid JSON: {exc}", key="args",
                                 source="command line") from exc
    opts: dict[str, Any] = {}
    for key in ("queue", "priority", "delay", "max_attempts", "unique_key"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    job_id = app.enqueue(args.task, payload, **opts)
    print(job_id)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Per-queue counts as a table (or ``--json``); exit status 2 (as every command's for the
    same error) if the database cannot be reached."""
    app = _context.app_for(args)
    try:
        stats = app.stats()
    except (DatabaseUnavailableError, CannotConnectError) as exc:
        if not args.json:
            raise  # one line on stderr, like every command
        print(json.dumps({"database": "unreachable", "error": str(exc)}))
        return 2
    if args.json:
        print(json.dumps({"database": "ok", "queues": [queue_stats_dict(s) for s in stats]}))
        return 0
    headers = ("queue", "paused", "waiting", "scheduled", "running", "failed", "done/1h",
               "oldest wait")
    rows = [(s.queue, "yes" if s.paused else "", s.waiting, s.scheduled, s.running, s.failed,
             s.finished_last_hour, age(s.oldest_wait_s)) for s in stats]
    print(table(headers, rows) if rows else "no queues yet")
    return 0


def cmd_failed(args: argparse.Namespace) -> int:
    """The failed-jobs archive: ``list``, ``show ID``, ``retry ID``/``retry --all``, ``purge``."""
    app = _context.app_for(args)
    action = args.action
    if action == "list":
        failed = app.failed(queue=args.queue, limit=args.limit)
        if args.json:
            print(json.dumps([failed_dict(f, brief=True) for f in failed], default=str))
        elif failed:
            print(table(("id", "queue", "task", "attempts", "failed at", "reason"),
                        [(f.id, f.queue, f.task, f"{f.attempt}/{f.max_attempts}",
                          f.failed_at.strftime("%Y-%m-%d %H:%M:%S"), short(f.reason))
                         for f in failed]))
        else:
            print("no failed jobs")
    elif action == "show":
        f = app.get_failed(_need_id(args))
        print(json.dumps(failed_dict(f, brief=False), indent=2, default=str))
    elif action == "retry":
        if args.all:
            ids = app.retry_all_failed(queue=args.queue)
            print(f"re-driven {len(ids)} jobs")
        else:
            print(f"re-driven job {app.retry_failed(_need_id(args))}")
    elif action == "purge":
        print(f"purged {app.purge_failed(queue=args.queue)} failed jobs")
    return 0


def _need_id(args: argparse.Namespace) -> int:
    if args.id is None:
        raise ConfigurationError(f"`pgqueue failed {args.action}` needs a job ID", key="id",
                                 source="command line")
    return int(args.id)


def cmd_pause(args: argparse.Namespace) -> int:
    """``pause QUEUE`` or ``resume QUEUE`` (the subcommand's name says which)."""
    app = _context.app_for(args)
    if args.command == "pause":
        app.pause(args.queue)
    else:
        app.resume(args.queue)
    print(f"queue {args.queue!r} {args.command}d")
    return 0
