"""Workflows on PostgreSQL: refused dependencies (nothing written), fan-in with App.workflow and
the SQL views, atomic enqueue in the caller's transaction, bad workflows, and durable steps
checkpointed in the business transaction. The scenarios every driver shares are in
tests/drivers/test_workflows.py; the diamond on four processes in test_workflow_processes.py."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import chain, group
from pgqueue.retry import RetryPolicy
from tests.helpers import scalar


async def drain(app: pgqueue.App, **opts: Any) -> pgqueue.Worker:
    """Run a burst worker until nothing it can run is left."""
    opts.setdefault("poll_interval", 0.2)
    w: pgqueue.Worker = app.worker(burst=True, **opts)
    await asyncio.wait_for(w.run(), 120)
    return w


def state(conn: psycopg.Connection[Any], job_id: int) -> str | None:
    found: str | None = scalar(conn, "SELECT state FROM pgqueue.all_jobs WHERE id = %s", job_id)
    return found


# ---- dependencies ------------------------------------------------------------------------------
def test_unknown_or_failed_dependency_is_refused_and_nothing_is_written(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="noop", queue="q")
    def noop() -> None: ...

    a = noop.enqueue()
    with pytest.raises(pgqueue.DependencyError, match="no job 999999999"):
        noop.options(depends_on=[a, 999999999]).enqueue()
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 1
    conn.execute("INSERT INTO pgqueue.failed_jobs (id, queue, task, args, priority, attempt, "
                 "max_attempts, reason, enqueued_at) VALUES (888888888, 'q', 'noop', '{}', 0, "
                 "1, 1, 'gone', now())")
    with pytest.raises(pgqueue.DependencyError, match="already failed"):
        noop.options(depends_on=[888888888]).enqueue()
    # with policy run, an already failed dependency counts as finished
    b = noop.options(depends_on=[888888888], on_dependency_failure="run").enqueue()
    assert state(conn, b) == "waiting"
    bad: Any
    for bad, match in (("x", "list of job ids"), ([0], "positive"), ([a, a], "twice")):
        with pytest.raises(pgqueue.ValidationError, match=match):
            noop.options(depends_on=bad).enqueue()
    with pytest.raises(pgqueue.ValidationError, match="on_dependency_failure"):
        noop.options(depends_on=[a], on_dependency_failure="ignore").enqueue()



# ---- composition ---------------------------------------------------------------------------
async def test_group_then_fan_in_receives_results_in_order(app: pgqueue.App,
                                                           conn: psycopg.Connection[Any]) -> None:
    @app.task(name="square", queue="q")
    def square(n: int) -> int:
        return n * n

    @app.task(name="total", queue="q")
    def total(parts: list[int], label: str) -> str:
        return f"{label}={parts}"

    run = group(*(square.s(n=n) for n in range(5))).then(total.s(label="sum")).enqueue()
    await drain(app, queues=["q"], concurrency=4)
    assert app.result(run.last[0], timeout=10) == "sum=[0, 1, 4, 9, 16]"
    jobs = app.workflow(run.id)
    assert [j.id for j in jobs] == run.job_ids
    assert {j.state for j in jobs} == {"succeeded"}
    row = conn.execute("SELECT jobs, succeeded, failed, finished_at IS NOT NULL "
                       "FROM pgqueue.workflows WHERE workflow_id = %s", (run.id,)).fetchone()
    assert row == (6, 6, 0, True)


def test_workflow_in_a_transaction_that_rolls_back_leaves_nothing(
        app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="noop", queue="q")
    def noop(x: int = 0) -> None: ...

    with psycopg.connect(dsn) as c:
        run = chain(noop.s(), group(noop.s(), noop.s()), noop.s()).enqueue(conn=c)
        assert len(run.job_ids) == 4
        c.rollback()
    for table in ("jobs", "job_deps", "workflow_jobs"):
        assert scalar(conn, f"SELECT count(*) FROM pgqueue.{table}") == 0, table
    with psycopg.connect(dsn) as c:
        run = chain(noop.s(), noop.s()).enqueue(conn=c)
    assert scalar(conn, "SELECT count(*) FROM pgqueue.workflow_jobs WHERE workflow_id = %s",
                  run.id) == 2


def test_bad_workflows_are_refused_before_anything_is_written(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="noop", queue="q")
    def noop(x: int = 0) -> None: ...

    with pytest.raises(pgqueue.WorkflowError, match="not builtin_function"):
        chain(noop.s(), print)  # type: ignore[arg-type]
    with pytest.raises(pgqueue.WorkflowError, match=r"call task\.s"):
        group(noop.s(), noop)  # type: ignore[arg-type]
    with pytest.raises(pgqueue.WorkflowError, match="at least one step"):
        chain()
    with pytest.raises(pgqueue.ValidationError, match="workflow job 1"):
        chain(noop.s(), noop.s(nope=1)).enqueue()
    with pytest.raises(pgqueue.WorkflowError, match="unique_key"):
        chain(noop.s(), noop.options(unique_key="k").s()).enqueue()
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0


# ---- durable steps -------------------------------------------------------------------------
async def test_steps_run_once_across_retries(app: pgqueue.App, dsn: str,
                                             conn: psycopg.Connection[Any]) -> None:
    calls: list[str] = []
    conn.execute("CREATE TABLE IF NOT EXISTS public.wf_charges (job bigint, amount int)")
    conn.execute("DELETE FROM public.wf_charges")

    def reserve() -> str:
        calls.append("reserve")
        return "r-1"

    def charge(c: psycopg.Connection[Any], job_id: int) -> dict[str, int]:
        calls.append("charge")
        c.execute("INSERT INTO public.wf_charges VALUES (%s, 42)", (job_id,))
        return {"amount": 42}

    @app.task(name="order", queue="q", retry=RetryPolicy(base=0.01, jitter=0.0))
    def order() -> str:
        ctx = pgqueue.current_context()
        ref = ctx.step("reserve", reserve)
        with psycopg.connect(dsn) as c, c.transaction():
            paid = ctx.step("charge", charge, c, ctx.job.id, conn=c)
        if ctx.job.attempt < 3:
            raise RuntimeError("later step failed")
        return f"{ref}:{paid['amount']}"

    j = order.enqueue()
    await drain(app, queues=["q"])
    assert app.result(j, timeout=10) == "r-1:42"
    assert calls == ["reserve", "charge"]
    assert scalar(conn, "SELECT count(*) FROM public.wf_charges WHERE job = %s", j) == 1
    steps = conn.execute("SELECT name FROM pgqueue.job_steps WHERE job_id = %s ORDER BY name",
                         (j,)).fetchall()
    assert steps == [("charge",), ("reserve",)]

