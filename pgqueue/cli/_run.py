"""Commands that run jobs: ``pgqueue worker`` and ``pgqueue demo``."""

from __future__ import annotations

import argparse
import logging
import time

from pgqueue._dsn import to_libpq, url_from_env
from pgqueue._embedded import EmbeddedPostgres, private_datadir
from pgqueue.cli import _context
from pgqueue.errors import EmbeddedServerError

__all__ = ["cmd_demo", "cmd_worker"]


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker for ``args.app`` until stopped (or, with ``--burst``, until idle).

    Flags win; otherwise the settings (QUEUE_ROUTES, PGQUEUE_CONCURRENCY, ... see
    pgqueue.config); otherwise the app's own task queues and the defaults.
    """
    app = _context.load_app(args.app)
    settings = _context.settings()
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


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo (:mod:`pgqueue.cli.demo`) on ``--database-url``, the environment's URL, or
    an embedded PostgreSQL in ``--data-dir`` (stopped afterwards, data kept)."""
    from pgqueue.cli import demo  # imported late: it defines its App and tasks at import

    logging.getLogger("pgqueue").setLevel(logging.ERROR)  # the progress line tells the story
    started = time.monotonic()
    url, server = _demo_database(args.database_url, args.data_dir)
    try:
        return demo.run_demo(url, workers=args.workers, started=started)
    finally:
        if server is not None:
            server.stop()


def _demo_database(database_url: str | None,
                   data_dir: str) -> tuple[str, EmbeddedPostgres | None]:
    """The demo's database URL, and the embedded server started for it (if one was)."""
    if database_url:
        return to_libpq(database_url, source="--database-url"), None
    found = url_from_env()
    if found:
        return to_libpq(found[0], source=f"env {found[1]}"), None
    print(f"No PGQUEUE_DATABASE_URL/DATABASE_URL set: starting an embedded PostgreSQL in "
          f"{data_dir}/ ...", flush=True)
    try:
        server = EmbeddedPostgres(data_dir, durable=True)
        return server.start(), server
    except EmbeddedServerError as exc:
        fallback = private_datadir()  # new and ours alone: never a shared, guessable path
        print(f"  ({exc}; using {fallback}/ instead)", flush=True)
        server = EmbeddedPostgres(fallback, durable=True)
        return server.start(), server
