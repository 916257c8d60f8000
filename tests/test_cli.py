"""The `pgqueue` command on top of the Python API: enqueue, status, failed, pause/resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.helpers import run_async, scalar

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.processes


def cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pgqueue.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)


def test_enqueue_status_pause_resume(app: pgqueue.App, clean: str,
                                     conn: psycopg.Connection[Any]) -> None:
    r = cli(clean, "enqueue", "send", "--args", '{"to": "a@b.c"}', "--queue", "mail",
            "--priority", "3", "--delay", "60", "--json")
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["id"]
    row = conn.execute("SELECT queue, task, args, priority, run_at > now() FROM pgqueue.jobs "
                       "WHERE id = %s", (job_id,)).fetchone()
    assert row == ("mail", "send", {"to": "a@b.c"}, 3, True)
    assert cli(clean, "enqueue", "send", "--queue", "mail").returncode == 0
    r = cli(clean, "status", "--json")
    assert r.returncode == 0
    status = json.loads(r.stdout)
    [mail] = [q for q in status["queues"] if q["queue"] == "mail"]
    assert (mail["waiting"], mail["scheduled"], mail["running"]) == (1, 1, 0)
    table = cli(clean, "status").stdout
    assert "mail" in table and "waiting" in table
    assert "finished/1h" in table and "done/1h" not in table  # the demo's word too
    assert cli(clean, "pause", "mail").returncode == 0
    assert scalar(conn, "SELECT paused FROM pgqueue.queues WHERE name = 'mail'") is True
    assert cli(clean, "resume", "mail").returncode == 0
    assert scalar(conn, "SELECT paused FROM pgqueue.queues WHERE name = 'mail'") is False


def test_enqueue_bad_input(clean: str, conn: psycopg.Connection[Any]) -> None:
    r = cli(clean, "enqueue", "send", "--args", "{not json")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    r = cli(clean, "enqueue", "send", "--priority", "5000")
    assert r.returncode == 2 and "priority must be" in r.stderr
    r = cli(clean, "enqueue", "bad task;")
    assert r.returncode == 2 and "invalid task name" in r.stderr
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0


def test_failed_list_show_retry_purge(app: pgqueue.App, clean: str,
                                      conn: psycopg.Connection[Any]) -> None:
    @app.task(name="broken", queue="q", max_attempts=1)
    def broken(n: int) -> None:
        raise KeyError(f"missing {n}")

    ids = app.enqueue_many("broken", [{"n": 1}, {"n": 2}, {"n": 3}])
    run_async(app, app.worker(queues=["q"], burst=True).run())
    listing = cli(clean, "failed", "list")
    assert listing.returncode == 0 and "KeyError" in listing.stdout
    assert all(str(i) in listing.stdout for i in ids)
    shown = json.loads(cli(clean, "failed", "show", str(ids[0]), "--json").stdout)
    assert shown["args"] == {"n": 1} and "Traceback" in shown["errors"][-1]["traceback"]
    assert cli(clean, "failed", "show", "999999").returncode == 2
    r = cli(clean, "failed", "retry", str(ids[0]))
    assert r.returncode == 0
    assert scalar(conn, "SELECT state FROM pgqueue.jobs WHERE id = %s", ids[0]) == "waiting"
    r = cli(clean, "failed", "retry", "--all")
    assert "re-driven 2 jobs" in r.stdout
    run_async(app, app.worker(queues=["q"], burst=True).run())
    assert "purged 3" in cli(clean, "failed", "purge", "--all", "--yes").stdout
    assert scalar(conn, "SELECT count(*) FROM pgqueue.failed_jobs") == 0


def test_worker_with_no_flags_consumes_exactly_the_vela_routes(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    for queue in ("a", "b", "c"):
        app.enqueue_many("noop", [{} for _ in range(5)], queue=queue)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PGQUEUE_DATABASE_URL", "DATABASE_URL")}
    env.update({"VELA_QUEUE_DRIVER": "postgres", "VELA_QUEUE_CONFIG": clean,
                "VELA_QUEUE_ROUTES": "a,b", "PYTHONPATH": str(ROOT)})
    r = subprocess.run([sys.executable, "-m", "pgqueue.cli", "worker", "tests.apps.x:app",
                        "--burst"], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    done = dict(conn.execute("SELECT queue, count(*) FROM pgqueue.job_history GROUP BY 1"))
    assert done == {"a": 5, "b": 5}
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs WHERE queue = 'c'") == 5
    r = subprocess.run([sys.executable, "-m", "pgqueue.cli", "config"], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=60)
    assert "env VELA_QUEUE_ROUTES" in r.stdout and "a,b" in r.stdout


def test_bad_configuration_stops_the_worker_with_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PGQUEUE_CONCURRENCY": "-3"}
    r = subprocess.run([sys.executable, "-m", "pgqueue.cli", "worker", "tests.apps.x:app"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    assert "PGQUEUE_CONCURRENCY" in r.stderr and "Traceback" not in r.stderr
