"""Worker processes of the bad-neighbour matrix (``tests/drivers/test_bad_neighbours.py``): one
job that kills its process (``os._exit``) among good ones, on a real worker process.

``python -m tests.apps.bad_neighbours postgres DSN`` or ``... redis URL PREFIX`` runs a worker
(concurrency 10, a 2 s lease) on queue ``bn`` with two tasks:

- ``bn.good``: records its execution. On postgres the record is written **in the job's own
  completion transaction** (:meth:`pgqueue.App.complete`), so a good job's effect exists exactly
  once even when a neighbour kills the process mid-run; on redis (no transactional completion)
  it appends this process's pid to the list ``<PREFIX>:test:runs:<job id>``, so that the test
  can tell a re-run caused by a death from a duplicate.
- ``bn.killer``: records that it ran (``bn_kills`` / ``<PREFIX>:test:kills``), then
  ``os._exit(17)``: no cleanup, no outcome written, every job the process held stranded until
  its lease runs out and another worker rescues it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import pgqueue

QUEUE = "bn"
GOOD = "bn.good"
KILLER = "bn.killer"
EXIT_CODE = 17
RUNS_TABLE = "bn_runs"
KILLS_TABLE = "bn_kills"


def postgres_app(dsn: str) -> pgqueue.App:
    import psycopg

    app = pgqueue.App(database_url=dsn)
    local = threading.local()

    def connection() -> psycopg.Connection[tuple[object, ...]]:
        conn: psycopg.Connection[tuple[object, ...]] | None = getattr(local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(dsn, autocommit=True)
            local.conn = conn
        return conn

    @app.task(name=GOOD, queue=QUEUE)
    def good(n: int) -> None:
        conn = connection()
        time.sleep(0.01)  # a little work, so that a kill lands mid-run
        with conn.transaction():
            conn.execute(f"INSERT INTO {RUNS_TABLE} (job_id, pid) VALUES (%s, %s)",
                         (pgqueue.current_job().id, os.getpid()))
            app.complete(conn)

    @app.task(name=KILLER, queue=QUEUE, max_attempts=10)
    def killer() -> None:
        connection().execute(f"INSERT INTO {KILLS_TABLE} (job_id, pid) VALUES (%s, %s)",
                             (pgqueue.current_job().id, os.getpid()))
        os._exit(EXIT_CODE)

    return app


def redis_app(url: str, prefix: str) -> pgqueue.App:
    import redis

    from pgqueue.drivers.redis import RedisDriver

    app = pgqueue.App(driver=RedisDriver(url, prefix=prefix))
    marker = redis.Redis.from_url(url)

    @app.task(name=GOOD, queue=QUEUE)
    def good(n: int) -> None:
        time.sleep(0.01)
        marker.rpush(f"{prefix}:test:runs:{pgqueue.current_job().id}", os.getpid())

    @app.task(name=KILLER, queue=QUEUE, max_attempts=10)
    def killer() -> None:
        marker.rpush(f"{prefix}:test:kills", os.getpid())
        os._exit(EXIT_CODE)

    return app


def main(argv: list[str]) -> None:
    kind = argv[0]
    app = postgres_app(argv[1]) if kind == "postgres" else redis_app(argv[1], argv[2])
    worker = app.worker([QUEUE], concurrency=10, lease_s=2.0, rescue_interval=0.2,
                        poll_interval=0.1)
    asyncio.run(worker.run())


if __name__ == "__main__":
    main(sys.argv[1:])
