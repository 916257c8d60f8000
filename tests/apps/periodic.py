"""An application with a per-second periodic job, for tests that run workers as processes.

Run as ``python -m tests.apps.periodic`` (``PGQUEUE_DATABASE_URL`` names the database): a worker
on the queue ``idle`` (so the periodic jobs stay in ``jobs`` for the test to count them, with
their tick in ``meta``), with the leader lease period of ``PGQUEUE_TEST_LEADER_LEASE`` seconds
(default 30).
"""

from __future__ import annotations

import datetime as dt
import os

import pgqueue

app = pgqueue.App()


@app.periodic(every=dt.timedelta(seconds=1), name="every-second", queue="ticks")
def every_second() -> None:
    """Nothing: the test counts the jobs, not their runs."""


if __name__ == "__main__":
    lease = float(os.environ.get("PGQUEUE_TEST_LEADER_LEASE", "30"))
    raise SystemExit(app.worker(["idle"], poll_interval=0.5, leader_lease_s=lease)
                     .run_forever())
