"""The Backstage-style API (pgqueue.compat.backstage), sync and async, on postgres and memory."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

import pgqueue
from pgqueue import Job
from pgqueue.compat import backstage, load_settings
from pgqueue.config import Settings
from pgqueue.retry import RetryPolicy
from tests.helpers import eventually, wait_for

FAST = RetryPolicy(base=0.02, factor=2.0, jitter=0.0)


@pytest.fixture(params=["postgres", "memory"])
def settings(request: pytest.FixtureRequest) -> Settings:
    env = {"QUEUE_DRIVER": request.param, "PGQUEUE_POLL_INTERVAL": "0.2"}
    if request.param == "postgres":
        env["QUEUE_CONFIG"] = request.getfixturevalue("clean")
    return load_settings(environ=env)


@pytest.fixture(autouse=True)
async def forget_queues() -> AsyncIterator[None]:
    backstage.reset()
    yield
    await backstage.reset_async()


def test_get_queue_returns_the_same_instance(settings: Settings) -> None:
    def dlq(job: Job, err: BaseException) -> None: ...

    q = backstage.get_queue("same", settings=settings, dlq_handler=dlq, max_attempts=2)
    again = backstage.get_queue("same", store="memory", dlq_handler=None, max_attempts=9)
    assert again is q
    assert (q.store, q.dlq_handler, q.max_attempts) == (settings.driver, dlq, 2)
    assert backstage.get_queue("other", settings=settings) is not q
    assert set(backstage.queues()) == {"same", "other"}


def test_process_runs_on_the_event_loop_setting() -> None:
    settings = load_settings(environ={"QUEUE_DRIVER": "memory", "PGQUEUE_EVENT_LOOP": "auto"})
    q = backstage.get_queue("loops", settings=settings)
    q.process(lambda j: None)
    assert q.worker is not None and q.worker.event_loop == "auto"


def test_nothing_runs_until_a_handler_is_attached(settings: Settings) -> None:
    q = backstage.get_queue("idle", settings=settings)
    job_id = q.add({"task": "send_email", "recipient": "user@example.com"})
    assert not q.processing and q.worker is None
    assert q.get_job_count() == 1
    job = q.app.get_job(job_id)
    assert job is not None and job.state == "waiting" and job.attempt == 0
    seen: list[tuple[int, dict[str, Any], int]] = []
    q.process(lambda j: seen.append((j.id, j.payload, j.attempt)))
    assert q.processing
    wait_for(lambda: seen, what="the job to run")
    assert seen == [(job_id, {"task": "send_email", "recipient": "user@example.com"}, 1)]
    wait_for(lambda: q.get_job_count() == 0, what="the count to drop")


def test_add_options_priority_delay_in_ms_and_defaults(settings: Settings) -> None:
    q = backstage.get_queue("opts", settings=settings)
    normal = q.app.get_job(q.add({"task": "normal"}))
    later = q.app.get_job(q.add({"task": "later"}, delay=2000, priority=50))
    assert normal is not None and later is not None
    assert normal.priority == 20 and later.priority == 50
    assert normal.max_attempts == 5 and normal.task == "backstage:opts"
    assert later.run_at is not None and later.created_at is not None
    gap = (later.run_at - later.created_at).total_seconds()
    assert 1.99 < gap < 2.01, gap  # 2000 ms, not 2000 s
    assert q.get_job_count() == 2  # delayed jobs count as waiting
    with pytest.raises(pgqueue.ValidationError, match="milliseconds"):
        q.add({}, delay=-1)
    with pytest.raises(pgqueue.ValidationError, match="priority"):
        q.add({}, priority=5000)
    with pytest.raises(pgqueue.ValidationError, match="JSON object"):
        q.add(["not", "an", "object"])


def test_lower_priority_number_runs_first(settings: Settings) -> None:
    q = backstage.get_queue("prio", settings=settings)
    q.add({"task": "background_job"}, priority=100)
    q.add({"task": "normal_job"})
    q.add({"task": "critical_job"}, priority=1)
    q.add({"task": "second_normal_job"})
    order: list[str] = []
    q.process(lambda j: order.append(j.payload["task"]), concurrency=1)
    wait_for(lambda: len(order) == 4, what="four jobs")
    assert order == ["critical_job", "normal_job", "second_normal_job", "background_job"]


def test_retries_then_dead_letter_handler(settings: Settings) -> None:
    dead: list[tuple[int, int, str]] = []
    attempts: list[int] = []
    q = backstage.get_queue("retry", settings=settings, max_attempts=3, retry=FAST,
                            dlq_handler=lambda j, e: dead.append((j.id, j.attempt, str(e))))

    def handler(job: Job) -> None:
        attempts.append(job.attempt)
        raise RuntimeError("risky operation failed")

    job_id = q.add({"task": "risky"})
    q.process(handler)
    wait_for(lambda: dead, what="the DLQ handler")
    assert attempts == [1, 2, 3]
    assert dead == [(job_id, 3, "risky operation failed")]
    failed = q.app.failed("retry")
    assert [f.id for f in failed] == [job_id]
    assert failed[0].payload == {"task": "risky"}
    wait_for(lambda: q.get_job_count() == 0, what="the queue to empty")


def test_a_retry_can_succeed(settings: Settings) -> None:
    done: list[int] = []
    q = backstage.get_queue("flaky", settings=settings, retry=FAST)

    def handler(job: Job) -> None:
        if job.attempt < 3:
            raise RuntimeError("not yet")
        done.append(job.attempt)

    q.add({"n": 1})
    q.process(handler)
    wait_for(lambda: done, what="the third attempt")
    assert done == [3]
    assert q.app.failed("flaky") == []


def test_max_attempts_and_concurrency_from_settings(settings: Settings) -> None:
    cfg = load_settings(environ={}, driver=settings.driver, database_url=settings.database_url,
                        max_attempts=2, concurrency=3, poll_interval=0.2)
    q = backstage.get_queue("cfg", settings=cfg)
    job = q.app.get_job(q.add({}))
    assert job is not None and job.max_attempts == 2
    q.process(lambda j: None)
    assert q.worker is not None and q.worker.concurrency == 3
    q.disconnect()
    q.process(lambda j: None, concurrency=2)
    assert q.worker is not None and q.worker.concurrency == 2


def test_job_count_is_waiting_plus_running(settings: Settings) -> None:
    q = backstage.get_queue("count", settings=settings)
    release = threading.Event()
    running: list[int] = []

    def handler(job: Job) -> None:
        running.append(job.id)
        release.wait(10)

    for n in range(3):
        q.add({"n": n})
    q.process(handler, concurrency=1)
    wait_for(lambda: running, what="one running job")
    assert q.get_job_count() == 3
    assert q.app.sizes("count")["running"] == 1
    release.set()
    wait_for(lambda: q.get_job_count() == 0, what="all jobs done")


async def test_pause_and_resume(settings: Settings) -> None:
    q = backstage.get_queue("pause", settings=settings)
    seen: list[int] = []
    q.process(lambda j: seen.append(j.payload["n"]))
    q.pause()
    q.add({"n": 1})
    assert "pause" in q.app.driver.paused_queues()
    # what the worker's fetch loop does: a paused queue gives nothing to claim
    assert await q.app.driver.claim(["pause"], 5, worker_id="probe", lease_s=5) == []
    assert q.get_job_count() == 1 and seen == []
    q.resume()
    wait_for(lambda: seen == [1], what="the job after resume")


def test_disconnect_keeps_jobs_and_process_resumes(settings: Settings) -> None:
    q = backstage.get_queue("disc", settings=settings)
    seen: list[int] = []
    q.process(lambda j: seen.append(j.payload["n"]))
    q.add({"n": 1})
    wait_for(lambda: seen == [1], what="the first job")
    q.disconnect()
    assert not q.processing
    job_id = q.add({"n": 2})
    assert q.get_job_count() == 1
    job = q.app.get_job(job_id)
    assert job is not None and job.state == "waiting"
    q.disconnect()  # idempotent
    q.process(lambda j: seen.append(j.payload["n"] * 10))
    wait_for(lambda: seen == [1, 20], what="the job kept across disconnect")


def test_process_errors(settings: Settings) -> None:
    q = backstage.get_queue("errs", settings=settings)
    with pytest.raises(pgqueue.ValidationError, match="callable"):
        q.process("not a function")  # type: ignore[arg-type]
    q.process(lambda j: None)
    with pytest.raises(pgqueue.ValidationError, match="already has a handler"):
        q.process(lambda j: None)
    with pytest.raises(pgqueue.ValidationError, match="concurrency"):
        backstage.get_queue("errs2", settings=settings).process(lambda j: None, concurrency=0)


def test_stores(settings: Settings) -> None:
    mixed = backstage.get_queue("mixed", settings=settings, store="memory")
    assert mixed.store == "memory"
    with pytest.raises(pgqueue.ConfigurationError, match=r"backend\.queue\.sqs\.region"):
        backstage.get_queue("sqs-queue", settings=settings, store="sqs")  # not configured
    with pytest.raises(pgqueue.DriverError, match="not provided"):
        backstage.get_queue("kafka-queue", settings=settings, store="kafka")
    with pytest.raises(pgqueue.DriverError, match="unknown driver"):
        backstage.get_queue("x-queue", settings=settings, store="rabbitmq")
    if settings.driver == "memory":
        with pytest.raises(pgqueue.ConfigurationError, match="store 'postgres' is not "
                                                              "configured"):
            backstage.get_queue("pg-queue", settings=settings, store="postgres")


def test_redis_store_without_a_redis_section_raises(tmp_path: Any) -> None:
    """As the seed says: a requested store must be configured; no silent redis://127.0.0.1."""
    cfg = tmp_path / "app-config.yaml"
    cfg.write_text("backend:\n  queue:\n    defaultStore: memory\n")
    settings = load_settings(yaml_file=str(cfg), environ={})
    with pytest.raises(pgqueue.ConfigurationError,
                       match=r"store 'redis' is not configured: set "
                             r"backend\.queue\.redis\.connection"):
        backstage.get_queue("my-redis-queue", settings=settings, store="redis")
    assert "my-redis-queue" not in backstage.queues()   # nothing half-made
    # the memory default still works, and a configured redis section is accepted
    assert backstage.get_queue("my-work-queue", settings=settings).store == "memory"
    cfg.write_text("backend:\n  queue:\n    redis:\n      connection: "
                   "redis://127.0.0.1:6379/0\n")
    configured = load_settings(yaml_file=str(cfg), environ={})
    assert configured.source("redis_url").endswith("backend.queue.redis.connection")
    assert backstage.get_queue("my-redis-queue", settings=configured,
                               store="redis").store == "redis"


