"""Poison inputs on PostgreSQL (issue 11, points 1-6; the per-driver scenarios are in
tests/drivers/test_poison_inputs.py): a row written by SQL that the worker cannot decode fails
alone; bad text in the COPY path leaves the caller's transaction untouched; the CLI answers
with one line and exit status 2.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

import pgqueue
from pgqueue.drivers.postgres.driver import COPY_THRESHOLD
from pgqueue.job import MAX_JSON_DEPTH
from tests.drivers.test_poison_inputs import default_recursion_limit
from tests.helpers import scalar

ROOT = Path(__file__).resolve().parent.parent

DEEP_SQL = "SELECT ('{\"a\":' || repeat('[', %(n)s) || repeat(']', %(n)s) || '}')::jsonb"


def _insert_poison(conn: psycopg.Connection[Any], column: str) -> int:
    """A job whose ``column`` (args or meta) nests 5,000 levels, written by SQL."""
    query = (f"INSERT INTO pgqueue.jobs (queue, task, priority, {column}) "
             f"SELECT 'q', 'good', 0, ({DEEP_SQL}) RETURNING id")
    row = conn.execute(query.replace("%(n)s", "5000")).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.usefixtures(default_recursion_limit.__name__)
@pytest.mark.parametrize("column", ["args", "meta"])
def test_a_row_written_by_sql_that_cannot_be_decoded_fails_alone(
        app: pgqueue.App, conn: psycopg.Connection[Any], column: str) -> None:
    ran: list[int] = []

    @app.task(name="good", queue="q")
    def good(n: int) -> None:
        ran.append(n)

    poison = _insert_poison(conn, column)
    app.enqueue_many("good", [{"n": i} for i in range(20)], queue="q")
    job = app.get_job(poison)  # reading it does not raise either
    assert job is not None and job.decode_error is not None and column in job.decode_error

    async def main() -> pgqueue.Worker:
        worker = app.worker(["q"], burst=True, concurrency=10, poll_interval=0.1)
        await asyncio.wait_for(worker.run(), 30)
        await app.aclose()
        return worker

    worker = asyncio.run(main())
    assert sorted(ran) == list(range(20))
    assert worker.counts == {"succeeded": 20, "failed": 1}
    [failed] = app.failed("q")
    assert failed.id == poison
    assert f"the stored {column} cannot be decoded" in failed.reason
    assert scalar(conn, "SELECT count(*) FROM pgqueue.job_history WHERE state = 'succeeded'") == 20


@pytest.mark.parametrize("n", [1, COPY_THRESHOLD + 50])
def test_unstorable_text_leaves_the_callers_transaction_untouched(
        app: pgqueue.App, dsn: str, n: int) -> None:
    """Both insert paths (one statement, and COPY for large batches) refuse a lone surrogate
    before any I/O: the caller's transaction goes on and commits its own work."""
    with psycopg.connect(dsn) as c:
        c.execute("CREATE TEMP TABLE mine (x int)")
        c.execute("INSERT INTO mine VALUES (1)")
        rows: list[dict[str, Any]] = [{"i": i} for i in range(n)]
        rows[-1] = {"i": "\ud800"}
        with pytest.raises(pgqueue.ValidationError, match=rf"args_list\[{n - 1}\].*surrogate"):
            app.enqueue_many("t", rows, conn=c)
        with pytest.raises(pgqueue.ValidationError, match="unique_key contains a lone"):
            app.enqueue("t", {}, conn=c, unique_key="\udcff")
        with pytest.raises(pgqueue.ValidationError, match="meta contain a lone"):
            app.enqueue("t", {}, conn=c, meta={"\ud800": 1})
        assert c.info.transaction_status == TransactionStatus.INTRANS
        app.enqueue_many("t", rows[:-1] or [{}], conn=c)  # the transaction still works
        assert c.execute("SELECT count(*) FROM mine").fetchone() == (1,)
        c.commit()
    with psycopg.connect(dsn, autocommit=True) as check:
        assert scalar(check, "SELECT count(*) FROM pgqueue.jobs") == max(1, n - 1)


async def test_unstorable_text_async_caller_transaction(dsn: str, clean: str) -> None:
    app = pgqueue.App(database_url=clean)
    async with await psycopg.AsyncConnection.connect(dsn) as c:
        await c.execute("SELECT 1")
        rows = [{"i": i} for i in range(COPY_THRESHOLD + 10)]
        rows[3] = {"\udcff": 1}
        with pytest.raises(pgqueue.ValidationError, match=r"args_list\[3\]"):
            await app.enqueue_many_async("t", rows, conn=c)
        assert c.info.transaction_status == TransactionStatus.INTRANS
        await c.rollback()
    await app.aclose()


# ---- the CLI -----------------------------------------------------------------------------------
def cli(dsn: str, *args: str | bytes) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pgqueue.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.processes
@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 985, 5_000])
def test_cli_refuses_deep_args_in_one_line(clean: str, conn: psycopg.Connection[Any],
                                           levels: int) -> None:
    deep = '{"a":' + "[" * (levels - 1) + "]" * (levels - 1) + "}"
    line = _one_line(cli(clean, "enqueue", "t", "--args", deep))
    assert f"more than {MAX_JSON_DEPTH} levels" in line
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0


@pytest.mark.processes
@pytest.mark.parametrize("args", [
    '{"x": "\\ud800"}',                  # a JSON escape of a lone surrogate
    b'{"x": "\xff"}',                    # a byte that is not UTF-8 (argv: surrogateescape)
    '{"\\udcff": 1}',                    # in a key
])
def test_cli_refuses_lone_surrogates_in_one_line(clean: str, conn: psycopg.Connection[Any],
                                                 args: str | bytes) -> None:
    line = _one_line(cli(clean, "enqueue", "t", "--args", args))
    assert "lone surrogate" in line
    r = cli(clean, "enqueue", "t", "--unique-key", b"k\xfe")
    assert "unique_key contains a lone surrogate" in _one_line(r)
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0
