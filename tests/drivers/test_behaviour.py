"""The behavioural suite: the same scenarios against every driver (postgres, memory, redis,
sqs).

Each test gets ``driver_app``, a fresh :class:`pgqueue.App` on one driver with empty storage,
and runs once per driver. A scenario a driver cannot support is skipped only through the flag the
driver declares in :class:`pgqueue.Capabilities`, never by driver name. Scenarios go through
the App where it offers the operation and through the driver seam for the worker-side operations
(claim with a chosen lease, finish, archive, rescue), and run real burst workers for retries,
snoozes and concurrency. Nothing sleeps to synchronise: tests wait on observable conditions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import pgqueue
from pgqueue.drivers.base import Finish, QueueStats, Requeue
from pgqueue.errors import CapabilityError, JobError, JobNotFoundError, ValidationError
from pgqueue.job import RESCUE_REASON, AttemptError, Job
from pgqueue.retry import RetryPolicy
from tests.helpers import eventually, wait_for

W = "suite-worker"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
#: allowed difference between the test's clock and the backend's (same host)
CLOCK_TOLERANCE = dt.timedelta(milliseconds=50)


# ---- helpers ---------------------------------------------------------------------------------
async def claim(app: pgqueue.App, queues: list[str] | str = "q", limit: int = 1, *,
                worker: str = W, lease_s: float = 60.0) -> list[Job]:
    names = [queues] if isinstance(queues, str) else queues
    return await app.driver.claim(names, limit, worker_id=worker, lease_s=lease_s)


async def claim_in_order(app: pgqueue.App, queues: list[str] | str = "q") -> list[int]:
    """Claim one job at a time until none is ready; the ids in claim order."""
    out: list[int] = []
    while batch := await claim(app, queues):
        out.append(batch[0].id)
    return out


def stats_of(app: pgqueue.App, queue: str) -> QueueStats:
    found = [s for s in app.stats() if s.queue == queue]
    assert found, f"no stats row for queue {queue!r}"
    return found[0]


async def drain(app: pgqueue.App, **opts: Any) -> pgqueue.Worker:
    """Run a burst worker until its queues are empty."""
    opts.setdefault("poll_interval", 0.1)
    worker: pgqueue.Worker = app.worker(burst=True, **opts)
    await asyncio.wait_for(worker.run(), 30)
    return worker


def fast_retry() -> RetryPolicy:
    return RetryPolicy(base=0.01, factor=1.0, jitter=0.0)


def needs(app: pgqueue.App, flag: str, what: str) -> None:
    """Skip unless the driver declares ``flag`` (a :class:`pgqueue.Capabilities` field)."""
    if not getattr(app.driver.capabilities, flag):
        pytest.skip(f"declared: {what} ({flag}=False)")


def needs_delay(app: pgqueue.App, seconds: float) -> None:
    """Skip unless the driver honours delays of ``seconds``."""
    longest = app.driver.capabilities.max_delay_s
    if longest is not None and longest < seconds:
        pytest.skip(f"declared: delays up to {longest:.0f} s (max_delay_s)")


# ---- enqueue, counts, order --------------------------------------------------------------------
async def test_enqueue_count_and_sizes(driver_app: pgqueue.App) -> None:
    app = driver_app
    needs(app, "job_lookup", "no lookup of a job by id")
    needs_delay(app, 3600)
    ids = [app.enqueue("t", {"i": i}, queue="q") for i in range(3)]
    later = app.enqueue("t", {}, queue="q", delay=3600)
    other = app.enqueue("t", {}, queue="other")
    assert ids == sorted(ids) and len({*ids, later, other}) == 5

    assert app.count("q") == 4
    assert await app.count_async("q") == 4
    assert app.sizes("q") == {"waiting": 3, "scheduled": 1, "running": 0, "failed": 0}
    assert app.count("other") == 1
    assert app.count("nothing") == 0
    assert app.sizes("nothing") == {"waiting": 0, "scheduled": 0, "running": 0, "failed": 0}

    job = app.get_job(ids[0])
    assert job is not None
    assert (job.queue, job.task, job.args, job.state) == ("q", "t", {"i": 0}, "waiting")
    assert (job.priority, job.attempt, job.max_attempts) == (20, 0, 5)
    scheduled = app.get_job(later)
    assert scheduled is not None and scheduled.run_at is not None
    assert scheduled.run_at > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=59)
    assert app.get_job(10**9) is None

    [running] = await claim(app)
    assert running.id == ids[0]
    assert app.count("q") == 4  # waiting + running
    assert await app.sizes_async("q") == {"waiting": 2, "scheduled": 1, "running": 1,
                                          "failed": 0}
    st = stats_of(app, "q")
    assert (st.paused, st.waiting, st.scheduled, st.running, st.failed) == (False, 2, 1, 1, 0)


async def test_priority_order_of_ready_jobs(driver_app: pgqueue.App) -> None:
    app = driver_app
    needs(app, "priorities", "no priorities")
    priorities = [50, 3, 20, 3, 1000, 0, 20]
    ids = app.insert([app.build("t", {"n": i}, queue="q", priority=p)
                      for i, p in enumerate(priorities)])
    expected = [i for _, i in sorted(zip(priorities, ids, strict=True))]

    first = await claim(app, limit=3)
    assert {j.id for j in first} == set(expected[:3])
    assert all(j.state == "running" and j.attempt == 1 for j in first)
    assert await claim_in_order(app) == expected[3:]

    # across queues, the best jobs of all of them come first
    a = app.enqueue("t", queue="q1", priority=5)
    b = app.enqueue("t", queue="q1", priority=1)
    c = app.enqueue("t", queue="q2", priority=3)
    d = app.enqueue("t", queue="q2", priority=0)
    assert await claim_in_order(app, ["q1", "q2"]) == [d, b, c, a]


async def test_delayed_jobs_are_not_claimed_before_run_at(driver_app: pgqueue.App) -> None:
    app = driver_app
    needs(app, "priorities", "no priorities")
    needs(app, "job_lookup", "no lookup of a job by id")
    needs_delay(app, 3600)
    now = dt.datetime.now(dt.UTC)
    past = app.enqueue("t", queue="q", run_at=now - dt.timedelta(seconds=30), priority=50)
    future = app.enqueue("t", queue="q", run_at=now + dt.timedelta(hours=1), priority=0)
    soon = app.enqueue("t", queue="q", delay=0.3, priority=0)

    claimed: list[Job] = []

    async def claim_checked() -> list[Job]:
        batch = await claim(app, limit=10)
        after = dt.datetime.now(dt.UTC)
        for job in batch:  # whatever is claimed was due
            assert job.run_at is not None and job.run_at <= after + CLOCK_TOLERANCE
        claimed.extend(batch)
        return batch

    first = await claim_checked()
    assert past in {j.id for j in first}  # due: claimed despite its low priority

    async def soon_claimed() -> bool:
        await claim_checked()
        return soon in {j.id for j in claimed}

    await eventually(soon_claimed, what="the delayed job to become claimable")
    assert future not in {j.id for j in claimed}
    assert app.sizes("q")["scheduled"] == 1
    future_job = app.get_job(future)
    assert future_job is not None and future_job.state == "waiting"
    assert await app.driver.next_run_at(["q"]) == future_job.run_at


async def test_purge_and_count_failed_by_ids_task_and_queue(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    a = [app.enqueue("ta", queue="q1") for _ in range(3)]
    b = [app.enqueue("tb", queue="q1") for _ in range(2)]
    c = [app.enqueue("ta", queue="q2") for _ in range(2)]
    for job in await claim(app, ["q1", "q2"], limit=10):
        assert await driver.archive(job.id, worker_id=W, error=AttemptError.now(1, "x"),
                                    reason="x")
    assert app.count_failed() == 7
    assert await app.count_failed_async(queue="q1") == 5
    assert app.count_failed(task="ta") == 5
    assert app.count_failed(queue="q1", task="ta") == 3
    assert app.count_failed(ids=[a[0], c[0], 999_999]) == 2
    hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert app.count_failed(before=hour_ago) == 0
    # ids only delete those ids; the others stay
    assert app.purge_failed(ids=[a[0]]) == 1
    assert {f.id for f in app.failed(limit=100)} == {*a[1:], *b, *c}
    # every given filter applies: an id of another queue is not deleted by a queue purge
    assert app.purge_failed(ids=[a[1], c[0]], queue="q1") == 1
    assert await app.purge_failed_async(task="tb") == 2
    assert {f.id for f in app.failed()} == {a[2], *c}
    assert app.purge_failed(queue="q2", task="ta") == 2
    assert app.purge_failed(ids=[]) == 0
    assert [f.id for f in app.failed()] == [a[2]]
    with pytest.raises(ValidationError):
        app.purge_failed(ids=[0])
    with pytest.raises(ValidationError):
        app.purge_failed(before=dt.datetime(2020, 1, 1))  # naive: ambiguous


async def test_forget_queue(driver_app: pgqueue.App) -> None:
    app = driver_app
    needs(app, "shared_pause", "no pause shared by the workers")
    assert app.forget_queue("never") is False
    app.pause("typo")
    assert "typo" in {s.queue for s in app.stats()}
    assert app.forget_queue("typo") is True
    assert "typo" not in {s.queue for s in app.stats()}
    assert app.driver.paused_queues() == set()
    # a paused queue with jobs: forgetting it resumes it, and its jobs stay
    job = app.enqueue("t", queue="q")
    app.pause("q")
    assert await claim(app) == []
    assert await app.forget_queue_async("q") is True
    assert [j.id for j in await claim(app)] == [job]


async def test_pause_and_resume(driver_app: pgqueue.App) -> None:
    app = driver_app
    needs(app, "shared_pause", "no pause shared by the workers")
    job = app.enqueue("t", queue="q")
    elsewhere = app.enqueue("t", queue="q2")
    app.pause("q")
    assert app.driver.paused_queues() == {"q"}
    assert await app.driver.paused_queues_async() == {"q"}
    assert stats_of(app, "q").paused is True
    assert await app.driver.next_run_at(["q"]) is None
    assert [j.id for j in await claim(app, ["q", "q2"], limit=10)] == [elsewhere]
    assert await claim(app) == []
    assert app.count("q") == 1

    await app.resume_async("q")
    assert app.driver.paused_queues() == set()
    assert [j.id for j in await claim(app)] == [job]


async def test_push_wakeups(driver_app: pgqueue.App) -> None:
    app = driver_app
    if not app.driver.capabilities.push_wakeups:
        pytest.skip("declared: no push wake-ups (workers poll)")
    events: list[tuple[str, Any]] = []
    arrived = asyncio.Event()

    def callback(kind: str, payload: Any) -> None:
        events.append((kind, payload))
        arrived.set()

    listener = app.driver.listener(callback)
    assert listener is not None
    await listener.start()
    try:
        async def job_wakeup() -> bool:
            # enqueue until the listener, which subscribes in the background, hears one
            arrived.clear()
            app.enqueue("t", queue="q")
            try:
                await asyncio.wait_for(arrived.wait(), 0.5)
            except TimeoutError:
                return False
            return ("job", "q") in events

        await eventually(job_wakeup, what="a job wake-up")

        async def control(paused: bool) -> bool:
            return ("control", {"op": "pause", "queue": "q", "paused": paused}) in events

        app.pause("q")
        await eventually(lambda: control(True), what="the pause control message")
        app.resume("q")
        await eventually(lambda: control(False), what="the resume control message")
    finally:
        await listener.stop()


# ---- outcomes -----------------------------------------------------------------------------------
async def test_claim_and_finish_moves_the_job_to_history(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    job_id = app.enqueue("t", {"x": 1}, queue="q")
    [job] = await claim(app)
    assert (job.id, job.attempt, job.state, job.args) == (job_id, 1, "running", {"x": 1})
    lookup = driver.capabilities.job_lookup
    if lookup:
        running = app.get_job(job_id)
        assert running is not None and running.state == "running"

    assert await driver.finish_many([Finish(job_id)], worker_id="another-worker") == []
    assert await driver.finish_many([Finish(job_id, "succeeded", '{"ok": true}')],
                                    worker_id=W) == [job_id]
    assert await driver.finish_many([Finish(job_id)], worker_id=W) == []  # only once
    if lookup:
        assert app.get_job(job_id) is None
    assert app.count("q") == 0
    if driver.capabilities.history:
        st = stats_of(app, "q")
        assert (st.finished_last_hour, st.waiting, st.running) == (1, 0, 0)


async def test_get_finished_reads_state_and_result_back(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    needs(app, "history", "no history of finished jobs")
    job_id = app.enqueue("t", {"x": 1}, queue="q")
    assert app.get_finished(job_id) is None  # still live
    await claim(app)
    await driver.finish_many([Finish(job_id, "succeeded", '{"ok": [1, 2]}')], worker_id=W)
    done = app.get_finished(job_id)
    assert done is not None
    assert (done.id, done.state, done.result, done.args, done.attempt) == (
        job_id, "succeeded", {"ok": [1, 2]}, {"x": 1}, 1)
    assert await app.get_finished_async(job_id) == done
    assert app.get_finished(job_id + 1000) is None


async def test_stale_outcomes_of_an_earlier_attempt_are_no_ops(driver_app: pgqueue.App) -> None:
    """An outcome carries the attempt it was claimed at: one left over from attempt 1 (a retry
    buffered by the completer, say) never lands on the same worker's later claim of the job."""
    app, driver = driver_app, driver_app.driver
    job_id = app.enqueue("t", queue="q")
    [first] = await claim(app)
    assert (first.id, first.attempt) == (job_id, 1)
    err1 = AttemptError.now(1, "boom 1")
    assert await driver.requeue_many([Requeue(job_id, error=err1, attempt=1)],
                                     worker_id=W) == [job_id]
    lookup = driver.capabilities.job_lookup
    if lookup:
        waiting = app.get_job(job_id)
        assert waiting is not None and (waiting.state, waiting.attempt) == ("waiting", 1)

    [second] = await claim(app)  # the same worker claims it again
    assert (second.id, second.attempt) == (job_id, 2)

    def still_running_at_attempt_2() -> None:
        if lookup:
            job = app.get_job(job_id)
            assert job is not None
            assert (job.state, job.attempt) == ("running", 2)
            assert [e.error for e in job.errors] == ["boom 1"]
        assert app.sizes("q") == {"waiting": 0, "scheduled": 0, "running": 1, "failed": 0}

    stale_err = AttemptError.now(1, "stale")
    assert await driver.finish_many([Finish(job_id, attempt=1)], worker_id=W) == []
    still_running_at_attempt_2()
    assert await driver.requeue_many([Requeue(job_id, error=stale_err, attempt=1)],
                                     worker_id=W) == []
    still_running_at_attempt_2()
    assert await driver.requeue_many(
        [Requeue(job_id, count_attempt=False, attempt=1)], worker_id=W) == []
    still_running_at_attempt_2()
    assert await driver.archive(job_id, worker_id=W, error=stale_err, reason="stale",
                                attempt=1) is False
    still_running_at_attempt_2()
    assert app.failed("q") == []

    # the outcome of the current attempt applies
    assert await driver.finish_many([Finish(job_id, "succeeded", '{"ok": true}', attempt=2)],
                                    worker_id=W) == [job_id]
    if lookup:
        assert app.get_job(job_id) is None
    assert app.count("q") == 0 and app.failed("q") == []


