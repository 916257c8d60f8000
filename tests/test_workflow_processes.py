"""Workflows run by real worker processes (``pgqueue worker tests.apps.workflows:app``): a
diamond with results flowing, and a fan-out of 10,000 children with one fan-in, each job run
once across four processes; durable steps under SIGKILL."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import chain, group
from tests.apps import workflows as wf
from tests.helpers import run_async, scalar, wait_for

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.processes


@pytest.fixture
def wapp(results: str) -> Iterator[pgqueue.App]:
    wf.app.use_database(results)
    yield wf.app
    wf.app.close()


def run_workers(dsn: str, n: int, timeout: float = 300) -> None:
    """``n`` burst worker processes on queue ``wf``, until each exits (code 0)."""
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "worker",
                               "tests.apps.workflows:app", "--burst", "--concurrency", "8",
                               "--poll-interval", "0.2"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(n)]
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out


def test_diamond_on_four_processes_each_job_once_results_flow(
        wapp: pgqueue.App, results: str, conn: psycopg.Connection[Any]) -> None:
    run = chain(wf.a.s(x=3), group(wf.b.s(), wf.c.s()), wf.d.s()).enqueue()
    run_workers(results, 4)
    assert wapp.result(run.last[0], timeout=30) == [4, 30]
    rows = conn.execute("SELECT note, count(*) FROM test_results GROUP BY note "
                        "ORDER BY note").fetchall()
    assert rows == [("a", 1), ("b", 1), ("c", 1), ("d", 1)]
    assert [j.state for j in wapp.workflow(run.id)] == ["succeeded"] * 4


@pytest.mark.slow
def test_fan_out_of_10000_with_one_fan_in_runs_it_once_after_the_last_child(
        wapp: pgqueue.App, results: str, conn: psycopg.Connection[Any]) -> None:
    n = 10_000
    run = group(*(wf.child.s(i=i) for i in range(n))).then(wf.fanin.s()).enqueue()
    assert len(run.job_ids) == n + 1
    run_workers(results, 4, timeout=600)
    assert wapp.result(run.last[0], timeout=30) == n * (n - 1) // 2
    assert scalar(conn, "SELECT count(*) FROM test_results WHERE note = 'fanin'") == 1
    assert scalar(conn, "SELECT count(*) FROM pgqueue.job_history WHERE task = 'wf.child' "
                        "AND state = 'succeeded'") == n
    # after the last child: its run started once every child had finished
    assert scalar(conn, """
        SELECT f.started_at >= (SELECT max(finished_at) FROM pgqueue.job_history
                                 WHERE task = 'wf.child')
          FROM pgqueue.job_history f WHERE f.id = %s""", run.last[0]) is True
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0


@pytest.mark.long
@pytest.mark.timeout(900)
def test_durable_steps_under_sigkill_each_effect_once(
        wapp: pgqueue.App, results: str, conn: psycopg.Connection[Any]) -> None:
    """200 jobs of three steps; the worker is killed (SIGKILL) at random moments and started
    again until every job finished: each business row is written once, every job finishes,
    and no step runs again once its checkpoint committed."""
    conn.execute("CREATE TABLE IF NOT EXISTS wf_business (job_id bigint)")
    conn.execute("CREATE TABLE IF NOT EXISTS wf_step_runs (job_id bigint, step text, "
                 "at timestamptz DEFAULT clock_timestamp())")
    conn.execute("TRUNCATE wf_business, wf_step_runs")
    rng = random.Random(17)
    ids = [wapp.enqueue("wf.steps", {"pause": rng.choice([0.0, 0.005, 0.02])})
           for _ in range(200)]
    env = {**os.environ, "PGQUEUE_DATABASE_URL": results, "PYTHONPATH": str(ROOT)}
    kills = 0
    deadline = time.monotonic() + 600
    while scalar(conn, "SELECT count(*) FROM pgqueue.jobs") and time.monotonic() < deadline:
        proc = subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "worker",
                                 "tests.apps.workflows:app", "--concurrency", "4",
                                 "--poll-interval", "0.1"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = scalar(conn, "SELECT count(*) FROM wf_step_runs")

        def progress(before: int = before) -> bool:
            return bool(scalar(conn, "SELECT count(*) FROM wf_step_runs") > before
                        or not scalar(conn, "SELECT count(*) FROM pgqueue.jobs"))

        # kill it at a random moment once it has started working
        wait_for(progress, 120, "progress")
        time.sleep(rng.uniform(0.0, 1.0))  # the chaos itself: where the kill lands, not a wait
        proc.kill()
        proc.wait()
        kills += 1
        # the dead worker's jobs: expire their leases and rescue them now (no quarantine: the
        # kills are ours, not the jobs')
        conn.execute("UPDATE pgqueue.jobs SET lease_expires_at = now() - interval '1 second' "
                     "WHERE state = 'running'")
        run_async(wapp, wapp.driver.rescue_expired(quarantine_after=10_000))
    assert kills >= 2
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0
    assert scalar(conn, "SELECT count(*) FROM pgqueue.job_history WHERE state = 'succeeded' "
                        "AND id = ANY(%s)", ids) == 200
    assert scalar(conn, "SELECT count(*) FROM pgqueue.failed_jobs") == 0
    per_job = conn.execute("SELECT job_id, count(*) FROM wf_business GROUP BY job_id").fetchall()
    assert sorted(r[0] for r in per_job) == sorted(ids) and {r[1] for r in per_job} == {1}
    assert scalar(conn, "SELECT count(*) FROM wf_step_runs WHERE step = 'charge'") == 200
    # no run of a step after its checkpoint committed (the checkpoint of a step without conn=
    # is written in its own statement right after the function returned)
    assert scalar(conn, """
        SELECT count(*) FROM wf_step_runs r JOIN pgqueue.job_steps s
          ON s.job_id = r.job_id AND s.name = r.step
         WHERE r.step <> 'charge' AND r.at > s.created_at""") == 0
    assert scalar(conn, "SELECT count(*) FROM pgqueue.job_steps") == 600
    assert [wapp.result(i, timeout=5) for i in ids[:3]] == [6, 6, 6]
