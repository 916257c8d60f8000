"""A small application for worker tests run as real processes (``pgqueue worker tests.apps.x:app``).

The database comes from ``PGQUEUE_DATABASE_URL``. Each task records its execution in the table
``test_results`` (created by the tests), so that a test can count executions per job.
"""

from __future__ import annotations

import asyncio
import os
import time

import psycopg

import pgqueue

app = pgqueue.App()


def _record(note: str = "") -> None:
    job = pgqueue.current_job()
    with psycopg.connect(os.environ["PGQUEUE_DATABASE_URL"], autocommit=True) as c:
        c.execute("INSERT INTO test_results (job_id, attempt, pid, note) VALUES (%s, %s, %s, %s)",
                  (job.id, job.attempt, os.getpid(), note))


@app.task(name="record", queue="x")
def record(n: int = 0) -> None:
    _record()


@app.task(name="slow", queue="x")
def slow(seconds: float) -> None:
    _record("start")
    time.sleep(seconds)
    _record("end")


@app.task(name="aslow", queue="x")
async def aslow(seconds: float) -> None:
    await asyncio.to_thread(_record, "start")
    await asyncio.sleep(seconds)
    await asyncio.to_thread(_record, "end")


@app.task(name="noop", queue="x")
def noop() -> None:
    return None


@app.task(name="which_loop", queue="x")
async def which_loop() -> str:
    """The class of the event loop the worker runs on, e.g. ``uvloop.Loop`` (its result)."""
    loop = type(asyncio.get_running_loop())
    return f"{loop.__module__}.{loop.__qualname__}"


@app.task(name="hang", queue="x")
def hang() -> None:
    """A sync handler that never returns (its thread cannot be killed)."""
    _record("start")
    import threading

    threading.Event().wait()