def test_given_app(settings: Settings) -> None:
    app = pgqueue.App.from_settings(settings)
    q = backstage.get_queue("own-app", app=app)
    assert q.app is app and app.get_task("backstage:own-app") is not None
    with pytest.raises(pgqueue.ValidationError, match="does not match"):
        backstage.get_queue("own-app-2", app=app,
                            store="redis" if settings.driver != "redis" else "memory")
    seen: list[int] = []
    q.add({"n": 5})
    q.process(lambda j: seen.append(j.payload["n"]))
    wait_for(lambda: seen == [5], what="the job")
    q.disconnect()
    app.close()


def test_default_settings_from_app_config_yaml(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                               clean: str) -> None:
    (tmp_path / "app-config.yaml").write_text(
        "backend:\n  queue:\n    defaultStore: postgres\n    maxAttempts: 3\n"
        f"    postgres:\n      connection: '{clean}'\n")
    monkeypatch.chdir(tmp_path)
    q = backstage.get_queue("from-yaml")
    assert (q.store, q.max_attempts) == ("postgres", 3)
    assert q.settings.source("max_attempts").endswith("backend.queue.maxAttempts")


# ---- async ------------------------------------------------------------------------------------
async def test_async_queue_end_to_end(settings: Settings) -> None:
    dead: list[tuple[int, int]] = []

    async def dlq(job: Job, err: BaseException) -> None:
        await asyncio.sleep(0)
        dead.append((job.id, job.attempt))

    q = backstage.get_queue("async", settings=settings, dlq_handler=dlq, max_attempts=2,
                            retry=FAST)
    order: list[str] = []
    started: dict[int, dt.datetime] = {}

    async def handler(job: Job) -> None:
        started.setdefault(job.id, dt.datetime.now(dt.UTC))
        await asyncio.sleep(0)
        if job.payload["task"] == "doomed":
            raise RuntimeError("always fails")
        order.append(job.payload["task"])

    await q.add_async({"task": "background"}, priority=100)
    await q.add_async({"task": "critical"}, priority=1)
    doomed = await q.add_async({"task": "doomed"})
    delayed = await q.add_async({"task": "delayed"}, delay=100, priority=0)
    assert await q.get_job_count_async() == 4
    job = await q.app.get_job_async(delayed)
    assert job is not None and job.run_at is not None and job.created_at is not None
    assert job.run_at - job.created_at >= dt.timedelta(milliseconds=90)

    await q.process_async(handler)
    assert q.processing
    await eventually(lambda: len(order) == 3 and dead == [(doomed, 2)], what="three jobs and "
                     "one dead letter")
    # the delayed job (priority 0) runs once due, whenever that is; the others by priority
    assert sorted(order) == ["background", "critical", "delayed"]
    assert order.index("critical") < order.index("background")
    assert started[delayed] >= job.run_at

    await q.pause_async()
    assert "async" in await q.app.driver.paused_queues_async()
    await q.resume_async()

    await q.disconnect_async()
    assert not q.processing
    await q.add_async({"task": "kept"})
    assert await q.get_job_count_async() == 1
    await q.process_async(handler)
    await eventually(lambda: order[-1:] == ["kept"], what="the job kept across disconnect")
    await eventually(lambda: count_is(q, 0), what="the queue to empty")


