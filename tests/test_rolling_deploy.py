"""Rolling deploys: a job of a task the running worker does not know yet.

A newer producer enqueues a task that only the newer workers have; an older worker claims it
first. Within ``unknown_task_grace`` (from the job's enqueue) the older worker puts it back --
not run, not archived, its attempt not counted, a warning logged -- and a worker that knows the
task runs it once it starts. Past the grace, the job is archived with a reason that says so.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import pgqueue
from pgqueue.worker._executor import unknown_task_delay
from tests.helpers import eventually


async def test_unknown_task_waits_for_a_worker_that_knows_it(
        clean: str, caplog: pytest.LogCaptureFixture) -> None:
    old = pgqueue.App(database_url=clean, strict=False)  # the worker of the previous release
    new = pgqueue.App(database_url=clean)                 # the next one knows "report"

    @old.task(name="ping", queue="q")
    def ping() -> None:
        pass

    ran = asyncio.Event()

    @new.task(name="report", queue="q")
    def report() -> str:
        ran.set()
        return "done"

    deferred: list[int] = []
    old_worker = old.worker(["q"], unknown_task_grace=30, poll_interval=0.1,
                            on_event=lambda e, j: deferred.append(j.id) if e == "deferred"
                            else None)
    new_worker = new.worker(["q"], poll_interval=0.1)
    old_run = asyncio.create_task(old_worker.run())
    new_run: asyncio.Task[None] | None = None
    try:
        caplog.set_level(logging.WARNING, logger="pgqueue.worker")
        job_id = await new.enqueue_async("report")
        # the old worker claims it, puts it back, claims it again after the back-off, ...
        await eventually(lambda: deferred.count(job_id) >= 3, 60, "three put-backs")
        assert unknown_task_delay(30) == 0.6  # a back-off, not a hot loop
        assert not ran.is_set()
        assert await old.driver.get_failed_async(job_id) is None  # not archived within the grace
        job = await old.get_job_async(job_id)
        assert job is not None and job.attempt <= 1  # put-backs count no attempt
        assert any("unknown to this worker" in r.getMessage() and "rolling deploy" in
                   r.getMessage() for r in caplog.records)
        # the deploy goes on: a worker that knows the task starts and runs it
        new_run = asyncio.create_task(new_worker.run())
        await asyncio.wait_for(ran.wait(), 60)
        done = await eventually(lambda: new.get_finished_async(job_id), 60, "the history row")
        assert done is not None and done.state == "succeeded" and done.attempt == 1
    finally:
        old_worker.stop()
        new_worker.stop()
        await asyncio.wait_for(old_run, 60)
        if new_run is not None:
            await asyncio.wait_for(new_run, 60)
        for app in (old, new):
            await app.aclose()
            app.close()


async def test_unknown_task_is_archived_after_the_grace(clean: str) -> None:
    app = pgqueue.App(database_url=clean, strict=False)

    @app.task(name="ping", queue="q")
    def ping() -> None:
        pass

    failed = asyncio.Event()
    worker = app.worker(["q"], unknown_task_grace=0.3, poll_interval=0.1,
                        on_event=lambda e, j: failed.set() if e == "failed" else None)
    run = asyncio.create_task(worker.run())
    try:
        job_id = await app.enqueue_async("ghost", queue="q")
        await asyncio.wait_for(failed.wait(), 60)
        archived = await app.driver.get_failed_async(job_id)
        assert archived is not None
        assert "unknown task 'ghost'" in archived.reason
        assert "unknown_task_grace (0.3 s" in archived.reason
    finally:
        worker.stop()
        await asyncio.wait_for(run, 60)
        await app.aclose()
        app.close()


def test_unknown_task_grace_is_validated(clean: str) -> None:
    app = pgqueue.App(database_url=clean)
    with pytest.raises(pgqueue.ValidationError, match="unknown_task_grace"):
        app.worker(["q"], unknown_task_grace=-1)
