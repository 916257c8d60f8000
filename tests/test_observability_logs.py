"""``--log-format json`` and the worker's summary (jobs and attempts counted apart), with a
worker process on real PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pgqueue
from pgqueue._logging import JsonFormatter
from pgqueue.worker.maintenance.summary import describe_counts

ROOT = Path(__file__).resolve().parent.parent


def test_describe_counts_tells_jobs_from_attempts() -> None:
    assert describe_counts({"succeeded": 7, "retried": 8}) == (
        "7 jobs done (succeeded 7), 15 attempts (retried 8)")
    assert describe_counts({"succeeded": 1}) == "1 job done (succeeded 1), 1 attempt"
    assert describe_counts({}) == "0 jobs done, 0 attempts"


def test_json_formatter_writes_one_object_with_the_extra_fields() -> None:
    record = logging.LogRecord("pgqueue.worker", logging.INFO, __file__, 1, "job %s ok", (7,),
                               None)
    record.__dict__.update({"event": "succeeded", "job_id": 7, "queue": "q"})
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "job 7 ok" and data["level"] == "INFO"
    assert (data["event"], data["job_id"], data["queue"]) == ("succeeded", 7, "q")
    assert data["time"].endswith("+00:00")


def test_worker_logs_json_lines_with_job_fields_and_counts_jobs_apart_from_attempts(
        clean: str) -> None:
    app = pgqueue.App(database_url=clean)
    try:
        for _ in range(7):
            app.enqueue("flaky", queue="obs")  # each: a failed attempt, then success
    finally:
        app.close()
    env = {**os.environ, "PGQUEUE_DATABASE_URL": clean, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pgqueue.cli", "--log-level", "DEBUG", "worker",
         "tests.apps.obs:app", "--queues", "obs", "--burst", "--log-format", "json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records: list[dict[str, Any]] = [json.loads(line) for line in proc.stderr.splitlines()
                                     if line.strip()]  # every line is JSON
    pgqueue_lines = [r for r in records if r["logger"].startswith("pgqueue")]
    retries = [r for r in pgqueue_lines if r.get("event") == "retry"]
    assert len(retries) == 7
    assert {"time", "level", "worker", "job_id", "queue", "task", "attempt"} <= set(retries[0])
    assert retries[0]["task"] == "flaky" and retries[0]["attempt"] == 1
    done = [r for r in pgqueue_lines if r.get("event") == "succeeded"]
    assert len(done) == 7 and all(r["duration"] >= 0 for r in done)
    stopped = next(r for r in pgqueue_lines if r.get("event") == "worker_stopped")
    assert stopped["message"].endswith("7 jobs done (succeeded 7), 14 attempts (retried 7)")
    assert stopped["succeeded"] == 7 and stopped["retried"] == 7
