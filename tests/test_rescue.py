"""Leases and rescue: concurrent rescuers never rescue a job twice, a live heartbeating worker's
jobs are never rescued, and a poison job that keeps killing its worker is quarantined to the
archive while the jobs claimed alongside it are not punished (the rescue rule of
:mod:`pgqueue.job`; the same scenarios over every driver are in
``tests/drivers/test_rescue_rule.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

import pgqueue
from pgqueue.job import QUARANTINE_AFTER, RESCUE_REASON, quarantine_reason_for
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


def _die(conn: psycopg.Connection[Any], worker: str) -> None:
    """The worker "dies": the leases of its jobs run out (it never heartbeats again)."""
    conn.execute("UPDATE pgqueue.jobs SET lease_expires_at = now() - interval '1 s' "
                 "WHERE worker_id = %s", (worker,))


def _rescues(conn: psycopg.Connection[Any], job_id: int) -> int:
    return int(scalar(conn, "SELECT rescues FROM pgqueue.jobs WHERE id = %s", job_id))


async def test_a_job_that_kills_its_worker_is_quarantined_not_archived_for_attempts(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    """Deaths are counted apart from attempts: max_attempts=1 does not archive a job at its
    first rescue; QUARANTINE_AFTER deaths, each time alone on its worker, do."""
    job = app.enqueue("poison", {}, queue="r", max_attempts=1)
    for death in range(1, QUARANTINE_AFTER + 1):
        [claimed] = await app.driver.claim(["r"], 1, worker_id=f"w{death}", lease_s=60)
        assert claimed.id == job and claimed.attempt == death
        _die(conn, f"w{death}")
        rescued, failed = await app.driver.rescue_expired()
        if death < QUARANTINE_AFTER:
            assert (rescued, failed) == ([job], [])
            assert _rescues(conn, job) == death
        else:
            assert (rescued, failed) == ([], [job])
    archived = app.get_failed(job)
    assert archived.reason == quarantine_reason_for(QUARANTINE_AFTER)
    assert "quarantined" in archived.reason and "os._exit" in archived.reason
    assert [e.error for e in archived.errors] == [RESCUE_REASON] * QUARANTINE_AFTER
    assert [e.worker for e in archived.errors] == [f"w{d}" for d in range(1, 4)]


async def test_innocent_neighbours_of_a_killer_are_never_quarantined(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    """The killer is in every death it causes; a neighbour claimed with it each time too ties
    with it and is not blamed (nor is the killer yet); with fresh neighbours, the killer is
    the prime suspect and goes, and every neighbour waits again, unpunished."""
    killer = app.enqueue("poison", {}, queue="p")
    sticky = app.enqueue("good", {}, queue="s")  # claimed with the killer every time
    death = 0

    async def claim_and_die(*queues: str) -> tuple[list[int], list[int]]:
        nonlocal death
        death += 1
        worker = f"dead-{death}"
        claimed = await app.driver.claim(list(queues), 10, worker_id=worker, lease_s=60)
        assert killer in {j.id for j in claimed}
        _die(conn, worker)
        return await app.driver.rescue_expired(spread_s=0)

    for d in range(QUARANTINE_AFTER):
        fresh = app.enqueue_many("good", [{"d": d}] * 3, queue=f"n{d}")
        rescued, failed = await claim_and_die("p", "s", f"n{d}")
        assert failed == [] and sorted(rescued) == sorted([killer, sticky, *fresh])
    assert (_rescues(conn, killer), _rescues(conn, sticky)) == (3, 3)  # a tie blames nobody

    fresh = app.enqueue_many("good", [{"d": 9}] * 3, queue="n9")
    rescued, failed = await claim_and_die("p", "n9")  # sticky is not claimed this time
    assert failed == [killer] and sorted(rescued) == sorted(fresh)
    assert "quarantined" in app.get_failed(killer).reason
    assert app.failed() == [app.get_failed(killer)]
    assert scalar(conn, "SELECT max(rescues) FROM pgqueue.jobs WHERE id <> %s", sticky) == 1


async def test_a_live_workers_lost_claim_is_rescued_without_blame(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    """A job whose lease expired while its worker kept heartbeating (the worker never knew it
    held it: a claim whose answer was lost) was not running there: no rescue is counted."""
    job = app.enqueue("t", {}, queue="r")
    await app.driver.register_worker(worker_id="live", queues=["r"], concurrency=1)
    for _ in range(QUARANTINE_AFTER + 1):
        assert [j.id for j in await app.driver.claim(["r"], 1, worker_id="live",
                                                     lease_s=60)] == [job]
        conn.execute("UPDATE pgqueue.jobs SET lease_expires_at = now() - interval '1 s'")
        await app.driver.heartbeat(worker_id="live", lease_s=60, job_ids=[])  # alive
        assert await app.driver.rescue_expired() == ([job], [])
    assert _rescues(conn, job) == 0
    assert app.failed() == []


async def test_a_dead_workers_jobs_come_back_spread_apart(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    """Jobs rescued together go back ``spread_s`` apart, the most-rescued last, so that they
    are not claimed together again."""
    ids = app.enqueue_many("t", [{} for _ in range(5)], queue="r")
    await app.driver.claim(["r"], 5, worker_id="dead", lease_s=60)
    conn.execute("UPDATE pgqueue.jobs SET rescues = 1 WHERE id = %s", (ids[0],))
    _die(conn, "dead")
    rescued, _ = await app.driver.rescue_expired(spread_s=10)
    assert sorted(rescued) == ids
    rows = conn.execute("SELECT id, extract(epoch FROM run_at - min(run_at) OVER ()) "
                        "FROM pgqueue.jobs ORDER BY run_at").fetchall()
    assert [r[0] for r in rows] == [*ids[1:], ids[0]]
    assert [round(float(r[1])) for r in rows] == [0, 10, 20, 30, 40]
