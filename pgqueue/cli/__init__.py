"""The ``pgqueue`` command. Every subcommand is a thin layer over the Python API.

::

    pgqueue demo [--keep]                         # the main job: a demo on an embedded server
    pgqueue migrate [--to REV] [--sql]            # pgqueue's schema migrations
    pgqueue worker MODULE:APP [--queues a,b] [--concurrency N] [--burst] [--schema S]
                  [--metrics-port N] [--metrics-host H] [--queue-metrics]
    pgqueue enqueue TASK --app MODULE:APP --args JSON [--queue Q] [--priority P] [--delay S]
    pgqueue status [--json] [--check [--max-age S]]
    pgqueue metrics [--port 9465] [--host H]      # queue gauges for Prometheus
    pgqueue failed list | show ID | retry ID | retry --all | purge IDS|--before|--queue|--task|--all
    pgqueue pause QUEUE [--create] / resume QUEUE / forget QUEUE
    pgqueue periodic list|pause NAME|resume NAME|run-now NAME
    pgqueue config                                # settings and their sources
    pgqueue dashboard [--host H] [--port 8765] [--read-only] [--no-auth]   # the web dashboard

The database comes from ``--database-url``, else the settings, resolved as ``pgqueue.App()``
resolves them (:func:`pgqueue.config.find_settings`: ``PGQUEUE_DATABASE_URL``, ``QUEUE_CONFIG``,
``.env``, ``app-config.yaml``, ``DATABASE_URL``); the schema from ``--schema``, else the same
settings (``PGQUEUE_SCHEMA``, ``QUEUE_TABLE=schema.jobs``, ``postgres.schema``).
Errors print one line saying what to do. Exit status (:data:`EXIT_CODES`): 0 done; 1 the
database or the embedded server failed (unreachable, a statement failed); 2 the command cannot
be done as asked (bad flag or argument, configuration, schema not migrated, unknown task, queue
or job); 130 interrupted (Ctrl-C); 141 the reader of the output went away (``| head``).

The package: this module holds the parser (every subcommand and its flags, in one place) and
:func:`main`; the commands live by group in ``_schema`` (migrate, config), ``_jobs`` (enqueue,
status, failed, pause, resume, forget), ``_run`` (worker, demo), ``_periodic``
(periodic), ``_observe`` (metrics, the worker's observability flags, status --check) and
``_dashboard`` (the web dashboard, :mod:`pgqueue.dashboard`);
``_context`` finds the settings, the database and the App; ``_format`` prints tables;
:mod:`pgqueue.cli.demo` is the demo, written with the public API only. Nothing outside
this package imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from pgqueue import __version__, _logging
from pgqueue._defaults import DEFAULT_SCHEMA, DEFAULT_UNKNOWN_TASK_GRACE, EVENT_LOOPS
from pgqueue.cli import _dashboard, _observe, _periodic
from pgqueue.cli._jobs import (
    cmd_enqueue,
    cmd_failed,
    cmd_forget,
    cmd_limit,
    cmd_pause,
)
from pgqueue.cli._run import cmd_demo, cmd_worker
from pgqueue.cli._schema import cmd_config, cmd_migrate
from pgqueue.errors import (
    ConfigurationError,
    DatabaseError,
    EmbeddedServerError,
    MigrationError,
    NotMigratedError,
    PgQueueError,
)

__all__ = ["EXIT_CODES", "build_parser", "main"]

#: The exit status of each outcome, the same from every subcommand.
EXIT_CODES = {
    "ok": 0,
    "failure": 1,       # the database or the embedded server failed
    "usage": 2,         # bad flags, configuration, input, not migrated or a migration conflict;
                        # unknown task/queue/job
    "interrupted": 130,  # Ctrl-C
    "broken pipe": 141,  # the reader of the output went away (pgqueue ... | head)
}

_EPILOG = """\
The database: --database-url, else PGQUEUE_DATABASE_URL, else DATABASE_URL, else the settings
(QUEUE_CONFIG, .env, app-config.yaml; see `pgqueue config`).

exit status: 0 done; 1 the database or the embedded server failed (unreachable, a statement
failed); 2 the command cannot be done as asked (bad flag, configuration, schema not migrated,
unknown task, queue or job id); 130 interrupted; 141 the output's reader went away (| head).

