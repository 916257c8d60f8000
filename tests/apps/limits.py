"""An application for the flow-control tests, run as real worker processes
(``pgqueue worker tests.apps.limits:app``).

The task ``span`` records when its handler ran (start and end, on this machine's clock) in the
table ``test_spans`` (created by the tests), so a test can measure the largest overlap.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import psycopg

import pgqueue

app = pgqueue.App()


_local = threading.local()


def _record(job_id: int, key: str | None, started: float, ended: float) -> None:
    """Insert the span on this thread's own connection (opened once: a connection per job
    would make the job, and so the test, much slower)."""
    conn: psycopg.Connection[tuple[object, ...]] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(os.environ["PGQUEUE_DATABASE_URL"],
                                             autocommit=True)
    conn.execute("INSERT INTO test_spans (job_id, key, started, ended, pid) "
                 "VALUES (%s, %s, %s, %s, %s)", (job_id, key, started, ended, os.getpid()))


@app.task(name="span", queue="lim")
async def span(seconds: float = 0.02, key: str | None = None) -> None:
    started = time.time()
    await asyncio.sleep(seconds)
    ended = time.time()
    await asyncio.to_thread(_record, pgqueue.current_job().id, key, started, ended)