async def test_failing_job_retries_then_lands_in_the_archive(driver_app: pgqueue.App) -> None:
    app = driver_app
    dead: list[tuple[int, str]] = []

    @app.task(name="boom", queue="q", max_attempts=3, retry=fast_retry())
    def boom(n: int) -> None:
        raise ValueError(f"boom {pgqueue.current_job().attempt}")

    app.on_dead_letter("q", lambda job, exc: dead.append((job.id, str(exc))))
    job_id = app.enqueue("boom", {"n": 7})
    worker = await drain(app, queues=["q"])

    assert worker.counts == {"retried": 2, "failed": 1}
    assert dead == [(job_id, "boom 3")]  # the dead-letter hook ran once
    [failed] = app.failed("q")
    assert (failed.id, failed.attempt, failed.max_attempts) == (job_id, 3, 3)
    assert failed.payload == {"n": 7}
    kept = (1, 2, 3) if app.driver.capabilities.attempt_errors else (3,)  # else the last one
    assert [e.error for e in failed.errors] == [f"ValueError: boom {i}" for i in kept]
    assert [e.attempt for e in failed.errors] == list(kept)
    assert "boom 3" in failed.reason
    assert app.get_failed(job_id) == failed
    assert app.count("q") == 0
    assert app.sizes("q")["failed"] == 1