`pgqueue COMMAND --help` describes each command."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs (examples stay readable)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``pgqueue`` argument parser; each subcommand stores its handler as ``func``."""
    p = argparse.ArgumentParser(
        prog="pgqueue", formatter_class=_Formatter, epilog=_EPILOG,
        description="pgqueue: a transactional job queue on PostgreSQL.\n\n"
                    "Start with `pgqueue demo` (no setup: it runs an embedded PostgreSQL).")
    p.add_argument("--version", action="version", version=f"pgqueue {__version__}")
    p.add_argument("--log-level", default=os.environ.get("PGQUEUE_LOG_LEVEL", "INFO"),
                   help="DEBUG shows one line per job state change (default: "
                        "PGQUEUE_LOG_LEVEL or INFO); accepted after the command too")
    p.add_argument("--log-format", choices=_logging.LOG_FORMATS,
                   default=os.environ.get("PGQUEUE_LOG_FORMAT", "keyvalue"),
                   help="keyvalue lines (default) or json: one JSON object per line "
                        "(default: PGQUEUE_LOG_FORMAT); accepted after the command too")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=summary, description=description,
                            formatter_class=_Formatter, epilog=_EPILOG.split("\n\n")[1])
        # after the command too; SUPPRESS keeps the value given before it (or the default)
        sp.add_argument("--log-level", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sp.add_argument("--log-format", choices=_logging.LOG_FORMATS, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
        return sp

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--database-url", help="default: PGQUEUE_DATABASE_URL, DATABASE_URL, "
                                               "the settings")
        sp.add_argument("--schema", help="pgqueue's schema (default: --app's, else the "
                        "configured one: PGQUEUE_SCHEMA, QUEUE_TABLE, app-config.yaml, .env; "
                        f"else {DEFAULT_SCHEMA})")

    sp = command("demo", "run the demo (embedded PostgreSQL when no URL is set)", """\
Run a demo: about 80 jobs (immediate, delayed, prioritised, flaky, one that ends in the
failed archive, one written in the same transaction as an order) run by workers with a live
progress line, then the per-queue summary and an SQL query over the history.

Without a URL it starts an embedded PostgreSQL in --data-dir (stopped at the end unless
--keep). With --database-url (or PGQUEUE_DATABASE_URL/DATABASE_URL) it says which database it
uses and works only in its own schema, pgqueue_demo, which it recreates on every run; it
refuses a non-empty schema it did not create unless --force.""")
    sp.add_argument("--database-url", help="use this database instead of an embedded one")
    sp.add_argument("--data-dir", default=".pgqueue", help="embedded server's data dir "
                                                           "(default .pgqueue)")
    sp.add_argument("--workers", type=int, default=2, help="worker count (default 2)")
    sp.add_argument("--keep", action="store_true",
                    help="keep the embedded server running afterwards (and, on your database, "
                         "the demo's schema), to explore the jobs with psql or pgqueue status")
    sp.add_argument("--force", action="store_true",
                    help="use the demo schema even if it holds tables the demo did not create "
                         "(they are dropped)")
    sp.set_defaults(func=cmd_demo)

    sp = command("migrate", "upgrade (or --to base: remove) pgqueue's schema", """\
Create or upgrade pgqueue's tables to the newest revision (or --to REV); --to base removes
them. --sql prints the DDL instead of running it, for a DBA or your own migration tool.""")
    common(sp)
    sp.add_argument("--to", help="target revision (default head; 'base' removes everything)")
    sp.add_argument("--sql", action="store_true",
                    help="print the SQL instead of running it (for psql -v ON_ERROR_STOP=1 -f; "
                    "with --to base: the removal)")
    sp.set_defaults(func=cmd_migrate)

    sp = command("worker", "run a worker for MODULE:APP", """\
Run a worker for your App until stopped (Ctrl-C or SIGTERM finish the running jobs first).

MODULE:APP is the import path of a pgqueue.App (or of a function without parameters that
returns one), e.g. shop.jobs:app. The worker takes the queues of --queues, else QUEUE_ROUTES,
else the queues of the app's tasks. --burst stops once nothing is left that it can run, and
says what is left (paused queues, jobs under another worker's lease, later jobs).""")
    sp.add_argument("app", help="import path of your pgqueue.App, e.g. shop.jobs:app")
    sp.add_argument("--database-url", help="default: the app's URL, PGQUEUE_DATABASE_URL, "
                                           "DATABASE_URL, the settings")
    sp.add_argument("--schema", help="pgqueue's schema (default: the app's)")
    sp.add_argument("--queues", help="comma-separated queues (default: QUEUE_ROUTES, else the "
                    "app's task queues)")
    sp.add_argument("--concurrency", type=int,
                    help="jobs at once (default: PGQUEUE_CONCURRENCY or 1)")
    sp.add_argument("--burst", action="store_true",
                    help="exit 0 once nothing is left that this worker can run now")
    sp.add_argument("--poll-interval", type=float,
                    help="seconds between polls (default: PGQUEUE_POLL_INTERVAL or 1.0)")
    sp.add_argument("--shutdown-timeout", type=float, default=30.0,
                    help="seconds running jobs get to finish at shutdown (default 30)")
    sp.add_argument("--event-loop", choices=EVENT_LOOPS,
                    help="the worker's event loop: asyncio's own, uvloop (pip install "
                         "'pgqueue-tx[uvloop]'; 8-21%% less CPU per job measured) or auto "
                         "(uvloop when installed); default: PGQUEUE_EVENT_LOOP or asyncio")
    sp.add_argument("--no-periodic", dest="periodic", action="store_false",
                    help="do not fire the app's periodic jobs on this worker")
    sp.add_argument("--unknown-task-grace", type=float, default=DEFAULT_UNKNOWN_TASK_GRACE,
                    help="seconds after its enqueue a job of a task this worker does not know "
                         "is put back for a worker that knows it (rolling deploys) before it "
                         "is archived (default 300)")
    _observe.add_worker_flags(sp)
    sp.set_defaults(func=cmd_worker)

    sp = command("enqueue", "enqueue one job", """\
Enqueue one job and print its id and queue.

With --app MODULE:APP (recommended) the task must be registered there: the job goes to the
task's queue with its priority and attempts, and --args is checked against its signature.
Without --app nothing is checked: the job goes to --queue, else the queue `default`, and the
output says so.

  pgqueue enqueue send_confirmation --app shop.jobs:app --args '{"order_id": 42}'""")
    common(sp)
    sp.add_argument("task", help="the task's name (as registered with @app.task)")
    sp.add_argument("--args", default="{}", help="JSON object of arguments (default {})")
    sp.add_argument("--app", help="MODULE:APP whose registered task gives the queue and "
                                  "checks the arguments")
    sp.add_argument("--queue", help="default: the task's queue (with --app), else 'default'")
    sp.add_argument("--priority", type=int, help="0-1000, lower runs first (default 20)")
    sp.add_argument("--delay", type=float, help="seconds before it may run")
    sp.add_argument("--max-attempts", type=int)
    sp.add_argument("--unique-key", help="skip the insert while a live job holds this key")
    sp.add_argument("--concurrency-key", help="at most the queue's key_concurrency (default 1) "
                                              "jobs with this key run at once")
    sp.add_argument("--json", action="store_true", help="print {id, queue, task} as JSON")
    sp.set_defaults(func=cmd_enqueue)

    sp = command("status", "per-queue counts", """\
Per-queue counts: waiting (ready now), scheduled (later), running, failed (in the archive),
finished/1h (succeeded or cancelled in the last hour) and the oldest wait.
Exit status 1 if the database does not answer.""")
    common(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    _observe.add_status_flags(sp)
    sp.set_defaults(func=_observe.cmd_status_check)

    _failed_parser(command("failed", "the failed-jobs archive: list, show, retry, purge", """\
Jobs that used all their attempts (or were refused) wait in the failed-jobs archive until you
re-drive or purge them.

  pgqueue failed list [--queue Q] [--limit N]
  pgqueue failed show ID [--json]
  pgqueue failed retry ID | pgqueue failed retry --all [--queue Q]
  pgqueue failed purge ID... | --before 7d | --queue Q | --task T | --all  [--yes]"""),
                   common)

    sp = command("config", "show the settings and where each came from",
                 "Print every setting, its value (passwords hidden) and where it came from.")
    sp.set_defaults(func=cmd_config)

    for name, summary, text in (
            ("pause", "pause a queue for every worker",
             "Pause a queue: no worker claims its jobs until `pgqueue resume` (running jobs "
             "finish).\nAn unknown queue (no jobs, no recent history, not a queue of --app's "
             "tasks) is refused:\na typo would create a new queue; --create pauses it anyway."),
            ("resume", "resume a paused queue",
             "Let workers claim a paused queue's jobs again.")):
        sp = command(name, summary, text)
        common(sp)
        sp.add_argument("queue")
        sp.add_argument("--app", help="MODULE:APP whose tasks' queues count as known")
        if name == "pause":
            sp.add_argument("--create", action="store_true",
                            help="pause the queue even if pgqueue does not know it yet")
        sp.set_defaults(func=cmd_pause)

    sp = command("forget", "forget a queue's pause state (undo a mistyped pause)", """\
Drop what is stored about a queue: its pause state (its jobs can be claimed again) and its
line in `pgqueue status` once it has no jobs. Jobs are not touched.""")
    common(sp)
    sp.add_argument("queue")
    sp.set_defaults(func=cmd_forget)

    sp = command("limit", "show or set a queue's flow-control limits", """\
Show or set a queue's limits, enforced in the database across every worker: at most
--concurrency running jobs, at most --key-concurrency running jobs per concurrency key
(default 1 for keyed jobs unless only --key-rate is set), at most --rate starts per period, at
most --key-rate starts per period for each concurrency key. A held-back job waits (it is not
failed). Each option replaces that limit (none removes it); the others stay. A worker of an
app that declares the queue's limits with app.queue(...) writes them again when it starts.

  pgqueue limit emails --concurrency 10
  pgqueue limit api --rate 50/s          (also 1000/h, 10/30s)
  pgqueue limit crm --key-rate 5/s       (5 starts a second per concurrency key)
  pgqueue limit emails --none            (remove every limit)""")
    common(sp)
    sp.add_argument("queue")
    sp.add_argument("--concurrency", help="running jobs at most (N, or none)")
    sp.add_argument("--key-concurrency", help="running jobs per concurrency key (N, or none)")
    sp.add_argument("--rate", help="starts per period: 50/s, 1000/h, 10/30s (or none)")
    sp.add_argument("--key-rate", help="starts per period per concurrency key: 5/s (or none)")
    sp.add_argument("--none", action="store_true", help="remove every limit of the queue")
    sp.set_defaults(func=cmd_limit)
    _periodic.add_parser(command, common)
    _observe.add_parser(command, common)
    _dashboard.add_parser(command, common)
    return p


def _failed_parser(sp: argparse.ArgumentParser,
                   common: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``failed`` subcommands, each with its own flags."""
    actions = sp.add_subparsers(dest="action", metavar="ACTION")

    def action(name: str, summary: str) -> argparse.ArgumentParser:
        ap = actions.add_parser(name, help=summary, description=summary)
        ap.add_argument("--log-level", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        common(ap)
        return ap

    ap = action("list", "list archived jobs, newest first (says how many more there are)")
    ap.add_argument("--queue")
    ap.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ap.add_argument("--json", action="store_true")
    ap = action("show", "one archived job: arguments, reason, each attempt's traceback")
    ap.add_argument("id", type=int, nargs="?")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap = action("retry", "re-drive archived jobs: back to waiting with attempt 0")
    ap.add_argument("id", type=int, nargs="?")
    ap.add_argument("--all", action="store_true", help="every archived job (of --queue)")
    ap.add_argument("--queue")
    ap = action("purge", "delete archived jobs (asks first when more than one)")
    ap.add_argument("ids", type=int, nargs="*", metavar="ID")
    ap.add_argument("--before", help="failed before: an ISO date/time (UTC unless it says) "
                                     "or an age such as 30m, 12h, 7d")
    ap.add_argument("--queue")
    ap.add_argument("--task")
    ap.add_argument("--all", action="store_true", help="every archived job")
    ap.add_argument("--yes", "-y", action="store_true", help="do not ask")
    sp.set_defaults(func=cmd_failed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pgqueue`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit
    status (:data:`EXIT_CODES`): 0 on success, 1 when the database or the embedded server
    failed, 2 for a bad command line or any other :class:`pgqueue.PgQueueError` (printed as
    one line), 130 on Ctrl-C, 141 when stdout's reader went away."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader (| head) has what it wanted; stop quietly, and keep the interpreter's
        # final flush from failing again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_CODES["broken pipe"]
    except (NotMigratedError, MigrationError) as exc:  # a setup step is missing or conflicts:
        # the database itself is fine
        print(f"pgqueue: {exc}", file=sys.stderr)
        return EXIT_CODES["usage"]
    except (DatabaseError, EmbeddedServerError) as exc:
        print(f"pgqueue: {exc}", file=sys.stderr)
        return EXIT_CODES["failure"]
    except PgQueueError as exc:
        print(f"pgqueue: {exc}", file=sys.stderr)
        return EXIT_CODES["usage"]
    except KeyboardInterrupt:
        return EXIT_CODES["interrupted"]


def _main(argv: Sequence[str] | None) -> int:
    """Parse, then run the subcommand; errors other than a broken pipe are handled by
    :func:`main`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None or (args.command == "failed" and args.action is None):
        (parser if args.command is None else _subparser(parser, "failed")).print_help()
        sys.stdout.flush()
        return EXIT_CODES["ok"] if args.command is None else EXIT_CODES["usage"]
    if args.log_format not in _logging.LOG_FORMATS:  # from PGQUEUE_LOG_FORMAT
        raise ConfigurationError(f"must be one of {', '.join(_logging.LOG_FORMATS)}, not "
                                 f"{args.log_format!r}", key="log format",
                                 source="PGQUEUE_LOG_FORMAT")
    _logging.configure(args.log_level.upper(), args.log_format)
    status = int(args.func(args))
    sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    return status


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise KeyError(name)
