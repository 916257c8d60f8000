"""Maintenance against real PostgreSQL: workers vacuum the jobs table when dead rows pile up
(one at a time), history partitions, and how database errors are classified."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.drivers.postgres.claim_cursor import HEAD
from pgqueue.drivers.postgres.driver import PostgresDriver, _translate
from pgqueue.drivers.postgres.sql import statements
from tests.helpers import prepare_statement, scalar, wait_for


def vacuum_count(conn: psycopg.Connection[Any]) -> int:
    return int(scalar(conn, "SELECT vacuum_count FROM pg_stat_user_tables "
                            "WHERE relid = 'pgqueue.jobs'::regclass"))


async def test_vacuum_when_dead_rows_pile_up_one_worker_at_a_time(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    ids = app.enqueue_many("t", [{} for _ in range(500)], queue="v")
    conn.execute("DELETE FROM pgqueue.jobs WHERE id = ANY(%s)", (ids,))  # 500 dead rows
    before = vacuum_count(conn)
    driver = app.driver
    assert await driver.vacuum_if_needed(min_dead=10**9) is False  # below the threshold
    wait_for(lambda: scalar(conn, "SELECT n_dead_tup FROM pg_stat_user_tables "
                                  "WHERE relid = 'pgqueue.jobs'::regclass") >= 500, 20,
             "the statistics to count the dead rows")
    # another worker holds the vacuum lease: this one skips
    assert await driver.acquire_lease("vacuum", holder="other", ttl_s=60)
    assert await driver.vacuum_if_needed(min_dead=100, dead_ratio=0) is False
    await driver.release_lease("vacuum", holder="other")
    assert await driver.vacuum_if_needed(min_dead=100, dead_ratio=0) is True
    wait_for(lambda: vacuum_count(conn) > before, 20, "vacuum_count to grow")
    # the lease is given back (a row, not a session lock: safe behind a pooler)
    assert scalar(conn, "SELECT count(*) FROM pgqueue.leases WHERE name = 'vacuum'") == 0


def test_history_partitions_and_cheap_retention(app: pgqueue.App,
                                                conn: psycopg.Connection[Any]) -> None:
    parts = {r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'pgqueue.job_history'::regclass")}
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    assert f"job_history_p{today}" in parts and "job_history_default" in parts
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    conn.execute("INSERT INTO pgqueue.job_history (id, queue, task, args, priority, state, "
                 "attempt, max_attempts, enqueued_at, finished_at) VALUES "
                 "(1, 'q', 't', '{}', 20, 'succeeded', 1, 5, %s, %s)", (old, old))
    driver = app.driver
    assert isinstance(driver, PostgresDriver)
    assert driver.drop_history_before(dt.datetime(2021, 1, 1, tzinfo=dt.UTC)) >= 0
    assert scalar(conn, "SELECT count(*) FROM pgqueue.job_history") == 0


def test_deadlocks_are_transient_and_connection_loss_is_unavailable(dsn: str) -> None:
    """A real deadlock from PostgreSQL maps to TransientDatabaseError (retried by the
    completer), not to 'database unavailable'."""
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS dl (id int PRIMARY KEY)")
        setup.execute("INSERT INTO dl VALUES (1), (2) ON CONFLICT DO NOTHING")
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def lock(first: int, second: int) -> None:
        with psycopg.connect(dsn) as c:
            try:
                c.execute("UPDATE dl SET id = id WHERE id = %s", (first,))
                barrier.wait(10)
                c.execute("UPDATE dl SET id = id WHERE id = %s", (second,))
            except psycopg.Error as exc:
                errors.append(exc)

    threads = [threading.Thread(target=lock, args=(1, 2)), threading.Thread(target=lock,
                                                                               args=(2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    [deadlock] = errors
    with pytest.raises(pgqueue.TransientDatabaseError, match="deadlock"), _translate():
        raise deadlock
    with psycopg.connect(dsn, autocommit=True) as victim, \
            psycopg.connect(dsn, autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
        with pytest.raises(pgqueue.DatabaseUnavailableError), _translate():
            victim.execute("SELECT 1")


async def test_a_burst_that_outgrows_the_statistics_is_analyzed_and_plans_follow(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    """A session caches the plans of its hot statements (psycopg prepares them). Made while
    the jobs table is nearly empty, the claim's plan reads all of it; after a burst of jobs,
    the workers' maintenance analyzes the table (it outgrew its statistics), and the plan is
    made again, through the claim index."""
    # a small file (the tests empty tables with DELETE, which leaves the file as it grew)
    conn.execute("TRUNCATE pgqueue.jobs CASCADE")
    conn.execute("VACUUM ANALYZE pgqueue.jobs")
    app.enqueue_many("t", [{} for _ in range(5)], queue="q")
    st = statements("pgqueue")
    execute = prepare_statement(conn, st.claim_one(10), {
        "queue": "q", "limit": 10, "worker": "w", "lease": 30, "after_p": HEAD[0],
        "after_r": HEAD[1], "after_i": HEAD[2]})
    # the plan a table of 5 rows gets: a sequential scan (made certain here; the planner's
    # choice between the two on so small a table depends on its leftover statistics)
    conn.execute("SET enable_indexscan = off")
    conn.execute("SET enable_bitmapscan = off")
    for _ in range(10):  # five custom plans, then the generic one, cached
        conn.execute(execute)
        conn.execute("UPDATE pgqueue.jobs SET state = 'waiting', worker_id = NULL")
    conn.execute("RESET enable_indexscan")
    conn.execute("RESET enable_bitmapscan")

    def plan() -> str:
        return "\n".join(r[0] for r in conn.execute(f"EXPLAIN {execute}"))

    assert "Seq Scan on jobs" in plan()
    app.enqueue_many("t", [{} for _ in range(20_000)], queue="q")
    # at once: the table's file tells, not the statistics collector (whose counts can lag);
    # 20,000 small jobs are about 250 pages, the default threshold: ask from 16
    assert await app.driver.vacuum_if_needed(min_dead=10**9, min_growth=16) is True
    assert "Seq Scan on jobs" not in plan() and "jobs_claim_idx" in plan(), plan()
    # analyzed now: no second ANALYZE until the table grows again
    assert await app.driver.vacuum_if_needed(min_dead=10**9, min_growth=16) is False
