"""The worker runtime against real PostgreSQL: order, delays, pause, retries and the archive,
outcomes, in-transaction completion, unknown tasks, concurrency of sync and async handlers,
cancellation and timeouts. In-process workers; see test_worker_processes.py for real processes."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import sys
import threading
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.retry import RetryPolicy
from tests.helpers import eventually, run_async, scalar


def fast_retry() -> RetryPolicy:
    return RetryPolicy(base=0.02, factor=2.0, jitter=0.0)


async def drain(app: pgqueue.App, **opts: Any) -> pgqueue.Worker:
    """Run a burst worker until the queues are empty."""
    opts.setdefault("poll_interval", 0.2)
    w: pgqueue.Worker = app.worker(burst=True, **opts)
    await asyncio.wait_for(w.run(), 60)
    return w


async def test_priority_order_among_ready_jobs(app: pgqueue.App) -> None:
    order: list[int] = []

    @app.task(name="p", queue="q")
    def p(n: int) -> None:
        order.append(n)

    priorities = [50, 3, 20, 3, 1000, 0, 20, 7]
    app.insert([app.build("p", {"n": i}, priority=prio) for i, prio in enumerate(priorities)])
    await drain(app, queues=["q"], concurrency=1)
    expected = [i for _, i in sorted((prio, i) for i, prio in enumerate(priorities))]
    assert order == expected


async def test_no_job_starts_before_run_at(app: pgqueue.App,
                                           conn: psycopg.Connection[Any]) -> None:
    started: dict[int, dt.datetime] = {}

    @app.task(name="d", queue="q")
    def d() -> None:
        started[pgqueue.current_job().id] = dt.datetime.now(dt.UTC)

    ids = [app.enqueue("d", delay=0.3), app.enqueue("d", delay=0.05), app.enqueue("d")]
    run_at = {i: scalar(conn, "SELECT run_at FROM pgqueue.jobs WHERE id = %s", i) for i in ids}
    # the worker wakes at the next run_at: with an hour-long poll interval and no NOTIFY to come
    # (the jobs were enqueued before it listened), the burst ends only if it does
    await drain(app, queues=["q"], concurrency=3, poll_interval=3600)
    for i in ids:
        assert started[i] >= run_at[i], f"job {i} started before its run_at"


async def test_paused_queue_runs_nothing_until_resumed(app: pgqueue.App) -> None:
    done: list[str] = []
    other_done = asyncio.Event()

    @app.task(name="pq", queue="paused")
    def pq() -> None:
        done.append("paused")

    @app.task(name="oq", queue="open")
    def oq() -> None:
        done.append("open")

    app.pause("paused")
    app.enqueue("pq")
    w = app.worker(queues=["paused", "open"], concurrency=2, poll_interval=0.1,
                   on_event=lambda e, j: other_done.set() if j.task == "oq" and
                   e == "succeeded" else None)
    task = asyncio.create_task(w.run())
    app.enqueue("oq")
    await asyncio.wait_for(other_done.wait(), 10)
    # the worker has claimed since the pause (it ran "oq"), and left the paused job alone
    assert done == ["open"]
    assert app.sizes("paused")["waiting"] == 1
    resumed = asyncio.Event()
    w.on_event = lambda e, j: resumed.set() if j.task == "pq" and e == "succeeded" else None
    app.resume("paused")
    await asyncio.wait_for(resumed.wait(), 10)  # no restart needed
    w.stop()
    await task
    assert done == ["open", "paused"]


async def test_failing_job_retries_with_growing_gaps_then_archive_and_redrive(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    calls: list[int] = []
    dead: list[tuple[int, str]] = []
    healthy = threading.Event()

    @app.task(name="flaky", queue="q", max_attempts=4,
              retry=RetryPolicy(base=0.05, factor=3.0, jitter=0.0))
    def flaky(x: int) -> str:
        calls.append(pgqueue.current_job().attempt)
        if not healthy.is_set():
            raise RuntimeError(f"broken {x}")
        return "ok"

    app.on_dead_letter("q", lambda job, err: dead.append((job.id, str(err))))
    job_id = app.enqueue("flaky", {"x": 7})
    await drain(app, queues=["q"])
    assert calls == [1, 2, 3, 4]
    failed = app.get_failed(job_id)
    assert failed.attempt == 4 and failed.args == {"x": 7}
    assert [e["attempt"] for e in failed.errors] == [1, 2, 3, 4]
    assert all("RuntimeError: broken 7" in e["error"] for e in failed.errors)
    assert all("Traceback" in e["traceback"] for e in failed.errors)
    at = [dt.datetime.fromisoformat(e["at"]) for e in failed.errors]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(at)]
    # each retry waited at least its growing backoff (0.05, 0.15, 0.45 s); how much longer it
    # took depends on the machine's load, so only the lower bounds are asserted
    assert all(gap >= backoff for gap, backoff in zip(gaps, (0.05, 0.15, 0.45), strict=True))
    assert dead == [(job_id, "broken 7")]  # the hook ran once
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0
    # re-drive: back with the same id, attempt 0, and now it succeeds
    assert app.retry_failed(job_id) == job_id
    healthy.set()
    await drain(app, queues=["q"])
    assert scalar(conn, "SELECT state FROM pgqueue.job_history WHERE id = %s", job_id) == \
        "succeeded"
    assert scalar(conn, "SELECT count(*) FROM pgqueue.failed_jobs") == 0
    assert len(dead) == 1


async def test_dead_letter_hook_exception_is_logged_not_fatal(
        app: pgqueue.App, caplog: pytest.LogCaptureFixture) -> None:
    after: list[int] = []

    @app.task(name="bad", queue="q", max_attempts=1)
    def bad() -> None:
        raise ValueError("x")

    @app.task(name="good", queue="q")
    def good() -> None:
        after.append(1)

    def hook(job: pgqueue.Job, err: BaseException) -> None:
        raise RuntimeError("hook broke")

    app.on_dead_letter("q", hook)
    app.enqueue("bad")
    app.enqueue("good", priority=100)
    await drain(app, queues=["q"])
    assert after == [1]
    assert "dead-letter hook" in caplog.text


async def test_class_based_job_failed_hook(app: pgqueue.App) -> None:
    failures: list[str] = []

    @app.task(name="email_job", queue="q", max_attempts=2, retry=fast_retry())
    class EmailJob:
        def __init__(self, to: str) -> None:
            self.to = to

        def handle(self) -> None:
            raise ConnectionError(f"cannot reach {self.to}")

        def failed(self, exc: BaseException) -> None:
            failures.append(f"{self.to}: {exc}")

    app.enqueue(EmailJob(to="a@b.c"))
    app.enqueue("email_job", {"to": "x@y.z"})
    await drain(app, queues=["q"])
    assert sorted(failures) == ["a@b.c: cannot reach a@b.c", "x@y.z: cannot reach x@y.z"]


async def test_outcomes_snooze_cancel_fail(app: pgqueue.App,
                                           conn: psycopg.Connection[Any]) -> None:
    seen: dict[str, list[int]] = {"snooze": [], "cancel": [], "fail": []}

    @app.task(name="snoozer", queue="q", max_attempts=1)
    def snoozer() -> Any:
        job = pgqueue.current_job()
        seen["snooze"].append(job.attempt)
        if len(seen["snooze"]) == 1:
            return pgqueue.Snooze(0.05)  # not a failed attempt, even with max_attempts=1
        return "done"

    @app.task(name="canceller", queue="q")
    def canceller() -> None:
        seen["cancel"].append(1)
        raise pgqueue.Cancel("customer left")

    @app.task(name="failer", queue="q", max_attempts=5)
    def failer() -> None:
        seen["fail"].append(1)
        raise pgqueue.Fail("bad input, do not retry")

    s, c, f = app.enqueue("snoozer"), app.enqueue("canceller"), app.enqueue("failer")
    await drain(app, queues=["q"])
    assert seen == {"snooze": [1, 1], "cancel": [1], "fail": [1]}
    states = dict(conn.execute("SELECT id, state FROM pgqueue.job_history").fetchall())
    assert states == {s: "succeeded", c: "cancelled"}
    assert app.get_failed(f).reason == "bad input, do not retry"


async def test_completion_in_handler_transaction_rollback_retries(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS shipments (job_id bigint, n int)")
    conn.execute("TRUNCATE shipments")

    @app.task(name="ship", queue="q", max_attempts=3, retry=fast_retry())
    async def ship(n: int) -> None:
        job = pgqueue.current_job()
        async with await psycopg.AsyncConnection.connect(clean) as tx:
            await tx.execute("INSERT INTO shipments VALUES (%s, %s)", (job.id, n))
            await app.complete_async(tx)
            if job.attempt == 1:
                raise RuntimeError("crash after completing, before commit")  # rolls back both

    job_id = app.enqueue("ship", {"n": 5})
    w = await drain(app, queues=["q"])
    assert scalar(conn, "SELECT count(*) FROM shipments") == 1  # effects once
    assert scalar(conn, "SELECT attempt FROM pgqueue.job_history WHERE id = %s", job_id) == 2
    assert w.counts == {"retried": 1, "succeeded": 1}


async def test_completion_refused_when_the_lease_was_lost(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS shipments (job_id bigint, n int)")
    conn.execute("TRUNCATE shipments")
    refused: list[str] = []

    @app.task(name="ship_late", queue="q", retry=fast_retry())
    async def ship_late() -> None:
        job = pgqueue.current_job()
        async with await psycopg.AsyncConnection.connect(clean) as tx:
            await tx.execute("INSERT INTO shipments VALUES (%s, 1)", (job.id,))
            if job.attempt == 1:  # meanwhile the job was rescued (as after a long freeze)
                async with await psycopg.AsyncConnection.connect(clean, autocommit=True) as o:
                    await o.execute("UPDATE pgqueue.jobs SET state = 'waiting', worker_id = NULL"
                                    " WHERE id = %s", (job.id,))
            try:
                await app.complete_async(tx)
            except pgqueue.JobError as exc:
                refused.append(str(exc))
                raise  # the transaction rolls back: no shipment for the lost attempt

    job_id = app.enqueue("ship_late")
    await drain(app, queues=["q"])
    assert len(refused) == 1 and "no longer held by this worker" in refused[0]
    assert scalar(conn, "SELECT count(*) FROM shipments") == 1
    assert scalar(conn, "SELECT state FROM pgqueue.job_history WHERE id = %s", job_id) == \
        "succeeded"


def test_completion_in_transaction_sync(app: pgqueue.App, clean: str,
                                        conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS shipments (job_id bigint, n int)")
    conn.execute("TRUNCATE shipments")

    @app.task(name="ship_sync", queue="q")
    def ship_sync() -> None:
        with psycopg.connect(clean) as tx:
            tx.execute("INSERT INTO shipments VALUES (%s, 1)", (pgqueue.current_job().id,))
            app.complete(tx)

    job_id = app.enqueue("ship_sync")
    run_async(app, drain(app, queues=["q"]))
    assert scalar(conn, "SELECT count(*) FROM shipments") == 1
    assert scalar(conn, "SELECT state FROM pgqueue.job_history WHERE id = %s", job_id) == \
        "succeeded"
    with pytest.raises(pgqueue.JobError, match="no job is running"):
        app.complete(conn)


async def test_unknown_task_archived_worker_keeps_going(app: pgqueue.App) -> None:
    ran: list[int] = []

    @app.task(name="known", queue="q")
    def known() -> None:
        ran.append(1)

    app.strict = False  # a job of a task this app does not know (another service's, say)
    ghost = app.enqueue("ghost.task", {}, queue="q")
    app.enqueue("known", priority=50)
    await drain(app, queues=["q"], unknown_task_grace=0)  # no grace: archived at once
    assert ran == [1]
    failed = app.get_failed(ghost)
    assert "unknown task 'ghost.task'" in failed.reason
    assert failed.attempt == 1


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("has a lock")
        self.lock = threading.Lock()

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle")


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() exploded")


async def test_non_json_result_and_odd_exceptions_do_not_crash(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="weird_result", queue="q")
    def weird_result() -> Any:
        return {"when": object()}

    @app.task(name="unpicklable", queue="q", max_attempts=1)
    def unpicklable() -> None:
        raise Unpicklable()

    @app.task(name="badstr", queue="q", max_attempts=1)
    async def badstr() -> None:
        raise BadStr()

    ok = app.enqueue("weird_result")
    u, b = app.enqueue("unpicklable"), app.enqueue("badstr")
    await drain(app, queues=["q"])
    assert scalar(conn, "SELECT result FROM pgqueue.job_history WHERE id = %s", ok) is None
    assert "Unpicklable: has a lock" in app.get_failed(u).reason
    assert "unprintable" in app.get_failed(b).reason


async def test_blocking_sync_handler_does_not_delay_async_start(app: pgqueue.App) -> None:
    """A sync handler blocks its thread, not the event loop: the async job starts (and frees
    the blocked one) while the sync one is still blocking."""
    quick_ran = threading.Event()
    released: list[bool] = []

    @app.task(name="blocker", queue="q", priority=1)
    def blocker() -> None:
        released.append(quick_ran.wait(30))  # blocks until the async job has run

    @app.task(name="quick", queue="q", priority=2)
    async def quick() -> None:
        quick_ran.set()

    app.enqueue("blocker")
    app.enqueue("quick")
    await drain(app, queues=["q"], concurrency=2)
    assert released == [True]


async def test_async_timeout_cancels_and_reports(app: pgqueue.App) -> None:
    @app.task(name="sleepy", queue="q", max_attempts=1, timeout=0.1)
    async def sleepy() -> None:
        await asyncio.sleep(30)

    job_id = app.enqueue("sleepy")
    await drain(app, queues=["q"])
    assert app.get_failed(job_id).reason == "timed out after 0.1 s"


async def test_sync_timeout_fails_attempt_and_frees_slot(app: pgqueue.App) -> None:
    release = threading.Event()
    ran: list[int] = []

    @app.task(name="stuck", queue="q", max_attempts=1)
    def stuck() -> None:
        pgqueue.current_context().cancelled.wait(30)  # cooperative: stops when told
        release.set()

    @app.task(name="after", queue="q", priority=100)
    def after() -> None:
        ran.append(1)

    job_id = app.enqueue("stuck", timeout=0.1)
    app.enqueue("after")
    await drain(app, queues=["q"], concurrency=1)
    assert app.get_failed(job_id).reason == "timed out after 0.1 s"
    assert ran == [1]  # the slot was freed
    assert release.wait(5)


async def test_cancel_waiting_and_running(app: pgqueue.App,
                                          conn: psycopg.Connection[Any]) -> None:
    started = asyncio.Event()

    @app.task(name="long", queue="q")
    async def long() -> None:
        started.set()
        await asyncio.sleep(30)

    waiting = app.enqueue("long", delay=3600)
    assert app.cancel(waiting) is True
    assert scalar(conn, "SELECT state FROM pgqueue.job_history WHERE id = %s", waiting) == \
        "cancelled"
    running = app.enqueue("long")
    w = app.worker(queues=["q"], poll_interval=0.1)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(started.wait(), 10)
    assert await app.cancel_async(running) is True

    def cancelled() -> Any:
        return scalar(conn, "SELECT state FROM pgqueue.job_history WHERE id = %s", running)

    await eventually(cancelled, 10, "running job cancelled")
    assert cancelled() == "cancelled"
    w.stop()
    await task
    assert app.cancel(999_999_999) is False


async def test_cancel_running_sync_job_sets_its_flag(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    started = threading.Event()
    saw_flag = threading.Event()

    @app.task(name="cooperative", queue="q")
    def cooperative() -> None:
        started.set()
        if pgqueue.current_context().cancelled.wait(30):  # the documented way to stop early
            saw_flag.set()

    job = app.enqueue("cooperative")
    w = app.worker(queues=["q"], poll_interval=0.1)
    task = asyncio.create_task(w.run())
    await asyncio.to_thread(started.wait, 10)
    assert app.cancel(job) is True
    await asyncio.to_thread(saw_flag.wait, 10)
    await eventually(lambda: scalar(
        conn, "SELECT state FROM pgqueue.job_history WHERE id = %s", job), 10, "cancelled row")
    assert scalar(conn, "SELECT state FROM pgqueue.job_history WHERE id = %s", job) == \
        "cancelled"
    w.stop()
    await task


async def test_graceful_stop_releases_unfinished_jobs_without_counting(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    started = asyncio.Event()

    @app.task(name="forever", queue="q", max_attempts=1)
    async def forever() -> None:
        started.set()
        await asyncio.sleep(60)

    job_id = app.enqueue("forever")
    w = app.worker(queues=["q"], shutdown_timeout=0.2)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(started.wait(), 10)
    w.stop()
    await task
    row = conn.execute("SELECT state, attempt, worker_id FROM pgqueue.jobs WHERE id = %s",
                       (job_id,)).fetchone()
    assert row == ("waiting", 0, None)  # back, and the attempt was not counted


def test_queue_control(app: pgqueue.App) -> None:
    ids = app.enqueue_many("t", [{"i": i} for i in range(5)], queue="c")
    app.enqueue("t", {}, queue="c", delay=3600)
    assert app.count("c") == 6
    assert app.sizes("c") == {"waiting": 5, "scheduled": 1, "running": 0, "failed": 0}
    stats = {s.queue: s for s in app.stats()}
    assert (stats["c"].waiting, stats["c"].scheduled) == (5, 1)
    popped = app.pop("c")
    assert popped is not None and popped.id == ids[0] and popped.args == {"i": 0}
    assert app.count("c") == 5
    assert app.clear("c") == 5
    assert app.count("c") == 0 and app.pop("c") is None
    with pytest.raises(pgqueue.JobNotFoundError):
        app.retry_failed(123456789)
    with pytest.raises(pgqueue.ValidationError):
        app.count("bad queue!")


async def test_purge_and_retry_all(app: pgqueue.App) -> None:
    @app.task(name="nope", queue="q", max_attempts=1)
    def nope() -> None:
        raise ValueError("no")

    app.enqueue_many("nope", [{}, {}, {}])
    await drain(app, queues=["q"])
    assert len(app.failed()) == 3
    assert len(app.retry_all_failed()) == 3
    await drain(app, queues=["q"])
    assert app.purge_failed() == 3
    assert app.failed() == []


async def test_many_concurrent_jobs_run_once(app: pgqueue.App) -> None:
    seen: list[int] = []

    @app.task(name="c", queue="q")
    async def c(i: int) -> None:
        seen.append(i)

    app.enqueue_many("c", [{"i": i} for i in range(2000)])
    await asyncio.gather(drain(app, queues=["q"], concurrency=50),
                         drain(app, queues=["q"], concurrency=20))
    assert sorted(seen) == list(range(2000))


async def test_notification_wakes_idle_worker_promptly(app: pgqueue.App) -> None:
    got = asyncio.Event()

    @app.task(name="ping", queue="q")
    def ping() -> None:
        pass

    w = app.worker(queues=["q"], poll_interval=30,  # polling would take 30 s
                   on_event=lambda e, j: got.set() if e == "succeeded" else None)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(asyncio.to_thread(w.started.wait, 10), 15)
    app.enqueue("ping")
    await asyncio.wait_for(got.wait(), 10)
    w.stop()
    await task


def test_event_loop_choice_is_checked_when_the_worker_is_made(app: pgqueue.App,
                                                              monkeypatch: Any) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match=r"event_loop.*one of asyncio, uvloop"):
        app.worker(event_loop="trio")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    with pytest.raises(pgqueue.ConfigurationError, match=r"pip install 'pgqueue-tx\[uvloop\]'"):
        app.worker(event_loop="uvloop")
    assert app.worker(event_loop="auto")._loop_factory is None  # asyncio's own loop


@pytest.mark.parametrize("choice", ["uvloop", "auto"])
def test_worker_runs_its_jobs_on_uvloop_when_asked(app: pgqueue.App, choice: str) -> None:
    uvloop = pytest.importorskip("uvloop")
    loops: list[type] = []

    @app.task(name="which_loop")
    async def which_loop() -> None:
        loops.append(type(asyncio.get_running_loop()))

    app.enqueue("which_loop")
    worker = app.worker(concurrency=2, burst=True, event_loop=choice)
    worker.start_in_thread()
    assert worker.join(30) and worker.error is None
    assert loops == [uvloop.Loop]
    assert worker.counts == {"succeeded": 1}


async def test_on_event_set_on_a_running_worker_gets_started_events_too(
        app: pgqueue.App) -> None:
    """Without an ``on_event`` the executor skips the ``started`` events; one set while the
    worker runs receives them from then on."""
    seen: list[tuple[str, int]] = []

    @app.task(name="ev")
    async def ev(i: int) -> None:
        return None

    w = app.worker(concurrency=1, poll_interval=0.1)
    task = asyncio.create_task(w.run())
    await eventually(lambda: w.started.is_set(), 10, "worker started")
    app.enqueue("ev", {"i": 1})
    await eventually(lambda: w.counts.get("succeeded") == 1, 10, "job 1 done")
    w.on_event = lambda e, j: seen.append((e, j.args["i"]))
    app.enqueue("ev", {"i": 2})
    await eventually(lambda: ("succeeded", 2) in seen, 10, "job 2 done")
    w.stop()
    await task
    assert seen == [("started", 2), ("succeeded", 2)]
    assert w.counts == {"succeeded": 2}
