"""Commands that run jobs: ``pgqueue worker`` and ``pgqueue demo``."""

from __future__ import annotations

import argparse
import logging
import shlex
import threading
import time

from pgqueue._dsn import redact, to_libpq, url_from_env
from pgqueue._embedded import EmbeddedPostgres, private_datadir
from pgqueue._embedded.server import PASSWORD_FILE
from pgqueue.cli import _context, _observe
from pgqueue.errors import ConfigurationError, EmbeddedServerError

__all__ = ["cmd_demo", "cmd_worker"]


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker for ``args.app`` until stopped (or, with ``--burst``, until idle).

    Flags win; otherwise the settings (QUEUE_ROUTES, PGQUEUE_CONCURRENCY, PGQUEUE_EVENT_LOOP,
    ... see pgqueue.config); otherwise the app's own task queues and the defaults.
    """
    app = _context.load_app(args.app)
    settings = _context.settings()
    url, source = app.database_url, "the app"
    if args.database_url:
        url, source = args.database_url, "--database-url"
    elif app.database_url is None and settings.database_url:
        url, source = settings.database_url, settings.source("database_url")
    if url is not None and (url != app.database_url or args.schema):
        app.use_database(url, source=source, schema=args.schema)
    elif args.schema:
        raise ConfigurationError("--schema needs a PostgreSQL database: pass --database-url or "
                                 "set PGQUEUE_DATABASE_URL", key="schema", source="command line")
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
        burst=args.burst, shutdown_timeout=args.shutdown_timeout,
        periodic=getattr(args, "periodic", True),
        event_loop=args.event_loop if args.event_loop is not None else settings.event_loop,
        unknown_task_grace=args.unknown_task_grace, **_observe.worker_options(args))
    return int(worker.run_forever())


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo (:mod:`pgqueue.cli.demo`) on ``--database-url``, the environment's URL, or
    an embedded PostgreSQL in ``--data-dir``; say which database it uses first and what to try
    next at the end. With ``--keep`` the demo's schema stays, and an embedded server keeps
    running until Ctrl-C."""
    from pgqueue.cli import demo  # imported late: it defines its App and tasks at import

    logging.getLogger("pgqueue").setLevel(logging.ERROR)  # the progress line tells the story
    started = time.monotonic()
    url, server, where, shown = _demo_database(args.database_url, args.data_dir)
    try:
        print(f"Using {where}: {shown}, schema {demo.DEMO_SCHEMA!r} (the demo's own; "
              "recreated on every run)", flush=True)
        status = demo.run_demo(url, workers=args.workers, started=started, force=args.force,
                               keep=args.keep)
        login = "" if server is None else _password_prefix(server)
        if login:  # the embedded server's URL, without its password: the prefix supplies it
            shown = shown.replace(":***@", "@", 1)
        print(_next_steps(shown, demo.DEMO_SCHEMA, embedded=server is not None, keep=args.keep,
                          login=login))
        if server is not None and args.keep:
            _serve_until_interrupted()
        return status
    finally:
        if server is not None:
            server.stop()


def _password_prefix(server: EmbeddedPostgres) -> str:
    """``PGPASSWORD="$(cat <datadir>/pgqueue.password)" `` for commands against the embedded
    server (its generated password stays in its 0600 file, never in the output), or ``""``
    for a server without a password file."""
    if server.datadir is None or not (server.datadir / PASSWORD_FILE).exists():
        return ""
    return f'PGPASSWORD="$(cat {shlex.quote(str(server.datadir / PASSWORD_FILE))})" '


def _next_steps(shown: str, schema: str, *, embedded: bool, keep: bool,
                login: str = "") -> str:
    """What to try after the demo on the database ``shown`` (a URL, password hidden): explore
    the kept data, or how to keep it. ``login`` prefixes each command (the embedded server's
    password, read from its file by the shell)."""
    if not keep:
        return ("\nWhat next: the demo's schema was removed. `pgqueue demo --keep` keeps the "
                "jobs (and the\nembedded server) to explore them with psql and `pgqueue "
                "status`; then the Quickstart in\nREADME.md shows how to queue jobs of your "
                "own application.")
    lines = ["", f"What next: the demo's data stays in schema {schema!r}. Explore it "
             + ("from another terminal while this one waits:" if embedded else "with:"),
             f"  {login}psql '{shown}' -c 'SELECT * FROM {schema}.queue_stats'",
             f"  {login}psql '{shown}' -c 'SELECT task, state, attempt FROM "
             f"{schema}.job_history LIMIT 10'",
             f"  {login}pgqueue status --database-url '{shown}' --schema {schema}",
             f"  {login}pgqueue failed list --database-url '{shown}' --schema {schema}"]
    if not embedded:
        lines.append(f"Remove it with: psql '{shown}' -c 'DROP SCHEMA {schema} CASCADE' (or "
                     "run the demo again: it starts clean)")
    return "\n".join(lines)


def _serve_until_interrupted() -> None:
    """Keep this process (and so the embedded server, its child) alive until Ctrl-C."""
    print("The embedded server keeps running; press Ctrl-C to stop it.", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("\nstopping the embedded server", flush=True)


def _demo_database(database_url: str | None,
                   data_dir: str) -> tuple[str, EmbeddedPostgres | None, str, str]:
    """The demo's database URL, the embedded server started for it (if one was), where it
    comes from, and the URL as the user gave it (to print, password hidden)."""
    if database_url:
        return (to_libpq(database_url, source="--database-url"), None,
                "the database of --database-url", redact(database_url))
    found = url_from_env()
    if found:
        return (to_libpq(found[0], source=f"env {found[1]}"), None,
                f"the database of {found[1]}", redact(found[0]))
    print(f"No PGQUEUE_DATABASE_URL/DATABASE_URL set: starting an embedded PostgreSQL in "
          f"{data_dir}/ ...", flush=True)
    try:
        server = EmbeddedPostgres(data_dir, durable=True)
        url = server.start()
        return url, server, f"an embedded PostgreSQL in {data_dir}/", redact(url)
    except EmbeddedServerError as exc:
        fallback = private_datadir()  # new and ours alone: never a shared, guessable path
        print(f"  ({exc}; using {fallback}/ instead)", flush=True)
        server = EmbeddedPostgres(fallback, durable=True)
        url = server.start()
        return url, server, f"an embedded PostgreSQL in {fallback}/", redact(url)
