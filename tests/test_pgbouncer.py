"""pgqueue behind a real PgBouncer in transaction mode (``pooler="transaction"``).

The behavioural suite runs through it in ``tests/drivers/test_pgbouncer_suite.py``; here is
what is particular to the pooler: a LISTEN through it is refused in one clear line; without a
``listen_url`` the workers poll; migrations run through it; and after a worker and an enqueuer
have run through it, nothing of pgqueue's session state is left on the server sessions that
PgBouncer lends to other clients (settings, advisory locks).
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue import migrations
from tests.conftest import MakeDatabase
from tests.helpers import eventually, scalar
from tests.pgbouncer import PgBouncer

pytestmark = pytest.mark.xdist_group("embedded")


async def test_listen_through_a_transaction_pooler_is_refused_in_one_line(
        pgbouncer: PgBouncer, clean: str) -> None:
    app = pgqueue.App(database_url=pgbouncer.url(clean))  # pooler not declared

    @app.task(name="t", queue="q")
    def t() -> None:
        pass

    try:
        with pytest.raises(pgqueue.ConfigurationError) as err:
            await asyncio.wait_for(app.worker(["q"]).run(), 60)
    finally:
        await app.aclose()
        app.close()
    message = str(err.value)
    assert "\n" not in message
    assert "goes through a connection pooler" in message
    assert "listen_url" in message and "pooler='transaction'" in message


async def test_a_session_pooler_may_carry_the_listen(pgbouncer: PgBouncer, clean: str) -> None:
    """``pooler="session"``: the check is off (the pooler keeps one server session per
    client); here the worker starts (wake-ups themselves are the session pooler's affair)."""
    app = pgqueue.App(database_url=clean, listen_url=pgbouncer.url(clean), pooler="session")
    ran = asyncio.Event()

    @app.task(name="t", queue="q")
    def t() -> None:
        pass

    worker = app.worker(["q"], on_event=lambda e, j: ran.set() if e == "succeeded" else None)
    run = asyncio.create_task(worker.run())
    try:
        await eventually(worker.started.is_set, 60, "the worker to start")
        await app.enqueue_async("t")
        await asyncio.wait_for(ran.wait(), 60)
    finally:
        worker.stop()
        await asyncio.wait_for(run, 60)
        await app.aclose()
        app.close()


async def test_transaction_pooler_without_listen_url_polls(pgbouncer: PgBouncer,
                                                           clean: str) -> None:
    app = pgqueue.App(database_url=pgbouncer.url(clean), pooler="transaction")
    done = asyncio.Event()

    @app.task(name="t", queue="q")
    def t() -> None:
        pass

    worker = app.worker(["q"], poll_interval=0.1,
                        on_event=lambda e, j: done.set() if e == "succeeded" else None)
    run = asyncio.create_task(worker.run())
    try:
        await eventually(worker.started.is_set, 60, "the worker to start")
        assert worker.listener is None  # no LISTEN through the pooler: polling
        await app.enqueue_async("t")
        await asyncio.wait_for(done.wait(), 60)
    finally:
        worker.stop()
        await asyncio.wait_for(run, 60)
        await app.aclose()
        app.close()


def test_migrations_run_through_pgbouncer(pgbouncer: PgBouncer,
                                          make_database: MakeDatabase) -> None:
    direct = make_database()
    url = pgbouncer.url(direct)
    migrations.upgrade(url)
    assert migrations.current(url) == migrations.head()
    with psycopg.connect(direct, autocommit=True) as c:
        assert scalar(c, "SELECT count(*) FROM pgqueue.jobs") == 0


async def test_nothing_of_pgqueue_stays_on_pooled_server_sessions(
        pgbouncer: PgBouncer, make_database: MakeDatabase) -> None:
    """After a worker (plain and limited claims, completions, retries, a vacuum) and an
    enqueuer ran through the pooler, 20 fresh clients all see the database's defaults
    (``synchronous_commit = on``), and the server holds no advisory lock in this database."""
    direct = make_database(migrated=True)
    with psycopg.connect(direct, autocommit=True) as c:  # test databases run it off
        c.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(
            sql.Identifier(c.info.dbname)))
    with psycopg.connect(direct, autocommit=True) as conn:
        await _run_through_the_pooler(pgbouncer.url(direct), direct, conn)


async def _run_through_the_pooler(url: str, direct: str,
                                  conn: psycopg.Connection[Any]) -> None:
    app = pgqueue.App(database_url=url, pooler="transaction", listen_url=direct)
    app.queue("limited", concurrency=2)
    finished = 0
    all_done = asyncio.Event()
    total = 60

    @app.task(name="ok", queue="q")
    def ok(n: int) -> int:
        return n

    @app.task(name="flaky", queue="limited", max_attempts=2)
    def flaky(n: int) -> None:
        if pgqueue.current_job().attempt == 1:
            raise RuntimeError("first attempt fails")

    def seen(event: str, job: pgqueue.Job) -> None:
        nonlocal finished
        if event == "succeeded":
            finished += 1
            if finished == total:
                all_done.set()

    worker = app.worker(["q", "limited"], concurrency=8, poll_interval=0.1, on_event=seen)
    run = asyncio.create_task(worker.run())
    try:
        await eventually(worker.started.is_set, 60, "the worker to start")
        app.enqueue_many("ok", [{"n": i} for i in range(40)])   # one bulk insert
        for i in range(10):                                       # single inserts, sync
            app.enqueue("flaky", {"n": i})
        for i in range(10):                                       # and async
            await app.enqueue_async("flaky", {"n": 10 + i})
        await asyncio.wait_for(all_done.wait(), 120)
        assert await app.driver.vacuum_if_needed(min_dead=0, dead_ratio=0)
    finally:
        worker.stop()
        await asyncio.wait_for(run, 60)
        await app.aclose()
        app.close()
    defaults = {name: scalar(conn, f"SELECT current_setting('{name}')")
                for name in ("synchronous_commit", "jit", "lock_timeout", "statement_timeout")}
    assert defaults["synchronous_commit"] == "on"
    clients = [psycopg.connect(url, autocommit=True, prepare_threshold=None)
               for _ in range(20)]
    pids = set()
    try:
        for c in clients:  # each on whichever server session PgBouncer lends it
            with c.transaction():
                row = c.execute("SELECT pg_backend_pid(), " + ", ".join(
                    f"current_setting('{name}')" for name in defaults)).fetchone()
            assert row is not None
            pids.add(row[0])
            assert dict(zip(defaults, row[1:], strict=True)) == defaults
    finally:
        for c in clients:
            c.close()
    assert len(pids) > 1  # the clients saw several server sessions, pgqueue's included
    assert scalar(conn, "SELECT count(*) FROM pg_locks l JOIN pg_database d "
                        "ON d.oid = l.database WHERE l.locktype = 'advisory' "
                        "AND d.datname = current_database()") == 0
