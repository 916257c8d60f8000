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


def _ran(c: psycopg.Connection[object] | None, job_id: int, step: str) -> None:
    """Record one execution of a step function (in ``c``'s transaction when given)."""
    query = "INSERT INTO wf_step_runs (job_id, step) VALUES (%s, %s)"
    if c is not None:
        c.execute(query, (job_id, step))
        return
    with psycopg.connect(os.environ["PGQUEUE_DATABASE_URL"], autocommit=True) as own:
        own.execute(query, (job_id, step))


def reserve(job_id: int) -> int:
    _ran(None, job_id, "reserve")
    return 1


def charge(c: psycopg.Connection[object], job_id: int) -> int:
    _ran(c, job_id, "charge")
    c.execute("INSERT INTO wf_business (job_id) VALUES (%s)", (job_id,))
    return 2


def notify(job_id: int) -> int:
    _ran(None, job_id, "notify")
    return 3


@app.task(name="wf.steps", queue="wf")
def steps(pause: float) -> int:
    """Three durable steps, the middle one writing a business row in its step's transaction;
    short pauses between them give a SIGKILL places to land."""
    import time

    ctx = pgqueue.current_context()
    job_id = ctx.job.id
    total = ctx.step("reserve", reserve, job_id)
    time.sleep(pause)
    with psycopg.connect(os.environ["PGQUEUE_DATABASE_URL"]) as c, c.transaction():
        total += ctx.step("charge", charge, c, job_id, conn=c)
        time.sleep(pause)
    time.sleep(pause)
    total += ctx.step("notify", notify, job_id)
    time.sleep(pause)
    return total
