"""What is particular to the sqs driver (the behavioural suite covers the rest): SQS's own
recovery of a killed worker's jobs, the dead-letter queue, the limits it refuses with a
specific error before sending anything, its configuration, and a Backstage-style program with
``defaultStore: sqs``. Everything runs on an SQS emulator (moto in server mode, started by
``tests/drivers/conftest.py``), never on AWS."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import pgqueue
from pgqueue import Job
from pgqueue.compat import backstage, load_settings
from pgqueue.drivers import get_driver
from pgqueue.drivers.base import Finish
from pgqueue.errors import CapabilityError, ConfigurationError, ValidationError
from pgqueue.job import RESCUE_REASON
from pgqueue.retry import RetryPolicy
from tests.drivers.test_behaviour import claim, drain
from tests.helpers import wait_for

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.fixture
def sqs_app(sqs_options: dict[str, Any]) -> pgqueue.App:
    from pgqueue.drivers.sqs import SqsDriver

    return pgqueue.App(driver=SqsDriver(**sqs_options))


# ---- names ------------------------------------------------------------------------------------
def test_queue_names_map_to_sqs_names_and_back() -> None:
    from pgqueue.drivers.sqs.driver import DLQ_SUFFIX, parse_sqs_name, sqs_queue_name

    for name in ("emails", "a_f", "a_", "my-work-queue", "shop.orders:eu/1", "_x__y"):
        sqs = sqs_queue_name("p-", name)
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", sqs)  # SQS's alphabet
        assert parse_sqs_name("p-", sqs) == (name, False)
        assert parse_sqs_name("p-", sqs + DLQ_SUFFIX) == (name, True)
    assert parse_sqs_name("p-", "other-queue") is None
    assert parse_sqs_name("p-", "p-bad_zescape") is None


# ---- a worker process killed mid-job ------------------------------------------------------------
@pytest.mark.processes
async def test_sigkilled_worker_job_is_visible_again_and_runs_then_dlq_after_max_attempts(
        sqs_app: pgqueue.App, sqs_options: dict[str, Any], tmp_path: Path) -> None:
    """SIGKILL a worker inside two jobs: when their visibility timeout (3 s: the 2 s lease) ends,
    SQS shows them again; the one with attempts left runs at attempt 2, the one whose only
    attempt the dead worker used goes to the dead-letter queue with the lost lease as its
    error."""
    app = sqs_app
    again = app.enqueue("t", {"n": 1}, queue="k", max_attempts=3)
    used_up = app.enqueue("t", {"n": 2}, queue="k", max_attempts=1)
    markers = tmp_path / "started"
    markers.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(HERE / "sqs_worker.py"),
                             sqs_options["endpoint_url"], sqs_options["queue_prefix"],
                             str(markers)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: len(list(markers.iterdir())) >= 2 or proc.poll() is not None, 60,
                 "the worker process to be inside both jobs")
        assert proc.poll() is None, proc.communicate()[0]
        assert app.sizes("k")["running"] == 2  # in flight: invisible to everyone else
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert {int(p.name) for p in markers.iterdir()} == {again, used_up}

    # nobody rescues anything: the visibility timeout ends and SQS shows both again
    wait_for(lambda: app.sizes("k")["waiting"] == 2, 30,
             "the killed worker's jobs to be visible again")

    runs: Counter[int] = Counter()
    attempts: dict[int, int] = {}

    @app.task(name="t", queue="k")
    def t(n: int) -> None:
        job = pgqueue.current_job()
        runs[job.id] += 1
        attempts[job.id] = job.attempt

    await drain(app, queues=["k"])
    assert runs == {again: 1} and attempts == {again: 2}
    assert app.count("k") == 0
    [dead] = app.failed("k")
    assert (dead.id, dead.attempt, dead.max_attempts) == (used_up, 1, 1)
    assert [e.error for e in dead.errors] == [RESCUE_REASON]
    assert "lease expired 1 time(s)" in dead.reason and "max_attempts is 1" in dead.reason
    assert app.sizes("k")["failed"] == 1


async def test_failing_job_lands_in_the_dlq_with_its_error_and_is_redriven(
        sqs_app: pgqueue.App) -> None:
    app = sqs_app

    @app.task(name="boom", queue="q", max_attempts=2,
              retry=RetryPolicy(base=0.01, factor=1.0, jitter=0.0))
    def boom() -> None:
        raise ValueError(f"boom {pgqueue.current_job().attempt}")

    job_id = app.enqueue("boom")
    worker = await drain(app, queues=["q"])
    assert worker.counts == {"retried": 1, "failed": 1}
    failed = app.get_failed(job_id)
    assert (failed.attempt, failed.reason) == (2, "ValueError: boom 2")
    assert [e.error for e in failed.errors] == ["ValueError: boom 2"]
    assert failed.errors[0].traceback is not None and "Traceback" in failed.errors[0].traceback
    assert app.count_failed(queue="q") == 1 and app.count_failed(task="other") == 0

    assert app.retry_failed(job_id) == job_id  # back to its queue, attempt 0, error kept
    assert app.count_failed() == 0
    [job] = await claim(app)
    assert (job.id, job.attempt, [e.error for e in job.errors]) == (
        job_id, 1, ["ValueError: boom 2"])


async def test_heartbeat_keeps_a_job_invisible(sqs_app: pgqueue.App) -> None:
    app, driver = sqs_app, sqs_app.driver
    kept, lost = app.enqueue("t", queue="q"), app.enqueue("t", queue="q")
    assert {j.id for j in await claim(app, limit=2, lease_s=1)} == {kept, lost}
    await driver.heartbeat(worker_id="suite-worker", lease_s=60, job_ids=[kept])
    wait_for(lambda: app.sizes("q")["waiting"] == 1, 30, "the unlisted job's lease to end")
    [back] = await claim(app, worker="other")
    assert (back.id, back.attempt) == (lost, 2)
    # the lost claim's outcome is a no-op; the kept one completes
    assert await driver.finish_many([Finish(lost)], worker_id="suite-worker") == []
    assert await driver.finish_many([Finish(kept)], worker_id="suite-worker") == [kept]


async def test_clear_is_purge_queue(sqs_app: pgqueue.App) -> None:
    app = sqs_app
    for _ in range(3):
        app.enqueue("t", queue="q")
    app.enqueue("t", queue="q", delay=600)
    app.enqueue("t", queue="other")
    assert app.sizes("q") == {"waiting": 3, "scheduled": 1, "running": 0, "failed": 0}
    assert app.clear("q") == 4
    assert app.count("q") == 0 and app.count("other") == 1
    assert app.clear("never-used") == 0
    assert [(s.queue, s.waiting) for s in app.stats()] == [("other", 1), ("q", 0)]


async def test_pop_takes_a_job_out(sqs_app: pgqueue.App) -> None:
    app = sqs_app
    job_id = app.enqueue("t", {"n": 1}, queue="q")
    job = app.pop("q")
    assert job is not None and (job.id, job.payload, job.attempt) == (job_id, {"n": 1}, 0)
    assert app.pop("q") is None and app.pop("never-used") is None
    assert app.count("q") == 0


# ---- what SQS cannot do: refused before anything is sent ----------------------------------------
async def test_limits_are_refused_by_name_and_nothing_is_sent(sqs_app: pgqueue.App) -> None:
    app = sqs_app
    app.enqueue("t", queue="q")  # the queue exists: "nothing sent" is observable
    with pytest.raises(CapabilityError, match="no priorities"):
        app.enqueue("t", queue="q", priority=1)
    with pytest.raises(CapabilityError, match=r"at most 900 s \(15 minutes"):
        app.enqueue("t", queue="q", delay=901)
    with pytest.raises(CapabilityError, match="at most 900 s"):
        await app.enqueue_async("t", queue="q",
                                run_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=16))
    with pytest.raises(CapabilityError, match="unique_key"):
        app.enqueue("t", queue="q", unique_key="k")
    big = {"blob": "x" * 262_144}
    with pytest.raises(ValidationError, match=r"256 KiB"):
        app.enqueue("t", big, queue="q")
    # one bad job in a batch: none of the batch is sent
    with pytest.raises(ValidationError, match=r"262,144 bytes"):
        app.enqueue_many("t", [{"i": 1}, {"i": 2}, big], queue="q")
    with pytest.raises(CapabilityError, match="priority 5"):
        app.insert([app.build("t", queue="q"), app.build("t", queue="q", priority=5)])
    assert app.count("q") == 1
    # the limits themselves are accepted
    app.enqueue("t", queue="q", delay=900)
    app.enqueue("t", queue="q", priority=20)
    assert app.sizes("q")["scheduled"] == 1 and app.count("q") == 3


async def test_what_the_driver_cannot_do_is_a_capability_error(sqs_app: pgqueue.App) -> None:
    app = sqs_app
    caps = app.driver.capabilities
    assert (caps.priorities, caps.max_delay_s, caps.transactional_enqueue, caps.shared_pause,
            caps.exact_counts, caps.history) == (False, 900, False, False, False, False)
    job_id = app.enqueue("t", queue="q")
    for call in (lambda: app.pause("q"), lambda: app.resume("q"),
                 lambda: app.forget_queue("q")):
        with pytest.raises(CapabilityError, match="pause"):
            call()
    with pytest.raises(CapabilityError, match="by id"):
        app.get_job(job_id)
    with pytest.raises(CapabilityError, match="by id"):
        await app.cancel_async(job_id)
    with pytest.raises(CapabilityError, match="history"):
        app.get_finished(job_id)
    with pytest.raises(CapabilityError, match="transaction"):
        app.enqueue("t", queue="q", conn=object())  # type: ignore[arg-type]
    assert app.count("q") == 1


async def test_a_snooze_over_15_minutes_fails_the_job_naming_the_limit(
        sqs_app: pgqueue.App) -> None:
    app = sqs_app

    @app.task(name="sleepy", queue="q")
    def sleepy() -> pgqueue.Snooze:
        return pgqueue.Snooze(3600)

    job_id = app.enqueue("sleepy")
    await drain(app, queues=["q"])
    failed = app.get_failed(job_id)
    assert "900 s delay limit" in failed.reason


# ---- configuration --------------------------------------------------------------------------
def test_get_driver_and_settings(sqs_options: dict[str, Any], tmp_path: Path) -> None:
    from pgqueue.drivers.sqs import SqsDriver

    driver = get_driver("sqs", **sqs_options)
    assert isinstance(driver, SqsDriver)
    assert (driver.region, driver.endpoint_url, driver.queue_prefix) == (
        "us-east-1", sqs_options["endpoint_url"], sqs_options["queue_prefix"])
    driver.check()
    with pytest.raises(ConfigurationError, match="queue_prefix"):
        get_driver("sqs", region="us-east-1", queue_prefix="bad prefix!")
    with pytest.raises(ConfigurationError, match="endpoint"):
        get_driver("sqs", region="us-east-1", endpoint_url="localhost:4566")

    cfg = tmp_path / "app-config.yaml"
    cfg.write_text("backend:\n  queue:\n    defaultStore: sqs\n    sqs:\n"
                   "      region: eu-west-1\n      endpoint: http://localhost:4566\n")
    settings = load_settings(yaml_file=cfg, environ={})
    assert (settings.driver, settings.sqs_region, settings.sqs_endpoint) == (
        "sqs", "eu-west-1", "http://localhost:4566")
    assert settings.source("sqs_region").endswith("backend.queue.sqs.region")
    cfg.write_text("backend:\n  queue:\n    sqs:\n      regoin: eu-west-1\n")
    with pytest.raises(ConfigurationError, match="unknown key 'regoin'"):
        load_settings(yaml_file=cfg, environ={})
    env = load_settings(environ={"PGQUEUE_QUEUE_DRIVER": "sqs", "PGQUEUE_SQS_REGION": "us-east-2"})
    assert (env.driver, env.sqs_region, env.sqs_endpoint) == ("sqs", "us-east-2", None)


# ---- a Backstage-style program, unchanged, with defaultStore: sqs -------------------------------
def test_backstage_program_runs_with_default_store_sqs(
        sqs_options: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed's calls on the sqs store: get_queue, add (with a delay in ms), process with
    retries then the DLQ handler, get_job_count, disconnect and process again. Priorities and
    delays over 15 minutes are refused, as the seed documents."""
    # the program reads its credentials as AWS programs do, from the environment
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    cfg = tmp_path / "app-config.yaml"
    cfg.write_text(f"backend:\n  queue:\n    defaultStore: sqs\n    maxAttempts: 2\n"
                   f"    pollInterval: 0.1\n    sqs:\n      region: us-east-1\n"
                   f"      endpoint: {sqs_options['endpoint_url']}\n")
    settings = load_settings(yaml_file=cfg, environ={})
    name = f"work-{sqs_options['queue_prefix'].strip('-')}"  # the default prefix is shared
    dead: list[tuple[Any, str, int]] = []
    done: list[str] = []
    lock = threading.Lock()

    def dlq_handler(job: Job, error: BaseException) -> None:
        with lock:
            dead.append((job.payload["task"], str(error), job.attempt))

    def handler(job: Job) -> None:
        if job.payload["task"] == "always_fails":
            raise RuntimeError("this job always fails")
        with lock:
            done.append(job.payload["task"])

    backstage.reset()
    try:
        work_queue = backstage.get_queue(name, settings=settings, dlq_handler=dlq_handler,
                                         retry=RetryPolicy(base=0.01, jitter=0.0))
        assert (work_queue.store, work_queue.max_attempts) == ("sqs", 2)
        assert backstage.get_queue(name) is work_queue
        work_queue.add({"task": "send_email", "recipient": "user@example.com"})
        work_queue.add({"task": "cleanup"}, delay=500)
        work_queue.add({"task": "always_fails"})
        assert work_queue.get_job_count() == 3
        with pytest.raises(CapabilityError, match="priorit"):
            work_queue.add({"task": "critical_job"}, priority=1)
        with pytest.raises(CapabilityError, match="900 s"):
            work_queue.add({"task": "daily_report"}, delay=3_600_000)
        with pytest.raises(CapabilityError, match="pause"):
            work_queue.pause()

        work_queue.process(handler)
        wait_for(lambda: sorted(done) == ["cleanup", "send_email"] and dead, 60,
                 "the jobs to run and the failing one to be dead-lettered")
        assert dead == [("always_fails", "this job always fails", 2)]
        wait_for(lambda: work_queue.get_job_count() == 0, 30, "the count to drop")

        work_queue.disconnect()
        work_queue.add({"task": "added_after_disconnect"})
        assert work_queue.get_job_count() == 1
        work_queue.process(handler)
        wait_for(lambda: "added_after_disconnect" in done, 60, "the job after reconnecting")
        work_queue.disconnect()
        assert [f.payload["task"] for f in work_queue.app.failed(name)] == ["always_fails"]
    finally:
        backstage.reset()
    # the store must be configured, as in Backstage
    with pytest.raises(ConfigurationError, match=r"backend\.queue\.sqs\.region"):
        backstage.get_queue("unconfigured", settings=load_settings(environ={}), store="sqs")
    backstage.reset()


async def test_async_twins_run_in_threads(sqs_app: pgqueue.App) -> None:
    app = sqs_app
    ids = await app.enqueue_many_async("t", [{"i": i} for i in range(12)], queue="q")
    assert len(set(ids)) == 12 and ids == sorted(ids)
    assert await app.count_async("q") == 12
    claimed = await asyncio.gather(*(claim(app, limit=5, worker=f"w{i}") for i in range(3)))
    got = [j.id for batch in claimed for j in batch]
    # every job claimed; SQS delivers at least once (exclusive_claims=False), and moto's
    # emulator can hand one message to two concurrent receives
    assert set(got) == set(ids) and len(got) <= 15
