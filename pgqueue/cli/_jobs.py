"""Commands on queues and jobs: ``enqueue``, ``status``, ``failed``, ``pause``, ``resume``,
``forget``, ``limit``.

Each is a thin layer over one or two :class:`pgqueue.App` calls.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from typing import Any

from pgqueue.app import App
from pgqueue.backend import QueueStats
from pgqueue.cli import _context
from pgqueue.cli._format import age, failed_dict, failed_text, queue_stats_dict, short, table
from pgqueue.errors import (
    CannotConnectError,
    ConfigurationError,
    DatabaseUnavailableError,
    UnknownTaskError,
    ValidationError,
)
from pgqueue.job import MAX_JSON_DEPTH

__all__ = ["cmd_enqueue", "cmd_failed", "cmd_forget", "cmd_limit", "cmd_pause", "cmd_status"]


def cmd_enqueue(args: argparse.Namespace) -> int:
    """``pgqueue enqueue`` (see ``_enqueue_with``), with the App's pools closed afterwards."""
    with _context.opened_app(args) as app:
        return _enqueue_with(app, args)


def _enqueue_with(app: App, args: argparse.Namespace) -> int:
    """Enqueue one job of ``args.task`` with the JSON ``--args``; prints its id and queue.

    With ``--app`` the task must be registered there (its queue, priority, attempts and
    signature apply); without it nothing is checked and the output says which queue the job
    went to.
    """
    try:
        payload = json.loads(args.args)
    except ValueError as exc:
        raise ConfigurationError(f"--args is not valid JSON: {exc}", key="args",
                                 source="command line") from exc
    except RecursionError as exc:  # nested far beyond what enqueue accepts anyway
        raise ValidationError(f"--args nest objects/arrays more than {MAX_JSON_DEPTH} levels "
                              "deep, which pgqueue refuses; flatten them") from exc
    if args.app and app.get_task(args.task) is None:
        known = ", ".join(sorted(app.tasks)) or "none"
        raise UnknownTaskError(f"task {args.task!r} is not registered in {args.app} "
                               f"(registered: {known})")
    opts: dict[str, Any] = {}
    for key in ("queue", "priority", "delay", "max_attempts", "unique_key", "concurrency_key"):
        if getattr(args, key, None) is not None:
            opts[key] = getattr(args, key)
    job = app.build(args.task, payload, **opts)
    [job_id] = app.insert([job])
    if args.json:
        print(json.dumps({"id": job_id, "queue": job.queue, "task": job.task}))
    else:
        print(f"enqueued job {job_id} on queue {job.queue!r} (task {job.task})")
    if not args.app:
        where = "--queue" if args.queue else "the default queue: a worker must consume it"
        print(f"note: without --app, task {args.task!r} and its arguments were not checked; "
              f"the job is on queue {job.queue!r} ({where}); pass --app MODULE:APP to use "
              "the task's own queue and signature", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """``pgqueue status`` (see ``_status_with``), with the App's pools closed afterwards."""
    with _context.opened_app(args) as app:
        return _status_with(app, args)


def _status_with(app: App, args: argparse.Namespace) -> int:
    """Per-queue counts as a table (or ``--json``); exit status 1 if the database is down."""
    try:
        stats = app.stats()
    except (DatabaseUnavailableError, CannotConnectError) as exc:
        if not args.json:
            raise  # one line on stderr, like every command
        print(json.dumps({"database": "unreachable", "error": str(exc)}))
        return 1  # EXIT_CODES["failure"], as main() gives for the same error without --json
    if args.json:
        print(json.dumps({"database": "ok", "queues": [queue_stats_dict(s) for s in stats]}))
        return 0
    headers: tuple[str, ...] = ("queue", "paused", "waiting", "scheduled", "running", "failed",
                                "finished/1h", "oldest wait")
    rows: list[tuple[Any, ...]] = [
        (s.queue, "yes" if s.paused else "", s.waiting, s.scheduled, s.running, s.failed,
         s.finished_last_hour, age(s.oldest_wait_s)) for s in stats]
    if any(_limits_text(s) != "-" for s in stats):
        # flow control: the limits, the slots in use, and the ready jobs a limit holds back
        # (they wait for a slot, not for a worker)
        headers = (*headers, "limits", "in use", "held by limit")
        rows = [(*r, _limits_text(s),
                 "-" if s.slots_in_use is None else f"{s.slots_in_use}/{s.concurrency}",
                 s.waiting_for_limit) for r, s in zip(rows, stats, strict=True)]
    print(table(headers, rows) if rows else "no queues yet")
    return 0


def _limits_text(s: QueueStats) -> str:
    """A queue's limits for a table cell: ``10 running, 2/key, 50/1s``; ``-`` for none."""
    parts = []
    if s.concurrency is not None:
        parts.append(f"{s.concurrency} running")
    if s.key_concurrency is not None:
        parts.append(f"{s.key_concurrency}/key")
    if s.rate_limit is not None and s.rate_period_s is not None:
        parts.append(f"{s.rate_limit}/{s.rate_period_s:g}s")
    if s.key_rate_limit is not None and s.key_rate_period_s is not None:
        parts.append(f"{s.key_rate_limit}/{s.key_rate_period_s:g}s/key")
    return ", ".join(parts) or "-"


def cmd_limit(args: argparse.Namespace) -> int:
    """``pgqueue limit`` (see ``_limit_with``), with the App's pools closed afterwards."""
    with _context.opened_app(args) as app:
        return _limit_with(app, args)


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smhd])\s*$")


