"""The one task the benchmarks run: a no-op, on the queue ``bench``.

Both the benchmark driver (which enqueues) and the worker subprocess (which runs the jobs)
build their App here, so the task is registered (and its arguments validated) the way a real
application's would be.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pgqueue
from pgqueue._defaults import DEFAULT_SCHEMA

TASK = "bench.noop"
QUEUE = "bench"
SCHEMA = DEFAULT_SCHEMA


def make_app(dsn: str, handler: Callable[..., Any] | None = None, *,
             sync_handler: bool = False) -> pgqueue.App:
    """An App with ``bench.noop`` registered (``handler`` replaces the no-op body)."""
    app = pgqueue.App(dsn, schema=SCHEMA)

    if sync_handler:
        def noop_sync(i: int = 0) -> None:
            if handler is not None:
                handler(i)

        app.task(name=TASK, queue=QUEUE)(noop_sync)
    else:
        async def noop(i: int = 0) -> None:
            if handler is not None:
                handler(i)

        app.task(name=TASK, queue=QUEUE)(noop)
    return app
