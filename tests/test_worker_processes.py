"""Workers as real processes (`pgqueue worker tests.apps.x:app`): exactly-once across processes,
burst mode, SIGTERM during work, SIGKILL and rescue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.helpers import run_async, scalar, wait_for

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.processes


@pytest.fixture
def xapp(results: str) -> Iterator[pgqueue.App]:
    app = pgqueue.App(database_url=results)
    yield app
    app.close()


def start_worker(dsn: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "worker", "tests.apps.x:app",
                             *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def test_burst_worker_drains_1000_jobs_and_exits_0(
        xapp: pgqueue.App, results: str, conn: psycopg.Connection[Any]) -> None:
    xapp.enqueue_many("noop", [{} for _ in range(1000)], queue="x")
    code, out = finish(start_worker(results, "--burst", "--concurrency", "10"))
    assert code == 0, out
    assert scalar(conn, "SELECT count(*) FROM pgqueue.job_history") == 1000
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0


def test_several_worker_processes_run_every_job_exactly_once(
        xapp: pgqueue.App, results: str, conn: psycopg.Connection[Any]) -> None:
    ids = xapp.enqueue_many("record", [{"n": i} for i in range(600)], queue="x")
    procs = [start_worker(results, "--burst", "--concurrency", "4") for _ in range(3)]
    for p in procs:
        code, out = finish(p)
        assert code == 0, out
    rows = conn.execute("SELECT job_id, count(*) FROM test_results GROUP BY job_id").fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert all(r[1] == 1 for r in rows)


def test_sigterm_lets_running_jobs_finish(xapp: pgqueue.App, results: str,
                                          conn: psycopg.Connection[Any]) -> None:
    ids = xapp.enqueue_many("slow", [{"seconds": 0.5} for _ in range(6)], queue="x")
    proc = start_worker(results, "--concurrency", "3", "--poll-interval", "0.1")
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM test_results WHERE note = 'start'") >= 3,
             30, "three jobs to start")
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc)
    assert code == 0, out
    started = {r[0] for r in conn.execute("SELECT job_id FROM test_results WHERE note='start'")}
    ended = {r[0] for r in conn.execute("SELECT job_id FROM test_results WHERE note = 'end'")}
    assert started == ended  # every job that started finished
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'") == 0
    done = {r[0] for r in conn.execute("SELECT id FROM pgqueue.job_history")}
    waiting = {r[0] for r in conn.execute("SELECT id FROM pgqueue.jobs WHERE state='waiting'")}
    assert done == ended and done | waiting == set(ids)  # nothing lost


def test_sigterm_timeout_releases_jobs_without_counting_attempts(
        xapp: pgqueue.App, results: str, conn: psycopg.Connection[Any]) -> None:
    [job] = xapp.enqueue_many("aslow", [{"seconds": 60}], queue="x")
    proc = start_worker(results, "--shutdown-timeout", "0.3", "--poll-interval", "0.1")
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM test_results") >= 1, 30, "job start")
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc)
    assert code == 0, out
    assert conn.execute("SELECT state, attempt FROM pgqueue.jobs WHERE id = %s",
                        (job,)).fetchone() == ("waiting", 0)


def test_sigterm_with_a_hung_sync_handler_exits_within_shutdown_timeout(
        xapp: pgqueue.App, results: str, conn: psycopg.Connection[Any]) -> None:
    [job] = xapp.enqueue_many("hang", [{}], queue="x")
    proc = start_worker(results, "--shutdown-timeout", "0.5", "--poll-interval", "0.1")
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM test_results") >= 1, 30, "job start")
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc, timeout=20)  # was: never exited (the pool thread was joined)
    assert code == 0, out
    assert conn.execute("SELECT state, attempt FROM pgqueue.jobs WHERE id = %s",
                        (job,)).fetchone() == ("waiting", 0)


def test_sigkill_then_rescue_after_lease_expiry(xapp: pgqueue.App, results: str,
                                                conn: psycopg.Connection[Any]) -> None:
    [job] = xapp.enqueue_many("slow", [{"seconds": 60}], queue="x")
    proc = start_worker(results)
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM test_results") >= 1, 30, "job start")
    proc.kill()
    proc.wait()

    async def rescue_before_and_after_expiry() -> None:
        # the dead worker's lease is still in the future: a rescue now must not touch the job
        rescued, _ = await xapp.driver.rescue_expired()
        assert rescued == []
        conn.execute("UPDATE pgqueue.jobs SET lease_expires_at = now() - interval '1 second'")
        rescued, failed = await xapp.driver.rescue_expired()
        assert rescued == [job] and failed == []

    run_async(xapp, rescue_before_and_after_expiry())
    row = conn.execute("SELECT state, attempt, last_error FROM pgqueue.jobs WHERE id = %s",
                       (job,)).fetchone()
    assert row == ("waiting", 1, "worker died while running")
