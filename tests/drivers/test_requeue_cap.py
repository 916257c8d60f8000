"""``Requeue.max_attempts`` raises a job's stored cap, never lowers it, on every driver (the
seam behind velocity's ``max_retries`` above a job's ``max_attempts``, issue 10 point 15)."""

from __future__ import annotations

import pgqueue
from pgqueue.drivers.base import Requeue

W = "cap-worker"


async def test_requeue_raises_max_attempts_and_never_lowers_it(driver_app: pgqueue.App) -> None:
    app, driver = driver_app, driver_app.driver
    job_id = app.enqueue("t", queue="q", max_attempts=2)
    [job] = await driver.claim(["q"], 1, worker_id=W, lease_s=60.0)
    await driver.requeue_many([Requeue(job_id, 0.0, attempt=1, max_attempts=4)], worker_id=W)
    [job] = await driver.claim(["q"], 1, worker_id=W, lease_s=60.0)
    assert (job.attempt, job.max_attempts) == (2, 4)
    await driver.requeue_many([Requeue(job_id, 0.0, attempt=2, max_attempts=3)], worker_id=W)
    [job] = await driver.claim(["q"], 1, worker_id=W, lease_s=60.0)
    assert (job.attempt, job.max_attempts) == (3, 4)
    await driver.requeue_many([Requeue(job_id, 0.0, attempt=3)], worker_id=W)
    if driver.capabilities.job_lookup:
        live = app.get_job(job_id)
        assert live is not None and live.max_attempts == 4
    else:
        [job] = await driver.claim(["q"], 1, worker_id=W, lease_s=60.0)
        assert (job.attempt, job.max_attempts) == (4, 4)
