"""The ``pgqueue`` command. Every subcommand is a thin layer over the Python API.

::

    pgqueue demo                                  # the main job: a demo on an embedded server
    pgqueue migrate [--to REV] [--sql]            # pgqueue's schema migrations
    pgqueue worker MODULE:APP [--queues a,b] [--concurrency N] [--burst]
    pgqueue enqueue TASK --args JSON [--queue Q] [--priority P] [--delay SECONDS]
    pgqueue status [--json]
    pgqueue failed list|show ID|retry ID|retry --all|purge
    pgqueue pause QUEUE / pgqueue resume QUEUE
    pgqueue config                                # settings and their sources

The database comes from ``--database-url``, else ``PGQUEUE_DATABASE_URL``, else ``DATABASE_URL``,
else the settings of :mod:`pgqueue.config` (``QUEUE_CONFIG``, ``.env``, ``app-config.yaml``).
Errors print one line saying what to do, and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from pgqueue import _logging
from pgqueue._defaults import DEFAULT_SCHEMA
from pgqueue._dsn import to_libpq, url_from_env
from pgqueue.app import App
from pgqueue.errors import ConfigurationError, DatabaseUnavailableError, PgQueueError

__all__ = ["main"]


def _settings() -> Any:
    """Settings from app-config.yaml and .env in the current directory, then the environment
    (see pgqueue.config)."""
    from pgqueue.compat import default_settings

    return default_settings()


def _database_url(args: argparse.Namespace) -> tuple[str, str]:
    if getattr(args, "database_url", None):
        return to_libpq(args.database_url, source="--database-url"), "--database-url"
    found = url_from_env()
    if found is not None:
        return to_libpq(found[0], source=f"env {found[1]}"), f"env {found[1]}"
    settings = _settings()
    if settings.database_url:
        return settings.database_url, settings.source("database_url")
    raise ConfigurationError(
        "no database configured: pass --database-url or set PGQUEUE_DATABASE_URL "
        "(or DATABASE_URL, QUEUE_CONFIG) to postgresql://user@host:5432/dbname",
        key="database_url")


def _load_app(spec: str, args: argparse.Namespace) -> App:
    """Import ``module:attribute`` (an App, or a callable returning one)."""
    if ":" not in spec:
        raise ConfigurationError(f"{spec!r} is not MODULE:APP (e.g. myproject.jobs:app)",
                                 key="app", source="command line")
    module_name, attr = spec.split(":", 1)
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import module {module_name!r}: {exc}", key="app",
                                 source="command line") from exc
    obj = getattr(module, attr, None)
    if callable(obj) and not isinstance(obj, App):
        obj = obj()
    if not isinstance(obj, App):
        raise ConfigurationError(f"{spec!r} is not a pgqueue.App", key="app",
                                 source="command line")
    return obj


def _app(args: argparse.Namespace) -> App:
    if getattr(args, "app", None):
        app = _load_app(args.app, args)
        if getattr(args, "database_url", None):
            app.use_database(args.database_url, source="--database-url")
        return app
    url, _ = _database_url(args)
    return App(database_url=url, schema=args.schema)


# ---- subcommands -----------------------------------------------------------------------------
def cmd_migrate(args: argparse.Namespace) -> int:
    from pgqueue import migrations

    if args.sql:
        print(migrations.sql(schema=args.schema, to=args.to or "head"))
        return 0
    url, _ = _database_url(args)
    target = args.to or "head"
    before = _current(url, args.schema)
    if target == "base" or (before is not None and target != "head" and target < before):
        migrations.downgrade(url, schema=args.schema, to=target)
    else:
        migrations.upgrade(url, schema=args.schema, to=target)
    after = _current(url, args.schema)
    print(f"pgqueue schema {args.schema!r}: {before or 'none'} -> {after or 'base (removed)'}")
    return 0


def _current(url: str, schema: str) -> str | None:
    from pgqueue import migrations

    try:
        return migrations.current(url, schema=schema)
    except Exception as exc:
        _raise_db(exc)
        raise


def _raise_db(exc: Exception) -> None:
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.OperationalError):
        raise DatabaseUnavailableError(
            f"the database did not answer ({str(exc.orig).strip().splitlines()[0]}); check the "
            "URL and that the server is running") from exc


def cmd_worker(args: argparse.Namespace) -> int:
    """Flags win; otherwise the settings (QUEUE_ROUTES, PGQUEUE_CONCURRENCY, ... see
    pgqueue.config); otherwise the app's own task queues and the defaults."""
    app = _load_app(args.app, args)
    settings = _settings()
    if args.database_url:
        app.use_database(args.database_url, source="--database-url")
    elif app.database_url is None and settings.database_url:
        app.use_database(settings.database_url, source=settings.source("database_url"))
    if args.queues:
        queues: list[str] | None = [q.strip() for q in args.queues.split(",") if q.strip()]
    else:
        queues = list(settings.routes) or None
    if app.database_url is not None:
        app.driver.check()
    worker = app.worker(
        queues=queues,
        concurrency=args.concurrency if args.concurrency is not None else settings.concurrency,
        poll_interval=(args.poll_interval if args.poll_interval is not None
                       else settings.poll_interval),
        burst=args.burst, shutdown_timeout=args.shutdown_timeout)
    return int(worker.run_forever())


