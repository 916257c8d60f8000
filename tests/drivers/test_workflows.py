"""Workflows in the behavioural suite: the same scenarios on every driver that declares
``workflows`` (postgres, memory); a driver that does not (redis) refuses them with a
:class:`pgqueue.CapabilityError`. Dependencies and their failure policies, chains and fan-in
with results flowing, App.result, Await, durable steps. PostgreSQL-only parts (``conn=``, the SQL
views) are in tests/test_workflows.py."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import pgqueue
from pgqueue import chain, group


@pytest.fixture
def app(driver_app: pgqueue.App) -> pgqueue.App:
    """``driver_app``, for the drivers with workflows."""
    if not driver_app.driver.capabilities.workflows:
        pytest.skip("declared: no workflows")
    return driver_app


async def drain(app: pgqueue.App, **opts: Any) -> pgqueue.Worker:
    """Run a burst worker until nothing it can run is left."""
    opts.setdefault("poll_interval", 0.2)
    w: pgqueue.Worker = app.worker(burst=True, **opts)
    await asyncio.wait_for(w.run(), 120)
    return w


def state(app: pgqueue.App, job_id: int) -> str | None:
    """Where a job is: its live state, its history state, or failed."""
    live = app.get_job(job_id)
    if live is not None:
        return str(live.state)
    finished = app.driver.get_finished(job_id)
    if finished is not None:
        return finished.state
    return "failed" if app.driver.get_failed(job_id) is not None else None


def test_a_driver_without_workflows_refuses_them_clearly(driver_app: pgqueue.App) -> None:
    if driver_app.driver.capabilities.workflows:
        pytest.skip("declared: workflows")

    @driver_app.task(name="noop")
    def noop() -> None: ...

    with pytest.raises(pgqueue.CapabilityError, match="no workflows"):
        noop.options(depends_on=[1]).enqueue()
    with pytest.raises(pgqueue.CapabilityError, match="no workflows"):
        chain(noop.s(), noop.s()).enqueue()
    with pytest.raises(pgqueue.CapabilityError, match="no workflows"):
        driver_app.result(1)


async def test_dependent_waits_until_every_dependency_succeeded(
        app: pgqueue.App) -> None:
    order: list[str] = []

    @app.task(name="step", queue="q")
    def step(name: str) -> str:
        order.append(name)
        return name

    a = step.enqueue(name="a")
    b = step.options(priority=0).enqueue(name="b")
    c = step.options(depends_on=[a, b], priority=0).enqueue(name="c")
    assert state(app, c) == "blocked"
    # the blocked job is outside the claimable set: a worker that can take everything takes
    # a and b first even though c has the best priority
    await drain(app, queues=["q"], concurrency=1)
    assert order == ["b", "a", "c"]
    assert [state(app, i) for i in (a, b, c)] == ["succeeded"] * 3


async def test_dependency_already_succeeded_is_satisfied_at_enqueue(
        app: pgqueue.App) -> None:
    @app.task(name="one", queue="q")
    def one() -> int:
        return 1

    a = one.enqueue()
    await drain(app, queues=["q"])
    b = one.options(depends_on=[a]).enqueue()
    assert state(app, b) == "waiting"


@pytest.mark.parametrize("policy", ["cancel", "run", "fail"])
async def test_failure_policy(app: pgqueue.App,
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
    assert state(app, a) == "failed"
    if policy == "run":
        assert ran == ["b", "c"]
        assert (state(app, b), state(app, c)) == ("succeeded", "succeeded")
    else:
        assert ran == []
        assert state(app, b) == ("cancelled" if policy == "cancel" else "failed")
        assert state(app, c) == "cancelled"  # the cascade, in the same transaction
    assert app.count("q") == 0


async def test_cancelling_a_dependency_cancels_its_dependents(
        app: pgqueue.App) -> None:
    @app.task(name="noop", queue="q")
    def noop() -> None: ...

    a = noop.options(delay=3600).enqueue()
    b = noop.options(depends_on=[a]).enqueue()
    assert app.cancel(a)
    assert (state(app, a), state(app, b)) == ("cancelled", "cancelled")


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


async def test_await_parks_without_a_slot_and_resumes_once_with_all_results(
        app: pgqueue.App) -> None:
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
    finished = app.get_finished(p)
    assert finished is not None and finished.attempt == 1


async def test_await_of_an_unknown_job_fails_the_job(app: pgqueue.App) -> None:
    @app.task(name="waits", queue="q")
    def waits() -> None:
        raise pgqueue.Await([123456789])

    j = waits.enqueue()
    await drain(app, queues=["q"])
    assert state(app, j) == "failed"
    assert "no job 123456789" in app.get_failed(j).reason


async def test_step_misuse_is_refused(app: pgqueue.App) -> None:
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

