"""Leases and rescue: concurrent rescuers never rescue a job twice, a live heartbeating worker's
jobs are never rescued, and a poison job that keeps killing its worker ends in the archive."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

import pgqueue
from tests.helpers import eventually, scalar


async def test_many_concurrent_rescuers_rescue_each_job_once(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    ids = app.enqueue_many("t", [{} for _ in range(300)], queue="r")
    claimed = await app.driver.claim(["r"], 300, worker_id="dead-worker", lease_s=60)
    assert len(claimed) == 300
    conn.execute("UPDATE pgqueue.jobs SET lease_expires_at = now() - interval '1 s'")
    results = await asyncio.gather(*(app.driver.rescue_expired(limit=40) for _ in range(12)))
    rescued = [i for r, _ in results for i in r]
    assert sorted(rescued) == sorted(ids)  # every job once, none twice
    rows = conn.execute("SELECT state, attempt, jsonb_array_length(errors) FROM pgqueue.jobs"
                        ).fetchall()
    assert set(rows) == {("waiting", 1, 1)}


async def test_live_worker_jobs_are_never_rescued(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    rescues: list[int] = []
    lease_s = 1.0

    def outlived_three_leases(job_id: int) -> bool:
        """Whether the job has run for three lease lengths (by the database's clock)."""
        return bool(scalar(conn, "SELECT clock_timestamp() > started_at + %s * interval '1 s' "
                                 "FROM pgqueue.jobs WHERE id = %s", 3 * lease_s, job_id))

    @app.task(name="long", queue="r")
    async def long() -> None:
        job_id = pgqueue.current_job().id

        async def rescue_attempt_then_check() -> bool:
            # other "workers" try to rescue while the job runs: a live lease is never taken
            rescued, failed = await app.driver.rescue_expired()
            rescues.extend(rescued + failed)
            return outlived_three_leases(job_id)

        await eventually(rescue_attempt_then_check, 30, "the job to outlive three leases")

    job = app.enqueue("long")
    w = app.worker(queues=["r"], lease_s=lease_s, poll_interval=0.2, burst=True)
    await asyncio.wait_for(w.run(), 60)
    assert rescues == []
    assert w.counts == {"succeeded": 1}
    assert app.get_job(job) is None


async def test_poison_job_ends_in_archive_after_max_attempts(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    job = app.enqueue("poison", {}, queue="r", max_attempts=3)
    for attempt in (1, 2, 3):
        [claimed] = await app.driver.claim(["r"], 1, worker_id=f"w{attempt}", lease_s=60)
        assert claimed.id == job and claimed.attempt == attempt
        # the worker "dies": its lease runs out
        conn.execute("UPDATE pgqueue.jobs SET lease_expires_at = now() - interval '1 s'")
        rescued, failed = await app.driver.rescue_expired()
        assert (rescued, failed) == (([job], []) if attempt < 3 else ([], [job]))
    archived = app.get_failed(job)
    assert archived.reason == "worker died while running"
    assert [e["error"] for e in archived.errors] == ["worker died while running"] * 3
