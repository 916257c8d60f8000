"""Workflows against real PostgreSQL: dependencies and their failure policies, chains, groups
and fan-in with results flowing, atomic enqueue, App.result, App.workflow and the SQL views,
Await, durable steps, and bad input. In-process workers; the diamond on four processes is in
test_workflow_processes.py."""

from __future__ import annotations

import asyncio
import threading
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
async def test_dependent_waits_until_every_dependency_succeeded(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    order: list[str] = []

    @app.task(name="step", queue="q")
    def step(name: str) -> str:
        order.append(name)
        return name

    a = step.enqueue(name="a")
    b = step.options(priority=0).enqueue(name="b")
    c = step.options(depends_on=[a, b], priority=0).enqueue(name="c")
    assert state(conn, c) == "blocked"
    # the blocked job is outside the claimable set: a worker that can take everything takes
    # a and b first even though c has the best priority
    await drain(app, queues=["q"], concurrency=1)
    assert order == ["b", "a", "c"]
    assert [state(conn, i) for i in (a, b, c)] == ["succeeded"] * 3
    deps = conn.execute("SELECT dep_id, dep_state FROM pgqueue.job_dependencies "
                        "WHERE job_id = %s ORDER BY dep_id", (c,)).fetchall()
    assert deps == [(a, "succeeded"), (b, "succeeded")]


async def test_dependency_already_succeeded_is_satisfied_at_enqueue(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="one", queue="q")
    def one() -> int:
        return 1

    a = one.enqueue()
    await drain(app, queues=["q"])
    b = one.options(depends_on=[a]).enqueue()
    assert state(conn, b) == "waiting"


@pytest.mark.parametrize("policy", ["cancel", "run", "fail"])
async def test_failure_policy(app: pgqueue.App, conn: psycopg.Connection[Any],
                              policy: str) -> None:
    ran: list[str] = []

    @app.task(name="boom", queue="q", max_attempts=1)
    def boom() -> None:
        raise RuntimeError("boom")

    @app.task(name="after", queue="q")
    def after(tag: str) -> None:
        ran.append(tag)

    a = boom.enqueue()
    b = after.options(depends_on=[a], on_dependency_failure=policy).enqueue(tag="b")
    # b's own dependent follows its default policy (cancel) once b is cancelled or failed
    c = after.options(depends_on=[b]).enqueue(tag="c")
    await drain(app, queues=["q"])
    assert state(conn, a) == "failed"
    if policy == "run":
        assert ran == ["b", "c"]
        assert (state(conn, b), state(conn, c)) == ("succeeded", "succeeded")
    else:
        assert ran == []
        assert state(conn, b) == ("cancelled" if policy == "cancel" else "failed")
        assert state(conn, c) == "cancelled"  # the cascade, in the same transaction
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0


async def test_cancelling_a_dependency_cancels_its_dependents(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="noop", queue="q")
    def noop() -> None: ...

    a = noop.options(delay=3600).enqueue()
    b = noop.options(depends_on=[a]).enqueue()
    assert app.cancel(a)
    assert (state(conn, a), state(conn, b)) == ("cancelled", "cancelled")


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


def test_memory_driver_refuses_workflows_clearly() -> None:
    app = pgqueue.App(driver="memory")

    @app.task(name="noop")
    def noop() -> None: ...

    with pytest.raises(pgqueue.CapabilityError, match="no workflows"):
        noop.options(depends_on=[1]).enqueue()
    with pytest.raises(pgqueue.CapabilityError, match="no workflows"):
        chain(noop.s(), noop.s()).enqueue()
    with pytest.raises(pgqueue.CapabilityError, match="no workflows"):
        app.result(1)


# ---- composition ---------------------------------------------------------------------------
async def test_chain_passes_each_result_to_the_next(app: pgqueue.App) -> None:
    @app.task(name="add", queue="q")
    def add(x: int, y: int = 0) -> int:
        return x + y

    @app.task(name="double", queue="q")
    def double(n: int) -> int:
        return 2 * n

    run = chain(add.s(x=1, y=2), double.s(), add.s(y=10)).enqueue()
    assert len(run.job_ids) == 3 and run.last == [run.job_ids[-1]]
    await drain(app, queues=["q"])
    assert app.result(run.last[0], timeout=10) == 16


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


async def test_diamond_in_process(app: pgqueue.App) -> None:
    @app.task(name="a", queue="q")
    def a() -> int:
        return 3

    @app.task(name="b", queue="q")
    def b(n: int) -> int:
        return n + 1

    @app.task(name="c", queue="q")
    def c(n: int) -> int:
        return n * 10

    @app.task(name="d", queue="q")
    def d(results: list[int]) -> list[int]:
        return results

    run = chain(a.s(), group(b.s(), c.s()), d.s()).enqueue()
    await drain(app, queues=["q"], concurrency=2)
    assert app.result(run.last[0], timeout=10) == [4, 30]


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


# ---- results -------------------------------------------------------------------------------
async def test_result_waits_for_the_notify_and_raises_the_final_error(
        app: pgqueue.App) -> None:
    gate = threading.Event()

    @app.task(name="slow", queue="q", max_attempts=1)
    def slow(fail: bool) -> str:
        gate.wait(30)
        if fail:
            raise ValueError("bad input")
        return "ok"

    good, bad = slow.enqueue(fail=False), slow.enqueue(fail=True)
    worker = asyncio.create_task(drain(app, queues=["q"], concurrency=2))
    waiting = asyncio.create_task(app.result_async(good, timeout=60))
    with pytest.raises(pgqueue.ResultTimeoutError):
        await app.result_async(good, timeout=0.2)
    gate.set()
    assert await waiting == "ok"
    with pytest.raises(pgqueue.JobFailedError, match="bad input") as info:
        await app.result_async(bad, timeout=60)
    assert info.value.state == "failed"
    await worker
    assert await asyncio.to_thread(app.result, good) == "ok"
    with pytest.raises(pgqueue.JobNotFoundError):
        app.result(987654321, timeout=1)


# ---- Await ---------------------------------------------------------------------------------
async def test_await_parks_without_a_slot_and_resumes_once_with_all_results(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    runs: list[int] = []

    @app.task(name="child", queue="q")
    def child(i: int) -> int:
        return i * i

    @app.task(name="parent", queue="q")
    def parent(n: int) -> int:
        job = pgqueue.current_job()
        runs.append(job.attempt)
        done = job.awaited
        if done is None:
            raise pgqueue.Await([child.enqueue(i=i) for i in range(n)])
        assert set(job.awaited_states.values()) == {"succeeded"}  # type: ignore[union-attr]
        return sum(done.values())

    p = parent.enqueue(n=100)
    # concurrency 1: the children can only run because the parked parent holds no slot
    await drain(app, queues=["q"], concurrency=1)
    assert app.result(p, timeout=10) == sum(i * i for i in range(100))
    assert runs == [1, 1]  # run twice, the parked attempt given back
    assert scalar(conn, "SELECT attempt FROM pgqueue.job_history WHERE id = %s", p) == 1


async def test_await_of_an_unknown_job_fails_the_job(app: pgqueue.App,
                                                     conn: psycopg.Connection[Any]) -> None:
    @app.task(name="waits", queue="q")
    def waits() -> None:
        raise pgqueue.Await([123456789])

    j = waits.enqueue()
    await drain(app, queues=["q"])
    assert state(conn, j) == "failed"
    assert "no job 123456789" in scalar(conn, "SELECT reason FROM pgqueue.failed_jobs "
                                              "WHERE id = %s", j)


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


async def test_step_misuse_is_refused(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    errors: list[str] = []

    def one() -> int:
        return 1

    def two() -> int:
        return 2

    @app.task(name="misuse", queue="q", max_attempts=1)
    def misuse() -> None:
        ctx = pgqueue.current_context()
        ctx.step("a", one)
        for name, fn in (("a", two), ("b", object)):
            try:
                ctx.step(name, fn)
            except pgqueue.WorkflowError as exc:
                errors.append(str(exc))

    misuse.enqueue()
    await drain(app, queues=["q"])
    assert "two functions" in errors[0] and "must be JSON" in errors[1]
