"""Workflows run by real worker processes (``pgqueue worker tests.apps.workflows:app``): a
diamond with results flowing, and a fan-out of 10,000 children with one fan-in, each job run
once across four processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import chain, group
from tests.apps import workflows as wf
from tests.helpers import scalar

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.processes


@pytest.fixture
def results(clean: str, conn: psycopg.Connection[Any]) -> str:
    conn.execute("CREATE TABLE IF NOT EXISTS test_results (job_id bigint, attempt int, "
                 "pid int, note text, at timestamptz DEFAULT clock_timestamp())")
    conn.execute("TRUNCATE test_results")
    return clean


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
