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

The database comes from ``--database-url``, else the settings, resolved as ``pgqueue.App()``
resolves them (:func:`pgqueue.config.find_settings`: ``PGQUEUE_DATABASE_URL``, ``QUEUE_CONFIG``,
``.env``, ``app-config.yaml``, ``DATABASE_URL``); the schema from ``--schema``, else the same
settings (``PGQUEUE_SCHEMA``, ``QUEUE_TABLE=schema.jobs``, ``postgres.schema``).
Errors print one line saying what to do, and exit with status 2.

The package: this module holds the parser (every subcommand and its flags, in one place) and
:func:`main`; the commands live by group in ``_schema`` (migrate, config), ``_jobs`` (enqueue,
status, failed, pause, resume) and ``_run`` (worker, demo); ``_context`` finds the settings, the
database and the App; ``_format`` prints tables; :mod:`pgqueue.cli.demo` is the demo, written
with the public API only. Nothing outside this package imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pgqueue import _logging
from pgqueue._defaults import DEFAULT_SCHEMA
from pgqueue.cli._jobs import cmd_enqueue, cmd_failed, cmd_pause, cmd_status
from pgqueue.cli._run import cmd_demo, cmd_worker
from pgqueue.cli._schema import cmd_config, cmd_migrate
from pgqueue.errors import PgQueueError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``pgqueue`` argument parser; each subcommand stores its handler as ``func``."""
    p = argparse.ArgumentParser(prog="pgqueue", description="pgqueue: a transactional job "
                                "queue on PostgreSQL")
    p.add_argument("--log-level", default=os.environ.get("PGQUEUE_LOG_LEVEL", "INFO"),
                   help="DEBUG shows one line per job state change (default INFO)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--database-url", help="default: PGQUEUE_DATABASE_URL, DATABASE_URL")
        sp.add_argument("--schema", help="pgqueue's schema (default: the configured one: "
                        f"PGQUEUE_SCHEMA, QUEUE_TABLE, app-config.yaml, .env; else "
                        f"{DEFAULT_SCHEMA})")

    sp = sub.add_parser("demo", help="run the demo (embedded PostgreSQL when no URL is set)")
    sp.add_argument("--database-url", help="use this database instead of the embedded one")
    sp.add_argument("--data-dir", default=".pgqueue", help="embedded server's data dir")
    sp.add_argument("--workers", type=int, default=2, help="worker count (default 2)")
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("migrate", help="upgrade (or --to base: remove) pgqueue's schema")
    common(sp)
    sp.add_argument("--to", help="target revision (default head; 'base' removes everything)")
    sp.add_argument("--sql", action="store_true",
                    help="print the SQL instead of running it (for psql -v ON_ERROR_STOP=1 -f; "
                    "with --to base: the removal)")
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
    """Run the ``pgqueue`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit
    status: 0 on success, 2 for a :class:`pgqueue.PgQueueError` (printed as one line), 130 on
    Ctrl-C, and what the subcommand returns otherwise."""
    args = build_parser().parse_args(argv)
    _logging.configure(args.log_level.upper())
    try:
        return int(args.func(args))
    except PgQueueError as exc:
        print(f"pgqueue: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
