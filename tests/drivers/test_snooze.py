"""Snoozes are counted on the job and bounded (issue 10, point 9), on every driver.

A ``Snooze`` gives its attempt back; without a count a handler that always snoozes would keep
its job alive forever. The count is stored by each driver (``requeue_many`` with
``snooze=True``), shown in ``current_job().snoozes``, and the task's ``max_snoozes`` turns the
snooze after the last allowed one into a failure with a reason that says so.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pgqueue
from pgqueue._defaults import DEFAULT_MAX_SNOOZES
from pgqueue.drivers.base import Requeue
from pgqueue.errors import ValidationError
from pgqueue.job import Job

W = "snooze-worker"


async def claim(app: pgqueue.App) -> Job:
    [job] = await app.driver.claim(["q"], 1, worker_id=W, lease_s=60.0)
    return job


async def drain(app: pgqueue.App, **opts: Any) -> pgqueue.Worker:
    worker: pgqueue.Worker = app.worker(burst=True, poll_interval=0.1, **opts)
    await asyncio.wait_for(worker.run(), 30)
    return worker


async def test_requeue_as_snooze_counts_on_the_job(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    job_id = app.enqueue("t", queue="q")
    job = await claim(app)
    assert (job.id, job.snoozes, job.attempt) == (job_id, 0, 1)

    # a snooze: attempt given back, snoozes + 1
    assert await driver.requeue_many([Requeue(job_id, 0.0, count_attempt=False,
                                              attempt=1, snooze=True)], worker_id=W) == [job_id]
    if driver.capabilities.job_lookup:
        live = app.get_job(job_id)
        assert live is not None and (live.snoozes, live.attempt) == (1, 0)

    # a shutdown release gives the attempt back but is not a snooze
    job = await claim(app)
    assert (job.snoozes, job.attempt) == (1, 1)
    await driver.requeue_many([Requeue(job_id, 0.0, count_attempt=False, attempt=1)],
                              worker_id=W)
    job = await claim(app)
    assert (job.snoozes, job.attempt) == (1, 1)

    # a retry neither
    await driver.requeue_many([Requeue(job_id, 0.0, attempt=1)], worker_id=W)
    job = await claim(app)
    assert (job.snoozes, job.attempt) == (1, 2)


async def test_snoozes_are_visible_in_current_job(driver_app: pgqueue.App) -> None:
    app = driver_app
    seen: list[tuple[int, int]] = []

    @app.task(name="snoozy", queue="q")
    def snoozy() -> pgqueue.Snooze | None:
        job = pgqueue.current_job()
        seen.append((job.attempt, job.snoozes))
        return pgqueue.Snooze(0.01) if job.snoozes < 3 else None

    app.enqueue("snoozy")
    worker = await drain(app, queues=["q"])
    assert seen == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert worker.counts == {"snoozed": 3, "succeeded": 1}


async def test_snooze_past_max_snoozes_fails_the_job(driver_app: pgqueue.App) -> None:
    app = driver_app
    dead: list[tuple[int, str]] = []

    @app.task(name="forever", queue="q", max_snoozes=2)
    async def forever() -> None:
        raise pgqueue.Snooze(0.01)   # raised, from an async handler

    app.on_dead_letter("q", lambda job, exc: dead.append((job.snoozes, type(exc).__name__)))
    job_id = app.enqueue("forever")
    events: list[str] = []
    worker = await drain(app, queues=["q"], on_event=lambda event, job: events.append(event))

    assert events == ["started", "snoozed", "started", "snoozed", "started", "failed"]
    assert worker.counts == {"snoozed": 2, "failed": 1}
    [failed] = app.failed("q")
    assert failed.id == job_id and failed.attempt == 1   # snoozes never counted an attempt
    assert "snoozed too often" in failed.reason and "max_snoozes is 2" in failed.reason
    assert "2 snoozes already" in failed.reason
    assert dead == [(2, "Snooze")]
    assert app.count("q") == 0


async def test_max_snoozes_zero_and_none(driver_app: pgqueue.App) -> None:
    app = driver_app
    runs: list[int] = []

    @app.task(name="never", queue="q", max_snoozes=0)
    def never() -> pgqueue.Snooze:
        return pgqueue.Snooze(0)

    @app.task(name="unbounded", queue="q", max_snoozes=None)
    def unbounded() -> pgqueue.Snooze | None:
        runs.append(pgqueue.current_job().snoozes)
        return pgqueue.Snooze(0) if len(runs) <= 3 else None

    never_id = app.enqueue("never")
    app.enqueue("unbounded")
    await drain(app, queues=["q"])
    assert [f.id for f in app.failed("q")] == [never_id]
    assert runs == [0, 1, 2, 3]


async def test_redrive_starts_the_snooze_count_again(driver_app: pgqueue.App) -> None:
    app = driver_app

    @app.task(name="forever", queue="q", max_snoozes=1)
    def forever() -> pgqueue.Snooze:
        return pgqueue.Snooze(0)

    job_id = app.enqueue("forever")
    await drain(app, queues=["q"])
    assert app.retry_failed(job_id) == job_id
    if app.driver.capabilities.job_lookup:
        job = app.get_job(job_id)
        assert job is not None and (job.snoozes, job.attempt) == (0, 0)
    else:
        job = await claim(app)
        assert (job.id, job.snoozes, job.attempt) == (job_id, 0, 1)


def test_max_snoozes_is_checked_and_documented() -> None:
    app = pgqueue.App(driver="memory")
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValidationError, match="max_snoozes must be an integer >= 0"):
            app.task(name=f"bad{type(bad).__name__}", max_snoozes=bad)(lambda: None)  # type: ignore[arg-type]
    assert app.task(name="ok")(lambda: None).max_snoozes == DEFAULT_MAX_SNOOZES == 100