async def test_archive_and_redrive(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    ids = [app.enqueue("t", {"i": i}, queue="q", max_attempts=1) for i in range(3)]
    claimed = await claim(app, limit=3)
    assert sorted(j.id for j in claimed) == ids
    err = AttemptError.now(1, "bad")
    assert await driver.archive(ids[0], worker_id="another-worker", error=err,
                                reason="bad") is False
    for i in ids:
        assert await driver.archive(i, worker_id=W, error=AttemptError.now(1, f"bad {i}"),
                                    reason=f"bad {i}") is True
    assert await driver.archive(ids[0], worker_id=W, error=err, reason="bad") is False
    assert app.count("q") == 0
    assert {f.id for f in app.failed("q")} == set(ids)
    assert app.failed("q", limit=2) == app.failed()[:2]
    assert app.get_failed(ids[0]).reason == f"bad {ids[0]}"

    assert app.retry_failed(ids[0]) == ids[0]
    if driver.capabilities.job_lookup:
        job = app.get_job(ids[0])
        assert job is not None
        assert (job.id, job.state, job.attempt) == (ids[0], "waiting", 0)
        assert [e.error for e in job.errors] == [f"bad {ids[0]}"]  # errors are kept
    with pytest.raises(JobNotFoundError):
        app.retry_failed(ids[0])
    with pytest.raises(JobNotFoundError):
        app.get_failed(ids[0])

    assert sorted(app.retry_all_failed("q")) == ids[1:]
    assert app.failed() == []
    assert app.count("q") == 3
    again = await claim(app, limit=3)
    assert sorted(j.id for j in again) == ids and all(j.attempt == 1 for j in again)


async def test_purge_failed(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    ids = {q: [app.enqueue("t", queue=q) for _ in range(n)] for q, n in (("q1", 2), ("q2", 1))}
    for job in await claim(app, ["q1", "q2"], limit=10):
        assert await driver.archive(job.id, worker_id=W, error=AttemptError.now(1, "x"),
                                    reason="x")
    hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert app.purge_failed("q1", before=hour_ago) == 0
    assert app.purge_failed("q1") == 2
    assert [f.id for f in app.failed()] == ids["q2"]
    assert await app.purge_failed_async() == 1
    assert app.failed() == []
    assert app.sizes("q1")["failed"] == 0


async def test_cancel(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    needs(app, "job_lookup", "no lookup (or cancel) of a job by id")
    waiting = app.enqueue("t", queue="q", priority=50)
    running = app.enqueue("t", queue="q", priority=0)
    assert [j.id for j in await claim(app)] == [running]

    assert app.cancel(waiting) is True
    assert app.get_job(waiting) is None
    assert app.count("q") == 1
    if driver.capabilities.history:
        assert stats_of(app, "q").finished_last_hour == 1  # in history, as cancelled

    assert await app.cancel_async(running) is True  # asks its worker to stop
    job = app.get_job(running)
    assert job is not None and job.state == "running"
    assert await driver.cancel_requested(worker_id=W) == [running]
    assert await driver.cancel_requested(worker_id="another-worker") == []
    # among the jobs the worker holds (its cancel poll): only those
    assert await driver.cancel_requested(worker_id=W, job_ids=[waiting, running]) == [running]
    assert await driver.cancel_requested(worker_id=W, job_ids=[waiting]) == []
    assert await driver.cancel_requested(worker_id=W, job_ids=[]) == []
    assert await driver.cancel_requested(worker_id="another-worker", job_ids=[running]) == []
    assert app.cancel(10**9) is False


async def test_pop(driver_app: pgqueue.App) -> None:
    app = driver_app
    needs(app, "priorities", "no priorities")
    needs_delay(app, 3600)
    low = app.enqueue("t", {"n": "low"}, queue="q", priority=50)
    high = app.enqueue("t", {"n": "high"}, queue="q", priority=1)
    app.enqueue("t", queue="q", priority=0, delay=3600)  # not ready: never popped
    job = app.pop("q")
    assert job is not None and (job.id, job.payload) == (high, {"n": "high"})
    assert app.count("q") == 2
    job = await app.pop_async("q")
    assert job is not None and job.id == low
    assert app.pop("q") is None
    assert app.count("q") == 1
    assert app.pop("nothing") is None


async def test_clear(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    needs(app, "clear_spares_running", "clear deletes running jobs too")
    needs_delay(app, 3600)
    ids = [app.enqueue("t", queue="q") for _ in range(4)]
    app.enqueue("t", queue="q", delay=3600)
    app.enqueue("t", queue="other")
    [running] = await claim(app)
    assert running.id == ids[0]
    assert app.clear("q") == 4  # three ready and one scheduled
    assert app.count("q") == 1  # the running job finishes normally
    assert app.count("other") == 1
    assert await driver.finish_many([Finish(running.id)], worker_id=W) == [running.id]
    assert await app.clear_async("q") == 0


async def test_unique_keys(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    needs(app, "unique_keys", "no unique keys")
    first = app.enqueue("t", queue="q", unique_key="k1")
    assert app.enqueue("t", queue="q", unique_key="k1") == first
    batch = app.enqueue_many("t", [{"i": 1}, {"i": 2}], queue="q2", unique_key="k2")
    assert batch[0] == batch[1] != first
    assert app.count("q") == 1 and app.count("q2") == 1

    [job] = await claim(app)
    assert await driver.finish_many([Finish(job.id)], worker_id=W) == [first]
    second = app.enqueue("t", queue="q", unique_key="k1")  # the key is free again
    assert second != first

    # an archived job does not hold its key, and cannot be re-driven while a live job does
    [job] = await claim(app)
    assert await driver.archive(job.id, worker_id=W, error=AttemptError.now(1, "x"),
                                    reason="x")
    third = app.enqueue("t", queue="q", unique_key="k1")
    assert third != second
    with pytest.raises(JobError):
        app.retry_failed(second)
    assert app.get_failed(second).id == second


async def test_transactional_enqueue(driver_app: pgqueue.App) -> None:
    app = driver_app
    if not app.driver.capabilities.transactional_enqueue:
        pytest.skip("declared: no transactional enqueue")
    import psycopg

    assert app.database_url is not None
    with psycopg.connect(app.database_url) as c:
        app.enqueue("t", queue="q", conn=c)
        c.rollback()
    assert app.count("q") == 0
    with psycopg.connect(app.database_url) as c:
        job_id = app.enqueue("t", queue="q", conn=c)
        c.commit()
    assert app.count("q") == 1
    assert app.get_job(job_id) is not None


async def test_conn_is_refused_where_not_declared(driver_app: pgqueue.App) -> None:
    """App checks the capability once (drivers do not repeat it); a driver without
    transactional completion does not offer it at all."""
    app, driver = driver_app, driver_app.driver
    if driver.capabilities.transactional_enqueue:
        pytest.skip("declared: transactional enqueue (see test_transactional_enqueue)")
    with pytest.raises(CapabilityError):
        app.enqueue("t", queue="q", conn=object())  # type: ignore[arg-type]
    with pytest.raises(CapabilityError):
        await app.enqueue_async("t", queue="q", conn=object())  # type: ignore[arg-type]
    job = app.build("t", queue="q")
    with pytest.raises(CapabilityError):
        app.insert([job], conn=object())  # type: ignore[arg-type]
    if not driver.capabilities.transactional_completion:
        with pytest.raises(CapabilityError):
            driver.finish_in_transaction(object(), 1, worker_id=W)
        with pytest.raises(CapabilityError):
            await driver.finish_in_transaction_async(object(), 1, worker_id=W)
    assert app.count("q") == 0


# ---- leases -------------------------------------------------------------------------------------
async def test_rescue_of_expired_leases(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    needs(app, "rescue", "the backend makes expired jobs claimable by itself")
    needs(app, "job_lookup", "no lookup of a job by id")
    retried = app.enqueue("t", queue="q", max_attempts=2, priority=0)
    last = app.enqueue("t", queue="q", max_attempts=1, priority=1)
    alive = app.enqueue("t", queue="q", priority=2)
    assert [j.id for j in await claim(app, worker="dead", lease_s=0.05)] == [retried]
    assert [j.id for j in await claim(app, worker="dead", lease_s=0.05)] == [last]
    assert [j.id for j in await claim(app, worker="alive", lease_s=60)] == [alive]

    requeued: list[int] = []
    archived: list[int] = []

    async def rescued_both() -> bool:
        r, f = await driver.rescue_expired(spread_s=0)
        requeued.extend(r)
        archived.extend(f)
        return {retried, last} <= set(requeued)

    await eventually(rescued_both, what="the expired leases to be rescued")
    assert alive not in requeued and archived == []
    job = app.get_job(retried)
    assert job is not None and (job.state, job.attempt) == ("waiting", 1)
    assert job.errors[-1].error == RESCUE_REASON
    # a rescue never archives a job for want of attempts (one death is no proof against it)
    job = app.get_job(last)
    assert job is not None and (job.state, job.attempt) == ("waiting", 1)

    # the dead worker cannot complete what it lost; the job runs again, counting the attempt
    assert await driver.finish_many([Finish(retried)], worker_id="dead") == []
    [again] = await claim(app)
    assert (again.id, again.attempt) == (retried, 2)


async def test_heartbeat_extends_only_listed_leases(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    needs(app, "rescue", "the backend makes expired jobs claimable by itself")
    needs(app, "job_lookup", "no lookup of a job by id")
    kept = app.enqueue("t", queue="q", priority=0)
    lost = app.enqueue("t", queue="q", priority=1)
    await claim(app, limit=2, lease_s=0.05)
    await driver.heartbeat(worker_id=W, lease_s=60, job_ids=[kept])

    requeued: list[int] = []

    async def lost_rescued() -> bool:
        requeued.extend((await driver.rescue_expired())[0])
        return lost in requeued

    await eventually(lost_rescued, what="the unlisted job's lease to be rescued")
    assert kept not in requeued
    job = app.get_job(kept)
    assert job is not None and job.state == "running"


# ---- workers ------------------------------------------------------------------------------------
async def test_snooze_gives_the_attempt_back(driver_app: pgqueue.App) -> None:
    app = driver_app
    attempts: list[int] = []

    @app.task(name="snoozy", queue="q")
    def snoozy() -> pgqueue.Snooze | None:
        attempts.append(pgqueue.current_job().attempt)
        return pgqueue.Snooze(0.01) if len(attempts) == 1 else None

    events: list[str] = []
    app.enqueue("snoozy")
    await drain(app, queues=["q"], on_event=lambda event, job: events.append(event))
    assert attempts == [1, 1]
    assert events == ["started", "snoozed", "started", "succeeded"]
    assert app.count("q") == 0 and app.failed("q") == []


async def test_concurrent_workers_run_every_job_exactly_once(driver_app: pgqueue.App) -> None:
    app = driver_app
    runs: Counter[int] = Counter()
    in_flight: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    lock = threading.Lock()

    @app.task(name="work", queue="q")
    def work(n: int) -> None:
        ctx = pgqueue.current_context()
        with lock:
            runs[ctx.job.id] += 1
            in_flight[ctx.worker_id] += 1
            peak[ctx.worker_id] = max(peak[ctx.worker_id], in_flight[ctx.worker_id])
        time.sleep(0.002)  # a little work, so that jobs overlap
        with lock:
            in_flight[ctx.worker_id] -= 1

    ids = app.enqueue_many("work", [{"n": i} for i in range(60)])
    await asyncio.gather(drain(app, queues=["q"], concurrency=5),
                         drain(app, queues=["q"], concurrency=5))
    assert sorted(runs) == sorted(ids)
    if app.driver.capabilities.exclusive_claims:
        assert set(runs.values()) == {1}
    else:  # SQS delivers at least once: a second delivery is rare (moto's emulator races
        # concurrent receives of one message), not the rule
        assert sum(runs.values()) - len(ids) <= len(ids) // 4, runs
    assert max(peak.values()) <= 5
    assert app.count("q") == 0
    if app.driver.capabilities.history:
        assert stats_of(app, "q").finished_last_hour == 60


async def test_cancel_of_a_running_job_stops_it(driver_app: pgqueue.App) -> None:
    app = driver_app
    needs(app, "job_lookup", "no lookup (or cancel) of a job by id")
    started = threading.Event()
    events: list[str] = []

    @app.task(name="long", queue="q")
    def long() -> None:
        started.set()
        pgqueue.current_context().cancelled.wait(30)

    job_id = app.enqueue("long")
    # a short lease makes the maintenance loop poll cancel requests often (drivers without
    # push wake-ups rely on it)
    worker: pgqueue.Worker = app.worker(["q"], lease_s=0.6, poll_interval=0.1,
                                        on_event=lambda event, job: events.append(event))
    run = asyncio.create_task(worker.run())
    try:
        async def is_started() -> bool:
            return started.is_set()

        async def is_cancelled() -> bool:
            return "cancelled" in events

        await eventually(is_started, what="the job to start")
        assert app.cancel(job_id) is True
        await eventually(is_cancelled, what="the running job to be cancelled")
    finally:
        worker.stop()
        await asyncio.wait_for(run, 20)
    assert app.get_job(job_id) is None
    assert app.failed("q") == []
    if app.driver.capabilities.history:
        assert stats_of(app, "q").finished_last_hour == 1


# ---- a redis worker process killed mid-job ------------------------------------------------------
@pytest.mark.processes
async def test_redis_worker_sigkilled_mid_job_loses_no_job(
        redis_prefix: tuple[str, str]) -> None:
    import redis

    from pgqueue.drivers.redis import RedisDriver

    url, prefix = redis_prefix
    app = pgqueue.App(driver=RedisDriver(url, prefix=prefix))
    marker = redis.Redis.from_url(url, decode_responses=True)
    started_key = f"{prefix}:test:started"
    ids = app.enqueue_many("t", [{"n": i} for i in range(6)], queue="k")

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(HERE / "redis_worker.py"), url, prefix],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: marker.scard(started_key) >= 2 or proc.poll() is not None, 30,
                 "the worker process to be inside two jobs")
        assert proc.poll() is None, proc.communicate()[0]
        assert app.sizes("k") == {"waiting": 4, "scheduled": 0, "running": 2, "failed": 0}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        marker.close()
    killed = {int(i) for i in redis.Redis.from_url(url).smembers(started_key)}
    assert len(killed) == 2

    requeued: list[int] = []

    async def rescued() -> bool:  # the killed worker's leases (0.5 s) expire, nothing else
        requeued.extend((await app.driver.rescue_expired())[0])
        return set(requeued) >= killed

    await eventually(rescued, what="the killed worker's jobs to be rescued")
    for job_id in killed:
        job = app.get_job(job_id)
        assert job is not None and job.errors[-1].error == RESCUE_REASON

    runs: Counter[int] = Counter()
    attempts: dict[int, int] = {}

    @app.task(name="t", queue="k")
    def t(n: int) -> None:
        job = pgqueue.current_job()
        runs[job.id] += 1
        attempts[job.id] = job.attempt

    await drain(app, queues=["k"], concurrency=3)
    assert sorted(runs) == sorted(ids) and set(runs.values()) == {1}  # none lost, none twice
    assert {i: attempts[i] for i in killed} == {i: 2 for i in killed}
    assert app.count("k") == 0 and app.failed("k") == []
    assert stats_of(app, "k").finished_last_hour == 6
    await app.aclose()


async def test_worker_in_another_thread_wakes_on_enqueue(driver_app: pgqueue.App) -> None:
    app = driver_app
    if not app.driver.capabilities.push_wakeups:
        pytest.skip("declared: no push wake-ups (workers poll)")
    ran: list[int] = []
    done = threading.Event()

    @app.task(name="ping", queue="q")
    def ping() -> None:
        ran.append(pgqueue.current_job().id)
        done.set()

    # a poll interval far beyond the wait below: only a pushed wake-up runs the job in time
    worker: pgqueue.Worker = app.worker(["q"], poll_interval=60.0).start_in_thread()
    try:
        def enqueued_job_ran() -> bool:
            # the listener subscribes in the background: enqueue until a wake-up is heard
            app.enqueue("ping", queue="q")
            return done.wait(0.5)

        wait_for(enqueued_job_ran, 20, "a job enqueued from this thread to run")
    finally:
        worker.stop()
        assert worker.join(20)
    assert ran


# ---- construction and the redis boundary --------------------------------------------------------
def test_drivers_by_name_declare_their_limits() -> None:
    memory = pgqueue.App(driver="memory").driver
    assert memory.name == "memory"
    assert not memory.capabilities.cross_process
    assert not memory.capabilities.transactional_enqueue
    redis_driver = pgqueue.App(driver="redis").driver  # connects lazily
    assert redis_driver.name == "redis"
    assert redis_driver.capabilities.cross_process
    assert not redis_driver.capabilities.transactional_completion


@pytest.mark.parametrize("url", ["http://localhost:6379", "redis://localhost:port/0",
                                 "redis://localhost/zero", ""])
def test_redis_bad_url_is_a_configuration_error(url: str) -> None:
    from pgqueue.drivers.redis import RedisDriver

    with pytest.raises(pgqueue.ConfigurationError) as info:
        RedisDriver(url)
    assert info.value.key == "redis url"


async def test_redis_down_is_database_unavailable() -> None:
    from pgqueue.drivers.redis import RedisDriver

    driver = RedisDriver("redis://:secret@127.0.0.1:1/0", connect_timeout=1)
    with pytest.raises(pgqueue.DatabaseUnavailableError) as info:
        driver.count("q")
    assert "127.0.0.1:1" in str(info.value) and "secret" not in str(info.value)
    with pytest.raises(pgqueue.DatabaseUnavailableError):
        await driver.claim(["q"], 1, worker_id=W, lease_s=1)
    with pytest.raises(pgqueue.DatabaseUnavailableError):
        driver.check()
    driver.close()


# ---- periodic jobs and the leader lease ----------------------------------------------------
async def test_periodic_schedules_where_declared_refused_elsewhere(
        driver_app: pgqueue.App) -> None:
    """A driver with ``periodic`` claims each tick once; one without refuses the declaration
    with a CapabilityError (and the admin calls too), writing nothing."""
    app, driver = driver_app, driver_app.driver
    if not driver.capabilities.periodic:
        with pytest.raises(CapabilityError, match="periodic"):
            app.add_periodic("p", task="t", cron="@hourly", queue="q")
        assert app.schedules == {}
        with pytest.raises(CapabilityError):
            app.periodic_schedules()
        with pytest.raises(CapabilityError):
            await app.run_periodic_now_async("p")
        return
    import datetime as dt

    from pgqueue.worker.maintenance import Scheduler

    schedule = app.add_periodic("p", task="t", every=dt.timedelta(hours=1), queue="q")
    await Scheduler(driver, schedules=app.schedules).sync()
    _, states = await driver.schedule_states(["p"])
    last = states["p"].last_tick
    tick = schedule.next_after(last)
    assert tick is not None
    claims = [driver.claim_ticks("p", expected=last, new_last=tick, next_tick=None,
                                 jobs=[schedule.job_for(tick)]) for _ in range(3)]
    results = [await c for c in claims]
    assert sum(r is not None for r in results) == 1  # the first wins, the others see it moved
    assert app.count("q") == 1
    assert [s.name for s in await app.periodic_schedules_async()] == ["p"]


async def test_leader_lease_is_held_by_one_holder_at_a_time(driver_app: pgqueue.App) -> None:
    """With a shared table (``periodic``) one holder at a time, taken over once released;
    without one, every worker leads its own idempotent duties."""
    driver = driver_app.driver
    assert await driver.acquire_lease("leader", holder="a", ttl_s=30)
    assert await driver.acquire_lease("leader", holder="a", ttl_s=30)  # renewal
    b = await driver.acquire_lease("leader", holder="b", ttl_s=30)
    assert b is (not driver.capabilities.periodic)
    await driver.release_lease("leader", holder="a")
    assert await driver.acquire_lease("leader", holder="b", ttl_s=30)


# ---- flow control ------------------------------------------------------------------------------
async def test_queue_limits_where_offered_refused_elsewhere(driver_app: pgqueue.App) -> None:
    """A driver with ``flow_control`` holds a queue at its concurrency limit and a key at its
    per-key limit; one without refuses the limits and the keys with a CapabilityError, writing
    nothing."""
    app, driver = driver_app, driver_app.driver
    if not driver.capabilities.flow_control:
        with pytest.raises(CapabilityError, match="flow control"):
            app.queue("q", concurrency=2)
        with pytest.raises(CapabilityError, match="flow control"):
            await app.enqueue_async("t", {}, queue="q", concurrency_key="k")
        with pytest.raises(CapabilityError, match="flow control"):
            app.set_queue_limits("q", concurrency=2)
        assert app.queue_limits == {} and app.count("q") == 0
        return
    app.queue("q", concurrency=2)
    await app.apply_queue_limits_async()
    for _ in range(3):
        await app.enqueue_async("t", {}, queue="q")
    for _ in range(2):
        await app.enqueue_async("t", {}, queue="k", concurrency_key="one")
    assert len(await claim(app, "q", 10)) == 2  # the limit, not the 10 asked for
    assert len(await claim(app, "k", 10)) == 1  # one per key by default