def _limit_with(app: App, args: argparse.Namespace) -> int:
    """``limit QUEUE [--concurrency N|none] [--key-concurrency N|none] [--rate N/PERIOD|none]
    [--key-rate N/PERIOD|none] [--none]``: set a queue's flow-control limits at run time (each
    option given replaces that limit, the others stay; ``--none`` removes them all). Without
    options, print them."""
    current = next((s for s in app.stats() if s.queue == args.queue), None)
    limits: dict[str, Any] = {} if current is None or args.none else {
        "concurrency": current.concurrency, "key_concurrency": current.key_concurrency,
        "rate_limit": current.rate_limit, "rate_period": current.rate_period_s,
        "key_rate_limit": current.key_rate_limit, "key_rate_period": current.key_rate_period_s}
    given = [o for o in ("concurrency", "key_concurrency", "rate", "key_rate")
             if getattr(args, o)]
    if not given and not args.none:
        shown = _limits_text(current) if current is not None else "-"
        print(f"queue {args.queue!r}: {'no limits' if shown == '-' else shown}"
              + (f" ({current.running} running, {current.waiting_for_limit} held by a limit)"
                 if current is not None and shown != "-" else ""))
        return 0
    for option in ("concurrency", "key_concurrency"):
        text = getattr(args, option)
        if text is not None:
            limits[option] = None if text.strip().lower() == "none" else _count(option, text)
    for option, name in (("rate", "rate"), ("key_rate", "key-rate")):
        text = getattr(args, option)
        if text is None:
            continue
        if text.strip().lower() == "none":
            limits[f"{option}_limit"] = limits[f"{option}_period"] = None
            continue
        m = _RATE.match(text)
        if m is None:
            raise ValidationError(f"--{name} {text!r}: write starts per period, e.g. "
                                  "50/s, 1000/h, 10/30s (or none)")
        limits[f"{option}_limit"] = int(m[1])
        limits[f"{option}_period"] = float(m[2] or 1) * _UNITS[m[3]]
    done = app.set_queue_limits(args.queue, **limits)
    text = ", ".join(p for p in (
        f"{done.concurrency} running" if done.concurrency else "",
        f"{done.key_concurrency}/key" if done.key_concurrency else "",
        f"{done.rate_limit}/{done.rate_period_s:g}s" if done.rate_limit else "",
        f"{done.key_rate_limit}/{done.key_rate_period_s:g}s/key" if done.key_rate_limit
        else "") if p)
    print(f"queue {args.queue!r}: {text or 'no limits'} (workers apply it within a second)")
    return 0


