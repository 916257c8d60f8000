"""Database faults survived: pg_terminate_backend of every pgqueue connection, a lost LISTEN
connection, and a PostgreSQL restart (on an embedded server the test controls)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import migrations
from pgqueue.drivers.postgres.listener import PgListener
from tests.helpers import eventually, scalar


def terminate_others(dsn: str, spare: int) -> int:
    """pg_terminate_backend on every connection to the database but ours and ``spare``."""
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> %s",
            (spare,)).fetchall()
    return len(rows)


def enqueue_as_a_caller_would(app: pgqueue.App, task: str, args: list[Any]) -> None:
    """An enqueue on a pooled connection that the server closed is not retried silently (it
    could duplicate jobs); the caller gets DatabaseUnavailableError and retries."""
    try:
        app.enqueue_many(task, args)
    except pgqueue.DatabaseUnavailableError:
        app.enqueue_many(task, args)


async def test_terminating_every_backend_mid_run_loses_nothing(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    gate = threading.Event()
    started: list[int] = []

    @app.task(name="gated", queue="q")
    def gated(i: int) -> None:
        started.append(i)
        gate.wait(30)

    @app.task(name="free", queue="q", priority=50)
    def free(i: int) -> None:
        pass

    app.enqueue_many("gated", [{"i": i} for i in range(4)])
    w = app.worker(queues=["q"], concurrency=4, poll_interval=0.2)
    run = asyncio.create_task(w.run())
    await eventually(lambda: len(started) == 4, 20, "4 running jobs")
    assert terminate_others(clean, conn.info.backend_pid) >= 2  # the pool and the listener at least
    gate.set()  # the running jobs now complete into a database that dropped them
    enqueue_as_a_caller_would(app, "free", [{"i": i} for i in range(50)])
    await eventually(lambda: scalar(conn, "SELECT count(*) FROM pgqueue.job_history") == 54, 30,
                     "all jobs finished after the terminations")
    assert not run.done()  # the worker survived
    w.stop()
    await run
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0
    assert scalar(conn, "SELECT count(DISTINCT id) FROM pgqueue.job_history") == 54


async def test_listener_reconnects_and_wakes_again(app: pgqueue.App, clean: str) -> None:
    done = asyncio.Event()

    @app.task(name="ping", queue="q")
    def ping() -> None:
        pass

    w = app.worker(queues=["q"], poll_interval=60,  # only a NOTIFY can wake it in time
                   on_event=lambda e, j: done.set() if e == "succeeded" else None)
    run = asyncio.create_task(w.run())
    await asyncio.to_thread(w.started.wait, 10)
    listener = w.listener
    assert isinstance(listener, PgListener)
    await asyncio.wait_for(listener.connected.wait(), 10)
    pid = listener.backend_pid
    with psycopg.connect(clean, autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(%s)", (pid,))
    await eventually(lambda: listener.reconnects >= 1 and listener.connected.is_set(), 20,
                     "listener reconnect")
    assert listener.backend_pid != pid
    app.enqueue("ping")
    await asyncio.wait_for(done.wait(), 20)
    w.stop()
    await run


@pytest.fixture
def own_server() -> Iterator[Any]:
    from pgqueue._embedded import EmbeddedPostgres, find_bindir

    if find_bindir() is None:
        pytest.skip("no PostgreSQL binaries for a restartable server")
    server = EmbeddedPostgres()
    server.start()
    yield server
    server.stop()


@pytest.mark.embedded
@pytest.mark.xdist_group("embedded")  # with the other tests that start servers
async def test_postgres_restart_survived_and_buffered_completion_not_lost(
        own_server: Any) -> None:
    dsn = own_server.dsn()
    migrations.upgrade(dsn)
    app = pgqueue.App(database_url=dsn)
    gate = threading.Event()
    first_started = threading.Event()

    @app.task(name="gated", queue="q")
    def gated() -> None:
        first_started.set()
        gate.wait(60)

    @app.task(name="after", queue="q")
    def after(i: int) -> None:
        pass

    job = app.enqueue("gated")
    w = app.worker(queues=["q"], concurrency=2, poll_interval=0.2)
    run = asyncio.create_task(w.run())
    await asyncio.to_thread(first_started.wait, 20)
    await asyncio.to_thread(own_server.stop, False)  # PostgreSQL goes away mid-job
    gate.set()                                     # the job finishes while the DB is down
    await asyncio.to_thread(own_server.start)      # same data dir, same port
    enqueue_as_a_caller_would(app, "after", [{"i": i} for i in range(20)])

    def history() -> int:
        with psycopg.connect(dsn) as c:
            return int(scalar(c, "SELECT count(*) FROM pgqueue.job_history"))

    await eventually(lambda: history() == 21, 60, "jobs done after restart")
    assert not run.done()
    w.stop()
    await run
    with psycopg.connect(dsn) as c:
        assert scalar(c, "SELECT count(*) FROM pgqueue.job_history WHERE id = %s", job) == 1
        assert scalar(c, "SELECT count(*) FROM pgqueue.jobs") == 0
    await app.aclose()
