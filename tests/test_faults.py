"""Database faults survived: pg_terminate_backend of every pgqueue connection, a lost LISTEN
connection, a PostgreSQL restart (on an embedded server the test controls), statements cut
short by statement_timeout or lock_timeout, connections closed by idle_session_timeout, and a
SIGTERM while a claim waits behind someone's lock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import migrations
from pgqueue._defaults import DEFAULT_LOCK_TIMEOUT
from pgqueue.drivers.postgres.listener import PgListener
from tests.helpers import eventually, scalar, wait_for

ROOT = Path(__file__).resolve().parent.parent


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


# ---- statement_timeout, lock_timeout, idle_session_timeout, SIGTERM behind a lock ------------
@contextlib.contextmanager
def _holding(dsn: str, statement: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection holding the lock ``statement`` takes, in a transaction, until the block
    ends (then rolled back)."""
    with psycopg.connect(dsn) as c:
        c.execute(statement)
        try:
            yield c
        finally:
            c.rollback()


class _Messages(logging.Handler):
    """Collects the messages logged to a logger while installed."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.logger = logging.getLogger(name)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _Messages:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


@pytest.mark.parametrize("fault", ("statement_timeout", "lock_timeout"))
async def test_cancelled_or_timed_out_completions_are_retried_not_run_twice(
        make_database: Any, fault: str) -> None:
    """A role/database statement_timeout of 300 ms (57014), or pgqueue's own lock_timeout
    (55P03), cuts the completions short while someone holds a lock on the history: they are
    transient, retried until the lock goes, and no job runs twice (before: 4-6 of 40 did)."""
    from pgqueue.drivers.postgres.driver import PostgresDriver

    dsn = make_database(migrated=True)
    if fault == "statement_timeout":
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(psycopg.sql.SQL("ALTER DATABASE {} SET statement_timeout = '300ms'").format(
                psycopg.sql.Identifier(c.info.dbname)))
        driver = PostgresDriver(dsn)
    else:
        driver = PostgresDriver(dsn, lock_timeout=0.2)
    app = pgqueue.App(driver=driver)
    runs: dict[int, int] = {}
    lock = threading.Lock()

    @app.task(name="count", queue="q")
    def count(i: int) -> None:
        with lock:
            runs[i] = runs.get(i, 0) + 1

    app.enqueue_many("count", [{"i": i} for i in range(40)])
    w = app.worker(queues=["q"], concurrency=8, lease_s=2, poll_interval=0.2)
    with _Messages("pgqueue.completer") as completer_log, \
            _holding(dsn, "LOCK TABLE pgqueue.job_history IN SHARE MODE"):
        run = asyncio.create_task(w.run())
        await eventually(lambda: len(runs) == 40, 30, "every job ran once")
        await eventually(lambda: any("retrying" in m for m in completer_log.messages), 30,
                         "a completion cut short and retried")
        assert any(("statement cancelled" if fault == "statement_timeout" else "lock_timeout")
                   in m for m in completer_log.messages), completer_log.messages
    with psycopg.connect(dsn, autocommit=True) as c:
        await eventually(lambda: scalar(c, "SELECT count(*) FROM pgqueue.job_history") == 40, 60,
                         "all 40 completions written once the lock is gone")
        assert scalar(c, "SELECT count(*) FROM pgqueue.jobs") == 0
        assert scalar(c, "SELECT count(*) FROM pgqueue.failed_jobs") == 0
    w.stop()
    await run
    assert sorted(runs.values()) == [1] * 40, {i: n for i, n in runs.items() if n != 1}
    await app.aclose()
    app.close()


def test_a_connection_closed_by_idle_session_timeout_is_replaced(make_database: Any) -> None:
    """The server closes pooled connections that sat idle (idle_session_timeout): the next
    enqueue, sync and async, gets a healthy connection instead of DatabaseUnavailableError.

    (3 s: a replacement connection waits up to ~1 s in the pool after a failed check, which a
    shorter timeout would close again.)"""
    dsn = make_database(migrated=True)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(psycopg.sql.SQL("ALTER DATABASE {} SET idle_session_timeout = '3s'").format(
            psycopg.sql.Identifier(c.info.dbname)))
    app = pgqueue.App(database_url=dsn)

    def others(c: psycopg.Connection[Any]) -> int:
        return int(scalar(c, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                             "current_database() AND pid <> pg_backend_pid()"))

    async def enqueue_async() -> int:
        return await app.enqueue_async("t", {"n": 2})

    loop = asyncio.new_event_loop()
    try:
        app.enqueue("t", {"n": 0})
        loop.run_until_complete(enqueue_async())
        for _ in range(1):
            with psycopg.connect(dsn, autocommit=True, options="-c idle_session_timeout=0") as c:
                wait_for(lambda c=c: others(c) == 0, 30,  # type: ignore[misc]
                         "the server closed the idle pooled connections")
            app.enqueue("t", {"n": 1})
            loop.run_until_complete(enqueue_async())
        with psycopg.connect(dsn, autocommit=True, options="-c idle_session_timeout=0") as c:
            assert scalar(c, "SELECT count(*) FROM pgqueue.jobs") == 4
        loop.run_until_complete(app.aclose())
    finally:
        loop.close()
        app.close()


@pytest.mark.processes
def test_sigterm_while_a_claim_waits_on_a_lock_exits_in_time(make_database: Any) -> None:
    """Someone holds ACCESS EXCLUSIVE on the jobs table; the worker's claim waits for it. SIGTERM
    must still end the process within shutdown_timeout plus a margin: pgqueue's lock_timeout
    cuts the wait short (before: the process never exited)."""
    dsn = make_database(migrated=True)
    shutdown_timeout = 2.0
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgqueue.cli", "worker", "tests.apps.x:app", "--queues", "x",
         "--poll-interval", "0.2", "--shutdown-timeout", str(shutdown_timeout)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with psycopg.connect(dsn, autocommit=True) as watch:
            wait_for(lambda: scalar(watch, "SELECT count(*) FROM pgqueue.workers") == 1, 60,
                     "the worker registered")
            with _holding(dsn, "LOCK TABLE pgqueue.jobs IN ACCESS EXCLUSIVE MODE"):
                wait_for(lambda: scalar(
                    watch, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND wait_event_type = 'Lock' "
                    "AND query ILIKE %s", "%SKIP LOCKED%"), 30, "the claim waiting on the lock")
                proc.send_signal(signal.SIGTERM)
                margin = DEFAULT_LOCK_TIMEOUT + 15.0  # the lock wait, then a normal shutdown
                try:
                    code = proc.wait(shutdown_timeout + margin)
                except subprocess.TimeoutExpired:
                    pytest.fail("the worker did not exit after SIGTERM while its claim waited "
                                "on a lock")
        assert code == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pgqueue_sets_its_own_session_timeouts(dsn: str) -> None:
    """lock_timeout (default 5 s) and an optional statement_timeout on every connection of
    pgqueue's pools, sync and async (main and claim); never on a caller's connection."""
    from pgqueue.drivers import get_driver
    from pgqueue.drivers.postgres.driver import PostgresDriver

    def shown(c: Any) -> tuple[str, str]:
        return (c.execute("SHOW lock_timeout").fetchone()[0],
                c.execute("SHOW statement_timeout").fetchone()[0])

    default = PostgresDriver(dsn)
    with default._sync_pool().connection() as c:
        assert shown(c)[0] == "5s"
    default.close()
    driver = get_driver("postgres", dsn=dsn, lock_timeout=1.5, statement_timeout=30)
    assert isinstance(driver, PostgresDriver)
    with driver._sync_pool().connection() as c:
        assert shown(c) == ("1500ms", "30s")

    async def on_async_pools() -> list[tuple[str, str]]:
        out = []
        for kind in ("main", "claim"):
            async with (await driver._async_pool(kind)).connection() as ac:
                cur = await ac.execute("SELECT current_setting('lock_timeout'), "
                                       "current_setting('statement_timeout')")
                out.append(tuple(await cur.fetchone()))  # type: ignore[arg-type]
        await driver.aclose()
        return out

    assert asyncio.run(on_async_pools()) == [("1500ms", "30s")] * 2
    driver.close()
    with psycopg.connect(dsn, autocommit=True) as own:  # a caller's conn= keeps its settings
        pgqueue.App(driver=get_driver("postgres", dsn=dsn, lock_timeout=1.5)).enqueue(
            "t", conn=own)
        assert shown(own)[0] == "0"