def _count(option: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValidationError(f"--{option.replace('_', '-')} {text!r}: give a positive "
                              "integer, or none to remove the limit") from None


def cmd_failed(args: argparse.Namespace) -> int:
    """``pgqueue failed`` (see ``_failed_with``), with the App's pools closed afterwards."""
    with _context.opened_app(args) as app:
        return _failed_with(app, args)


def _failed_with(app: App, args: argparse.Namespace) -> int:
    """The failed-jobs archive: ``list``, ``show ID``, ``retry ID``/``retry --all``,
    ``purge``."""
    return int({"list": _list, "show": _show, "retry": _retry,
                "purge": _purge}[args.action](app, args))


def _list(app: App, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ValidationError("--limit must be at least 1")
    failed = app.failed(queue=args.queue, limit=args.limit)
    total = len(failed) if len(failed) < args.limit else app.count_failed(queue=args.queue)
    if args.json:
        print(json.dumps([failed_dict(f, brief=True) for f in failed], default=str))
        return 0
    if not failed:
        print("no failed jobs" + (f" in queue {args.queue!r}" if args.queue else ""))
        return 0
    print(table(("id", "queue", "task", "attempts", "failed at", "reason"),
                [(f.id, f.queue, f.task, f"{f.attempt}/{f.max_attempts}",
                  f.failed_at.strftime("%Y-%m-%d %H:%M:%S"), short(f.reason))
                 for f in failed]))
    if total > len(failed):
        print(f"\nshowing the newest {len(failed)} of {total} failed jobs; --limit {total} "
              "shows all")
    return 0


def _show(app: App, args: argparse.Namespace) -> int:
    f = app.get_failed(_need_id(args, "show", "`pgqueue failed list` shows the ids"))
    if args.json:
        print(json.dumps(failed_dict(f, brief=False), indent=2, default=str))
    else:
        print(failed_text(f))
    return 0


def _retry(app: App, args: argparse.Namespace) -> int:
    if args.all:
        if args.id is not None:
            raise ValidationError("`pgqueue failed retry` takes an ID or --all, not both")
        ids = app.retry_all_failed(queue=args.queue)
        print(f"re-driven {len(ids)} jobs")
    else:
        job_id = _need_id(args, "retry", "or --all to re-drive every failed job (--queue Q: "
                                         "only that queue's)")
        print(f"re-driven job {app.retry_failed(job_id)}")
    return 0


def _purge(app: App, args: argparse.Namespace) -> int:
    filters: dict[str, Any] = {"ids": args.ids or None, "queue": args.queue, "task": args.task,
                               "before": _before(args.before) if args.before else None}
    chosen = [k for k, v in filters.items() if v is not None]
    if args.all and chosen:
        raise ValidationError("`pgqueue failed purge --all` deletes every failed job; drop "
                              "--all to delete only those of IDs/--before/--queue/--task")
    if not args.all and not chosen:
        raise ValidationError("say which failed jobs to purge: IDs, --before, --queue, "
                              "--task, or --all for every one")
    count = app.count_failed(**filters)
    if count == 0:
        print("no failed jobs match; nothing purged")
        return 0
    if count > 1 and not args.yes and not _confirm(count):
        print("nothing purged")
        return 0
    print(f"purged {app.purge_failed(**filters)} failed jobs")
    return 0


def _confirm(count: int) -> bool:
    """Ask on the terminal whether to delete ``count`` jobs; without one, refuse (a script
    says --yes)."""
    if not sys.stdin.isatty():
        raise ValidationError(f"this would delete {count} failed jobs: pass --yes to "
                              "confirm (there is no terminal to ask)")
    try:
        return input(f"Delete {count} failed jobs? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _before(text: str) -> dt.datetime:
    """``--before``: an age (``30m``, ``12h``, ``7d``: that long ago) or an ISO date/time (UTC
    when it has no offset)."""
    m = _AGE.match(text)
    if m:
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=float(m[1]) * _UNITS[m[2]])
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(f"--before {text!r} is neither an age (30m, 12h, 7d) nor an "
                              "ISO date/time (2024-05-01, 2024-05-01T12:00+02:00)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _need_id(args: argparse.Namespace, action: str, hint: str) -> int:
    if args.id is None:
        raise ValidationError(f"`pgqueue failed {action}` needs a job ID; {hint}")
    return int(args.id)


def _known_queues(app: App) -> set[str]:
    """Queues pgqueue knows: with jobs, an archive, recent history or a stored pause state,
    and the queues of the app's tasks."""
    return {s.queue for s in app.stats()} | {t.queue for t in app.tasks.values()}


def cmd_pause(args: argparse.Namespace) -> int:
    """``pgqueue pause`` (see ``_pause_with``), with the App's pools closed afterwards."""
    with _context.opened_app(args) as app:
        return _pause_with(app, args)


def _pause_with(app: App, args: argparse.Namespace) -> int:
    """``pause QUEUE`` or ``resume QUEUE`` (the subcommand's name says which). An unknown queue
    is refused (a typo would store a new queue) unless ``pause --create``."""
    if not getattr(args, "create", False) and args.queue not in _known_queues(app):
        fix = ("pass --create to pause it before its first job" if args.command == "pause"
               else "there is nothing to resume")
        raise ValidationError(
            f"unknown queue {args.queue!r}: it has no jobs, no failed jobs and no recent "
            f"history{' and no task of --app uses it' if args.app else ''}; {fix}")
    if args.command == "pause":
        app.pause(args.queue)
    else:
        app.resume(args.queue)
    print(f"queue {args.queue!r} {args.command}d")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    """``pgqueue forget`` (see ``_forget_with``), with the App's pools closed afterwards."""
    with _context.opened_app(args) as app:
        return _forget_with(app, args)


def _forget_with(app: App, args: argparse.Namespace) -> int:
    """``forget QUEUE``: drop a queue's stored pause state (undo a mistyped ``pause``)."""
    if not app.forget_queue(args.queue):
        raise ValidationError(f"queue {args.queue!r} has no stored state to forget (it "
                              "was never paused or resumed)")
    left = app.count(args.queue)
    print(f"forgot queue {args.queue!r}" + (f" (its {left} jobs stay, and can be claimed)"
                                            if left else ""))
    return 0