async def test_async_sync_handler_and_errors(settings: Settings) -> None:
    q = backstage.get_queue("async-sync", settings=settings)
    seen: list[int] = []
    await q.process_async(lambda j: seen.append(j.payload["n"]), concurrency=2)
    assert q.worker is not None and q.worker.concurrency == 2
    with pytest.raises(pgqueue.ValidationError, match="already has a handler"):
        await q.process_async(lambda j: None)
    await q.add_async({"n": 7})
    await eventually(lambda: seen == [7], what="the job")


async def count_is(q: backstage.Queue, expected: int) -> bool:
    return await q.get_job_count_async() == expected


def test_on_redis(redis_app: pgqueue.App) -> None:
    """The same queue on the redis driver (skipped when no Redis answers)."""
    app = redis_app
    try:
        dead: list[int] = []
        q = backstage.get_queue("on-redis", app=app, max_attempts=2, retry=FAST,
                                dlq_handler=lambda j, e: dead.append(j.id))
        order: list[str] = []

        def handler(job: Job) -> None:
            if job.payload["task"] == "doomed":
                raise RuntimeError("no")
            order.append(job.payload["task"])

        q.add({"task": "normal"})
        q.add({"task": "critical"}, priority=1)
        doomed = q.add({"task": "doomed"})
        assert q.get_job_count() == 3
        q.process(handler)
        wait_for(lambda: len(order) == 2 and dead == [doomed], what="jobs on redis")
        assert order == ["critical", "normal"]
        q.disconnect()
        q.add({"task": "kept"})
        assert q.get_job_count() == 1
    finally:
        backstage.reset()
