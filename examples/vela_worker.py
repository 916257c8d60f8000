"""A Vela-style worker, configured only by ``VELA_QUEUE_*`` (or ``QUEUE_*``) environment
variables.

The "server" half publishes builds to three channels (queues); the worker consumes only the
routes of its configuration (``VELA_QUEUE_ROUTES``), so builds published elsewhere stay queued.

Memory (the default)::

    VELA_QUEUE_ROUTES=vela,linux python examples/vela_worker.py

PostgreSQL (after ``pgqueue migrate``), by configuration only::

    VELA_QUEUE_DRIVER=postgres \\
    VELA_QUEUE_CONFIG=postgresql://postgres@127.0.0.1:5432/vela \\
    VELA_QUEUE_ROUTES=vela,linux \\
    python examples/vela_worker.py

``VELA_QUEUE_CLUSTER=db1:5432,db2:5432`` makes it a multi-host connection that follows a
failover. Like Vela, pgqueue does not back up or create your database: migrate pgqueue's
schema into an existing database with ``pgqueue migrate``.
"""

from __future__ import annotations

import time

import pgqueue
from pgqueue import load_settings

CHANNELS = ("vela", "linux", "windows")


def main() -> None:
    settings = load_settings()  # defaults, then the environment: nothing else
    for key, value, source in settings.describe():
        print(f"  {key:<14} {value:<40} {source}")
    routes = settings.routes or ("vela",)

    app = pgqueue.App.from_settings(settings)
    built: list[str] = []

    @app.task(name="build", max_attempts=settings.max_attempts)
    def build(repo: str, number: int) -> None:
        built.append(f"{repo}#{number}")

    # the server: publish two builds to every channel
    for channel in CHANNELS:
        for number in (1, 2):
            build.options(queue=channel).enqueue(repo=f"octocat/{channel}", number=number)

    # the worker: consumes exactly its routes
    options = settings.worker_options()
    options["queues"] = list(routes)
    worker = app.worker(**options)
    print(f"worker consumes: {', '.join(worker.queues)}")
    worker.start_in_thread()
    deadline = time.monotonic() + 20
    while any(app.count(route) for route in routes):
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)
    worker.stop()
    worker.join(10)
    print(f"built: {', '.join(sorted(built))}")
    for channel in CHANNELS:
        print(f"left in {channel}: {app.count(channel)}")
    app.close()


if __name__ == "__main__":
    try:
        main()
    except pgqueue.PgQueueError as exc:
        raise SystemExit(f"error: {exc}") from None