def cmd_config(args: argparse.Namespace) -> int:
    """Print every setting, its value (passwords hidden) and where it came from."""
    rows = _settings().describe()
    print(_table(("setting", "value", "source"), rows))
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    app = _app(args)
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
    app = _app(args)
    try:
        stats = app.stats()
    except DatabaseUnavailableError as exc:
        if args.json:
            print(json.dumps({"database": "unreachable", "error": str(exc)}))
        else:
            print(f"database unreachable: {exc}")
        return 1
    if args.json:
        print(json.dumps({"database": "ok", "queues": [
            {k: v for k, v in dataclasses.asdict(s).items() if k != "extra"} for s in stats]}))
        return 0
    headers = ("queue", "paused", "waiting", "scheduled", "running", "failed", "done/1h",
               "oldest wait")
    rows = [(s.queue, "yes" if s.paused else "", s.waiting, s.scheduled, s.running, s.failed,
             s.finished_last_hour, _age(s.oldest_wait_s)) for s in stats]
    print(_table(headers, rows) if rows else "no queues yet")
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_failed(args: argparse.Namespace) -> int:
    app = _app(args)
    action = args.action
    if action == "list":
        failed = app.failed(queue=args.queue, limit=args.limit)
        if args.json:
            print(json.dumps([_failed_dict(f, brief=True) for f in failed], default=str))
        elif failed:
            print(_table(("id", "queue", "task", "attempts", "failed at", "reason"),
                         [(f.id, f.queue, f.task, f"{f.attempt}/{f.max_attempts}",
                           f.failed_at.strftime("%Y-%m-%d %H:%M:%S"), _short(f.reason))
                          for f in failed]))
        else:
            print("no failed jobs")
    elif action == "show":
        f = app.get_failed(_need_id(args))
        print(json.dumps(_failed_dict(f, brief=False), indent=2, default=str))
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


def _short(text: str, n: int = 60) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= n else line[: n - 3] + "..."


def _failed_dict(f: Any, *, brief: bool) -> dict[str, Any]:
    d = dataclasses.asdict(f)
    if brief:
        d.pop("errors", None)
    return d


def cmd_pause(args: argparse.Namespace) -> int:
    app = _app(args)
    if args.command == "pause":
        app.pause(args.queue)
    else:
        app.resume(args.queue)
    print(f"queue {args.queue!r} {args.command}d")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pgqueue.demo import run_demo

    return run_demo(database_url=args.database_url, data_dir=args.data_dir,
                    workers=args.workers)


# ---- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgqueue", description="pgqueue: a transactional job "
                                "queue on PostgreSQL")
    p.add_argument("--log-level", default=os.environ.get("PGQUEUE_LOG_LEVEL", "INFO"),
                   help="DEBUG shows one line per job state change (default INFO)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--database-url", help="default: PGQUEUE_DATABASE_URL, DATABASE_URL")
        sp.add_argument("--schema", default=os.environ.get("PGQUEUE_SCHEMA", DEFAULT_SCHEMA))

    sp = sub.add_parser("demo", help="run the demo (embedded PostgreSQL when no URL is set)")
    sp.add_argument("--database-url", help="use this database instead of the embedded one")
    sp.add_argument("--data-dir", default=".pgqueue", help="embedded server's data dir")
    sp.add_argument("--workers", type=int, default=2, help="worker count (default 2)")
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("migrate", help="upgrade (or --to base: remove) pgqueue's schema")
    common(sp)
    sp.add_argument("--to", help="target revision (default head; 'base' removes everything)")
    sp.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    sp.set_defaults(func=cmd_migrate)

    sp = sub.add_parser("worker", help="run a worker for MODULE:APP")
    sp.add_argument("app", help="import path of your pgqueue.App, e.g. myproject.jobs:app")
    sp.add_argument("--database-url")
    sp.add_argument("--queues", help="comma-separated queues (default: QUEUE_ROUTES, else the "
                    "app's task queues)")
    sp.add_argument("--concurrency", type=int,
                    help="jobs at once (default: PGQUEUE_CONCURRENCY or 1)")
    sp.add_argument("--burst", action="store_true", help="exit 0 once the queues are empty")
    sp.add_argument("--poll-interval", type=float,
                    help="seconds between polls (default: PGQUEUE_POLL_INTERVAL or 1.0)")
    sp.add_argument("--shutdown-timeout", type=float, default=30.0)
    sp.set_defaults(func=cmd_worker)

    sp = sub.add_parser("enqueue", help="enqueue one job")
    common(sp)
    sp.add_argument("task")
    sp.add_argument("--args", default="{}", help="JSON object of arguments")
    sp.add_argument("--app", help="MODULE:APP, to validate against the registered task")
    sp.add_argument("--queue")
    sp.add_argument("--priority", type=int)
    sp.add_argument("--delay", type=float, help="seconds")
    sp.add_argument("--max-attempts", type=int)
    sp.add_argument("--unique-key")
    sp.set_defaults(func=cmd_enqueue)

    sp = sub.add_parser("status", help="per-queue counts")
    common(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("failed", help="the failed-jobs archive: list|show ID|retry ID|--all|purge")
    common(sp)
    sp.add_argument("action", choices=("list", "show", "retry", "purge"))
    sp.add_argument("id", nargs="?", type=int)
    sp.add_argument("--all", action="store_true", help="with retry: re-drive every failed job")
    sp.add_argument("--queue")
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_failed)

    sp = sub.add_parser("config", help="show the settings and where each came from")
    sp.set_defaults(func=cmd_config)

    for name in ("pause", "resume"):
        sp = sub.add_parser(name, help=f"{name} a queue for every worker")
        common(sp)
        sp.add_argument("queue")
        sp.set_defaults(func=cmd_pause)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _logging.configure(args.log_level.upper())
    try:
        return int(args.func(args))
    except PgQueueError as exc:
        print(f"pgqueue: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
