"""The Velocity-style API (pgqueue.compat.velocity), sync and async, on postgres and memory."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pgqueue
from pgqueue.compat import load_settings, velocity
from pgqueue.retry import RetryPolicy
from tests.helpers import eventually, wait_for

FAST = RetryPolicy(base=0.02, factor=2.0, jitter=0.0)

sent: list[str] = []
failures: list[tuple[str, str]] = []


@dataclass
class EmailJob:
    to: str
    subject: str = "Welcome"
    body: str = "hi"
    fail: bool = False

    def handle(self) -> None:
        if self.fail:
            raise RuntimeError(f"smtp refused {self.to}")
        sent.append(self.to)

    def failed(self, err: BaseException) -> None:
        failures.append((self.to, repr(err)))


class PlainJob:
    """A plain class: its public attributes are its data."""

    def __init__(self, name: str, *, n: int = 0) -> None:
        self.name = name
        self.n = n
        self._cache = object()

    def handle(self) -> None:
        sent.append(f"{self.name}:{self.n}")


def deserialize_email_job(data: dict[str, Any]) -> EmailJob:
    return EmailJob(**data)


@pytest.fixture(params=["postgres", "memory"])
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[velocity.Queue]:
    env = {"QUEUE_DRIVER": "database" if request.param == "postgres" else "memory",
           "PGQUEUE_POLL_INTERVAL": "0.2"}
    if request.param == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("clean")
    q = velocity.new_queue(load_settings(environ=env))
    velocity.set_default(q)
    yield q
    velocity.reset()
    await q.app.aclose()


@pytest.fixture(autouse=True)
async def fresh_state() -> AsyncIterator[None]:
    velocity.reset()
    sent.clear()
    failures.clear()
    yield
    velocity.reset()


def test_the_seed_memory_queue_test() -> None:
    q = velocity.new_memory_queue()
    velocity.set_default(q)
    job = EmailJob(to="test@example.com", subject="Test", body="Test email")
    assert velocity.push(job) > 0
    assert velocity.size("default") == 1
    popped = velocity.pop("default")
    assert popped == job and popped is not job
    popped.handle()
    assert sent == ["test@example.com"]
    assert velocity.pop("default") is None
    assert q.app.driver.name == "memory"


def test_push_names_and_storage(queue: velocity.Queue) -> None:
    velocity.register("*jobs.EmailJob", deserialize_email_job)  # class from the annotation
    job_id = velocity.push(EmailJob("a@b.c"), "emails")
    plain_id = velocity.push(PlainJob("p", n=2))  # unregistered: its class name
    stored = queue.app.get_job(job_id)
    assert stored is not None
    assert (stored.queue, stored.task) == ("emails", "velocity:jobs.EmailJob")
    assert stored.meta == {"velocity_type": "*jobs.EmailJob"}
    assert stored.args == {"to": "a@b.c", "subject": "Welcome", "body": "hi", "fail": False}
    assert stored.max_attempts == 5
    plain = queue.app.get_job(plain_id)
    assert plain is not None and plain.queue == "default"
    assert (plain.task, plain.args) == ("velocity:PlainJob", {"name": "p", "n": 2})
    assert velocity.size() == 1 and velocity.size("emails") == 1
    popped = velocity.pop()
    assert isinstance(popped, PlainJob) and (popped.name, popped.n) == ("p", 2)
    assert velocity.pop("emails") == EmailJob("a@b.c")


def test_register_with_explicit_class_and_bad_input(queue: velocity.Queue) -> None:
    velocity.register("mail", lambda data: EmailJob(**data), cls=EmailJob)
    job_id = velocity.push(EmailJob("x@y.z"))
    stored = queue.app.get_job(job_id)
    assert stored is not None and stored.task == "velocity:mail"
    with pytest.raises(pgqueue.ValidationError, match="handle"):
        velocity.push({"to": "x"})
    with pytest.raises(pgqueue.ValidationError, match="callable"):
        velocity.register("x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(pgqueue.ValidationError, match="non-empty"):
        velocity.register("", EmailJob)
    with pytest.raises(pgqueue.ValidationError, match="seconds"):
        velocity.later(-1, EmailJob("x"))


def test_pop_of_an_unregistered_type(queue: velocity.Queue) -> None:
    queue.app.enqueue("velocity:Ghost", {"x": 1}, queue="default",
                      meta={"velocity_type": "Ghost"})
    with pytest.raises(pgqueue.UnknownTaskError, match="register"):
        velocity.pop()


def test_later_delays_in_seconds_or_timedelta(queue: velocity.Queue) -> None:
    now_id = velocity.push(EmailJob("now"), "scheduled")
    a = velocity.later(5, EmailJob("a"), "scheduled")
    b = velocity.later(dt.timedelta(minutes=10), EmailJob("b"), "scheduled")
    def delay_of(job_id: int) -> float:
        job = queue.app.get_job(job_id)
        assert job is not None and job.run_at is not None and job.created_at is not None
        return (job.run_at - job.created_at).total_seconds()

    assert abs(delay_of(now_id)) < 0.01
    assert abs(delay_of(a) - 5) < 0.01 and abs(delay_of(b) - 600) < 0.01
    assert velocity.size("scheduled") == 3
    assert velocity.pop("scheduled") == EmailJob("now")  # delayed jobs are not ready
    assert velocity.pop("scheduled") is None
    assert velocity.clear("scheduled") == 2
    assert velocity.size("scheduled") == 0


def test_work_processes_and_stop_is_graceful(queue: velocity.Queue) -> None:
    velocity.register("*jobs.EmailJob", deserialize_email_job)
    handled: list[str] = []

    def process_job(job: Any) -> None:
        handled.append(type(job).__name__)
        job.handle()

    for i in range(6):
        velocity.push(EmailJob(f"user{i}@example.com"), "emails")
    velocity.later(0.05, EmailJob("late@example.com"), "emails")
    worker = velocity.work("emails", process_job, concurrency=3,
                           interval=dt.timedelta(milliseconds=100))
    assert worker.worker.concurrency == 3 and worker.worker.poll_interval == 0.1
    wait_for(lambda: len(sent) == 7, what="seven emails")
    wait_for(lambda: velocity.size("emails") == 0, what="the queue to empty")
    assert set(handled) == {"EmailJob"}
    worker.stop()
    velocity.push(EmailJob("after-stop"), "emails")
    assert velocity.size("emails") == 1  # nobody consumes it any more
    assert worker.worker.stopped.is_set()


def test_jobs_of_a_type_registered_after_work_started(queue: velocity.Queue) -> None:
    worker = velocity.work("q", lambda job: job.handle())
    velocity.register("late.Type", PlainJob)
    velocity.push(PlainJob("late", n=1), "q")
    wait_for(lambda: sent == ["late:1"], what="the late-registered type")
    worker.stop()


def test_max_retries_then_failed_is_called(queue: velocity.Queue) -> None:
    attempts: list[int] = []

    def handler(job: Any) -> None:
        attempts.append(1)
        job.handle()

    velocity.push(EmailJob("bad@example.com", fail=True), "emails")
    worker = velocity.work("emails", handler, max_retries=2, retry=FAST)
    wait_for(lambda: failures, what="failed(err)")
    assert failures == [("bad@example.com", "RuntimeError('smtp refused bad@example.com')")]
    assert len(attempts) == 3  # the first run + 2 retries
    archived = queue.app.failed("emails")
    assert len(archived) == 1 and archived[0].attempt == 3
    assert "max_retries=2" in archived[0].reason
    worker.stop()


def test_handler_may_return_an_error_like_go(queue: velocity.Queue) -> None:
    def handler(job: Any) -> Exception | None:
        return ValueError("returned, not raised")

    velocity.push(EmailJob("ret@example.com"))
    worker = velocity.work("default", handler, max_retries=0)
    wait_for(lambda: failures, what="failed(err)")
    assert failures == [("ret@example.com", "ValueError('returned, not raised')")]
    worker.stop()


def test_job_attempts_bounded_by_max_attempts_setting(queue: velocity.Queue) -> None:
    cfg = load_settings(environ={}, driver=queue.settings.driver,
                        database_url=queue.settings.database_url, max_attempts=2,
                        poll_interval=0.2)
    q = velocity.Queue(queue.app, cfg)
    q.push(EmailJob("twice@example.com", fail=True))
    worker = q.work("default", lambda job: job.handle(), retry=FAST)
    wait_for(lambda: failures, what="failed(err)")
    assert queue.app.failed("default")[0].attempt == 2   # no max_retries: the job's cap
    worker.stop()


def test_max_retries_above_max_attempts_raises_the_cap(queue: velocity.Queue) -> None:
    cfg = load_settings(environ={}, driver=queue.settings.driver,
                        database_url=queue.settings.database_url, max_attempts=2,
                        poll_interval=0.2)
    q = velocity.Queue(queue.app, cfg)
    job_id = q.push(EmailJob("four@example.com", fail=True))
    stored = queue.app.get_job(job_id)
    assert stored is not None and stored.max_attempts == 2
    caps: list[tuple[int, int]] = []

    def handler(job: Any) -> None:
        current = pgqueue.current_job()
        caps.append((current.attempt, current.max_attempts))
        job.handle()

    worker = q.work("default", handler, max_retries=3, retry=FAST)
    wait_for(lambda: failures, what="failed(err)")
    worker.stop()
    [archived] = queue.app.failed("default")
    assert archived.attempt == 4 and archived.max_attempts == 4   # 1 run + 3 retries
    assert caps == [(1, 2), (2, 4), (3, 4), (4, 4)]   # the cap is raised, visibly
    assert failures == [("four@example.com", "RuntimeError('smtp refused four@example.com')")]


def test_push_and_later_in_your_transaction(queue: velocity.Queue) -> None:
    if queue.app.driver.name != "postgres":
        with pytest.raises(pgqueue.CapabilityError):
            velocity.push(EmailJob("x"), conn=object())  # type: ignore[arg-type]
        return
    import psycopg

    assert queue.settings.database_url is not None
    with psycopg.connect(queue.settings.database_url) as conn:
        conn.execute("CREATE TEMP TABLE users (email text)")
        with conn.transaction(force_rollback=True):
            velocity.push(EmailJob("rolled@back"), "tx", conn=conn)
            velocity.later(0, EmailJob("rolled@later"), "tx", conn=conn)
            assert velocity.size("tx") == 0           # not visible before the commit
        with conn.transaction():
            conn.execute("INSERT INTO users VALUES ('kept@commit')")
            velocity.push(EmailJob("kept@commit"), "tx", conn=conn)
            velocity.later(dt.timedelta(0), EmailJob("kept@later"), "tx", conn=conn)
    assert velocity.size("tx") == 2                   # only the committed pushes
    worker = velocity.work("tx", lambda job: job.handle())
    wait_for(lambda: sorted(sent) == ["kept@commit", "kept@later"], what="committed jobs")
    worker.stop()


async def test_push_async_in_your_transaction(queue: velocity.Queue) -> None:
    if queue.app.driver.name != "postgres":
        return
    import psycopg

    assert queue.settings.database_url is not None
    async with await psycopg.AsyncConnection.connect(queue.settings.database_url) as conn:
        async with conn.transaction(force_rollback=True):
            await velocity.push_async(EmailJob("a@rolled"), "atx", conn=conn)
            await velocity.later_async(1, EmailJob("a@rolled"), "atx", conn=conn)
        async with conn.transaction():
            await velocity.push_async(EmailJob("a@kept"), "atx", conn=conn)
    assert await velocity.size_async("atx") == 1


def test_jobs_enqueued_through_app_enqueue_are_rebuilt(queue: velocity.Queue) -> None:
    velocity.register("jobs.EmailJob", deserialize_email_job)
    velocity.register("*jobs.Other", lambda data: EmailJob(**data), cls=PlainJob)
    worker = velocity.work("emails", lambda job: job.handle())
    # by the registered name itself, by its task name, and a name a task cannot have
    queue.app.enqueue("jobs.EmailJob", {"to": "by-name"}, queue="emails")
    queue.app.enqueue("velocity:jobs.EmailJob", {"to": "by-task-name"}, queue="emails")
    queue.app.enqueue("velocity:jobs.Other", {"to": "by-go-name"}, queue="emails")
    wait_for(lambda: len(sent) == 3, what="three jobs")
    worker.stop()
    assert sorted(sent) == ["by-go-name", "by-name", "by-task-name"]
    assert failures == [] and queue.app.failed("emails") == []


def test_untyped_factory_is_used(queue: velocity.Queue) -> None:
    # no return annotation: the name ends in the class name
    velocity.register("*jobs.EmailJob", lambda data: EmailJob(**data))
    job_id = velocity.push(EmailJob("untyped"), "emails")
    stored = queue.app.get_job(job_id)
    assert stored is not None and stored.task == "velocity:jobs.EmailJob"
    assert stored.meta == {"velocity_type": "*jobs.EmailJob"}
    # a name that says nothing about the class: the factory that rebuilds the data wins
    velocity.register("welcome", lambda data: PlainJob(data["name"], n=data["n"]))
    plain_id = velocity.push(PlainJob("w", n=1), "emails")
    plain = queue.app.get_job(plain_id)
    assert plain is not None and plain.task == "velocity:welcome"

    # "another process": only the registrations, nothing learnt from pushes
    velocity.reset()
    velocity.set_default(queue)
    velocity.register("*jobs.EmailJob", lambda data: EmailJob(**data))
    velocity.register("welcome", lambda data: PlainJob(data["name"], n=data["n"]))
    worker = velocity.work("emails", lambda job: job.handle())
    wait_for(lambda: sorted(sent) == ["untyped", "w:1"], what="both jobs")
    worker.stop()
    assert queue.app.failed("emails") == []


def test_concurrency_runs_jobs_at_once(queue: velocity.Queue) -> None:
    barrier = threading.Barrier(3, timeout=20)

    def handler(job: Any) -> None:
        barrier.wait()  # passes only when three jobs run at the same time
        job.handle()

    for i in range(3):
        velocity.push(PlainJob("c", n=i), "conc")
    worker = velocity.work("conc", handler, concurrency=3)
    wait_for(lambda: len(sent) == 3, what="three concurrent jobs")
    worker.stop()


def test_default_queue_from_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     clean: str) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("QUEUE_DRIVER", "VELA_QUEUE_DRIVER", "PGQUEUE_QUEUE_DRIVER", "DATABASE_URL",
                "PGQUEUE_DATABASE_URL", "QUEUE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / ".env").write_text("QUEUE_DRIVER=memory  # Options: memory, redis, database\n")
    assert velocity.default_queue().app.driver.name == "memory"
    velocity.reset()
    (tmp_path / ".env").write_text(f"QUEUE_DRIVER=database\nDATABASE_URL='{clean}'\n"
                                   "QUEUE_TABLE=jobs\nQUEUE_FAILED_TABLE=failed_jobs\n")
    q = velocity.default_queue()
    assert q is velocity.default_queue()
    assert q.app.driver.name == "postgres"
    velocity.push(EmailJob("env@example.com"))
    assert velocity.size() == 1


def test_work_runs_on_the_event_loop_setting() -> None:
    q = velocity.new_queue(load_settings(environ={"QUEUE_DRIVER": "memory",
                                                  "PGQUEUE_EVENT_LOOP": "auto"}))
    try:
        w = q.work("loops", lambda job: None)
        try:
            assert w.worker.event_loop == "auto"
        finally:
            w.stop()
    finally:
        q.app.close()


def test_set_default_checks_its_argument() -> None:
    with pytest.raises(pgqueue.ValidationError, match="velocity Queue"):
        velocity.set_default("memory")  # type: ignore[arg-type]


def test_work_argument_errors(queue: velocity.Queue) -> None:
    with pytest.raises(pgqueue.ValidationError, match="max_retries"):
        velocity.work("q", lambda job: None, max_retries=-1)
    with pytest.raises(pgqueue.ValidationError, match="callable"):
        velocity.work("q", None)  # type: ignore[arg-type]
    with pytest.raises(pgqueue.ValidationError, match="concurrency"):
        velocity.work("q", lambda job: None, concurrency=0)
    with pytest.raises(pgqueue.ValidationError, match="queue name"):
        velocity.push(EmailJob("x"), "bad queue")


# ---- async ------------------------------------------------------------------------------------
async def test_async_paths(queue: velocity.Queue) -> None:
    import asyncio

    velocity.register("*jobs.EmailJob", deserialize_email_job)
    done: list[str] = []

    async def handler(job: Any) -> None:
        await asyncio.sleep(0)
        if job.fail:
            raise RuntimeError("async failure")
        done.append(job.to)

    await velocity.push_async(EmailJob("a1"), "async")
    await velocity.later_async(dt.timedelta(milliseconds=50), EmailJob("a2"), "async")
    await velocity.push_async(EmailJob("a3", fail=True), "async")
    assert await velocity.size_async("async") == 3
    await velocity.push_async(EmailJob("p1"), "pop")
    assert await velocity.pop_async("pop") == EmailJob("p1")
    assert await velocity.pop_async("pop") is None
    await velocity.push_async(EmailJob("c1"), "clear")
    assert await velocity.clear_async("clear") == 1

    worker = await velocity.work_async("async", handler, concurrency=2, max_retries=1,
                                       retry=FAST)

    async def all_handled() -> bool:
        return (sorted(done) == ["a1", "a2"] and bool(failures)
                and await velocity.size_async("async") == 0)

    await eventually(all_handled, what="two jobs done and one failed")
    assert failures == [("a3", "RuntimeError('async failure')")]
    await worker.stop_async()
    assert worker.worker.stopped.is_set()


def test_on_redis(redis_app: pgqueue.App) -> None:
    """push / work / failed(err) / pop on the redis driver (skipped when no Redis answers)."""
    app = redis_app
    q = velocity.Queue(app)
    q.push(EmailJob("r1"), "emails")
    q.push(EmailJob("r2", fail=True), "emails")
    q.later(30, EmailJob("r3"), "emails")
    assert q.size("emails") == 3
    worker = q.work("emails", lambda job: job.handle(), max_retries=0)
    wait_for(lambda: sent == ["r1"] and failures, what="jobs on redis")
    worker.stop()
    assert failures == [("r2", "RuntimeError('smtp refused r2')")]
    assert q.size("emails") == 1 and q.pop("emails") is None
    q.push(EmailJob("r4"), "other")
    assert q.pop("other") == EmailJob("r4")
