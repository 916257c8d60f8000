"""The application of the failover test (tests/test_failover.py), run as worker processes:
``python -m tests.apps.failover`` with ``PGQUEUE_DATABASE_URL`` set to the pair's multi-host URL.

- ``plain`` waits a little (a job that may run more than once: at-least-once);
- ``booked`` writes a business row and completes itself in the same transaction
  (``App.complete``): a row per job, exactly once, whatever the failover does. Each handler
  thread keeps one connection and opens another when the failover broke it.

The worker runs with a short lease (a killed worker's jobs are rescued within seconds) and a
long poll interval (so that only the listener's wake-ups make it quick: a listener that did not
reconnect shows as slow pickups).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import Any

import psycopg

import pgqueue

QUEUE = "failover"
LEASE_S = 6.0
POLL_INTERVAL = 30.0

app = pgqueue.App()
_quick = pgqueue.RetryPolicy(base=0.2, max_delay=1.0)


@app.task(name="plain", queue=QUEUE, max_attempts=50, retry=_quick)
async def plain(n: int) -> None:
    await asyncio.sleep(0.02)


_local = threading.local()


def _connection() -> psycopg.Connection[Any]:
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = _local.conn = psycopg.connect(os.environ["PGQUEUE_DATABASE_URL"],
                                             autocommit=True)
    return conn


@app.task(name="booked", queue=QUEUE, max_attempts=50, retry=_quick)
def booked(n: int) -> None:
    job = pgqueue.current_job()
    conn = _connection()
    with conn.transaction():
        conn.execute("INSERT INTO bookings (job_id, n, pid) VALUES (%s, %s, %s)",
                     (job.id, n, os.getpid()))
        app.complete(conn)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = app.worker([QUEUE], concurrency=4, lease_s=LEASE_S, poll_interval=POLL_INTERVAL)
    return worker.run_forever()


if __name__ == "__main__":
    sys.exit(main())
