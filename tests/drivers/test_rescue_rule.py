"""The rescue rule of :mod:`pgqueue.job` on every driver (postgres, memory, redis).

A rescue counts against a job only when its worker died holding it; the dead worker's jobs come
back spread apart; the job that kills its worker again and again is quarantined as the prime
suspect, and the jobs claimed alongside it are never punished for its deaths. Workers "die" here
by holding a short lease and never heartbeating; a live worker heartbeats after its lease ran out.
"""

from __future__ import annotations

import datetime as dt

import pgqueue
from pgqueue.job import QUARANTINE_AFTER, RESCUE_REASON, quarantine_reason_for
from tests.drivers.test_behaviour import claim, needs
from tests.helpers import eventually

LEASE = 0.05


async def _rescue_all(app: pgqueue.App, ids: set[int], **rule: float) -> tuple[set[int], set[int]]:
    """Rescue until every job of ``ids`` has been rescued (their short leases run out)."""
    requeued: set[int] = set()
    archived: set[int] = set()

    async def done() -> bool:
        r, f = await app.driver.rescue_expired(**rule)  # type: ignore[arg-type]
        requeued.update(r)
        archived.update(f)
        return ids <= requeued | archived

    await eventually(done, what=f"jobs {sorted(ids)} to be rescued")
    return requeued, archived


async def test_a_killer_is_quarantined_and_its_neighbours_flow(driver_app: pgqueue.App) -> None:
    needs(driver_app, "rescue", "the backend makes expired jobs claimable by itself")
    app = driver_app
    killer = app.enqueue("poison", {}, queue="p")
    sticky = app.enqueue("good", {}, queue="s")  # claimed with the killer at every death
    neighbours: list[int] = []
    for death in range(QUARANTINE_AFTER):
        fresh = app.enqueue_many("good", [{"d": death}] * 3, queue=f"n{death}")
        neighbours += fresh
        held = await claim(app, ["p", "s", f"n{death}"], 10, worker=f"dead-{death}",
                           lease_s=LEASE)
        assert {j.id for j in held} == {killer, sticky, *fresh}
        requeued, archived = await _rescue_all(app, {killer, sticky, *fresh}, spread_s=0)
        assert archived == set()  # a tie with sticky blames nobody yet
    fresh = app.enqueue_many("good", [{"d": 9}] * 3, queue="n9")
    neighbours += fresh
    await claim(app, ["p", "n9"], 10, worker="dead-9", lease_s=LEASE)
    requeued, archived = await _rescue_all(app, {killer, *fresh}, spread_s=0)
    assert archived == {killer} and requeued == set(fresh)

    failed = app.get_failed(killer)
    assert failed.reason == quarantine_reason_for(QUARANTINE_AFTER + 1)
    assert [e.error for e in failed.errors] == [RESCUE_REASON] * (QUARANTINE_AFTER + 1)
    assert [f.id for f in app.failed()] == [killer]
    for job_id in [sticky, *neighbours]:  # every neighbour waits again, unpunished
        job = app.get_job(job_id)
        assert job is not None and job.state == "waiting"


async def test_alone_on_its_dead_worker_quarantine_after_deaths(driver_app: pgqueue.App) -> None:
    needs(driver_app, "rescue", "the backend makes expired jobs claimable by itself")
    app = driver_app
    job_id = app.enqueue("poison", {}, queue="q", max_attempts=1)
    for death in range(1, QUARANTINE_AFTER + 1):
        assert [j.id for j in await claim(app, worker=f"w{death}", lease_s=LEASE)] == [job_id]
        requeued, archived = await _rescue_all(app, {job_id})
        assert (requeued, archived) == (({job_id}, set()) if death < QUARANTINE_AFTER
                                        else (set(), {job_id}))
    assert app.get_failed(job_id).reason == quarantine_reason_for(QUARANTINE_AFTER)


async def test_a_live_workers_expired_lease_is_not_blamed(driver_app: pgqueue.App) -> None:
    """The worker heartbeats after the job's lease ran out without listing it (a claim whose
    answer it never got): the job was not running there, the rescue does not count."""
    needs(driver_app, "rescue", "the backend makes expired jobs claimable by itself")
    app, driver = driver_app, driver_app.driver
    job_id = app.enqueue("t", {}, queue="q")
    await driver.register_worker(worker_id="live", queues=["q"], concurrency=1)
    for _ in range(QUARANTINE_AFTER + 2):
        assert [j.id for j in await claim(app, worker="live", lease_s=LEASE)] == [job_id]
        expiry = await driver.now() + dt.timedelta(seconds=LEASE)

        async def expired(expiry: dt.datetime = expiry) -> bool:
            return await driver.now() > expiry

        await eventually(expired, what="the lease to run out")
        await driver.heartbeat(worker_id="live", lease_s=60, job_ids=[])
        assert await driver.rescue_expired() == ([job_id], [])
    assert app.failed() == []


async def test_a_dead_workers_jobs_come_back_spread_apart(driver_app: pgqueue.App) -> None:
    needs(driver_app, "rescue", "the backend makes expired jobs claimable by itself")
    app = driver_app
    ids = app.enqueue_many("t", [{} for _ in range(4)], queue="q")
    await claim(app, limit=4, worker="dead", lease_s=LEASE)
    requeued, _ = await _rescue_all(app, set(ids), spread_s=30)
    assert requeued == set(ids)
    run_ats = []
    for job_id in ids:
        job = app.get_job(job_id)
        assert job is not None and job.run_at is not None
        run_ats.append(job.run_at)
    gaps = sorted(round((t - min(run_ats)).total_seconds()) for t in run_ats)
    assert gaps == [0, 30, 60, 90]
