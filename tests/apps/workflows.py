"""Workflow tasks for tests run as real worker processes
(``pgqueue worker tests.apps.workflows:app``). The database comes from ``PGQUEUE_DATABASE_URL``;
each task records its execution in ``test_results`` (created by the tests)."""

from __future__ import annotations

import os

import psycopg

import pgqueue

app = pgqueue.App()


def _record(note: str = "") -> None:
    job = pgqueue.current_job()
    with psycopg.connect(os.environ["PGQUEUE_DATABASE_URL"], autocommit=True) as c:
        c.execute("INSERT INTO test_results (job_id, attempt, pid, note) VALUES (%s, %s, %s, %s)",
                  (job.id, job.attempt, os.getpid(), note))


@app.task(name="wf.a", queue="wf")
def a(x: int) -> int:
    _record("a")
    return x


@app.task(name="wf.b", queue="wf")
def b(n: int) -> int:
    _record("b")
    return n + 1


@app.task(name="wf.c", queue="wf")
def c(n: int) -> int:
    _record("c")
    return n * 10


@app.task(name="wf.d", queue="wf")
def d(results: list[int]) -> list[int]:
    _record("d")
    return results


@app.task(name="wf.child", queue="wf")
def child(i: int) -> int:
    return i


@app.task(name="wf.fanin", queue="wf")
def fanin(parts: list[int]) -> int:
    _record("fanin")
    return sum(parts)
