"""Heartbeat: extend the leases of the jobs this worker holds, so nobody rescues them."""

from __future__ import annotations

from collections.abc import Callable

from pgqueue._service import Clock, PeriodicService
from pgqueue.drivers.base import Driver

__all__ = ["Heartbeat"]


class Heartbeat(PeriodicService):
    """Every ``interval`` seconds (a third of the lease at most), extend the lease of every job
    in ``held()`` -- running, or with an outcome not yet written -- and the worker's own row.

    A failing heartbeat is retried at the same interval (no backoff beyond it): the lease runs
    out if it stays down, and then the jobs are rescued, which is the point of the lease.
    """

    name = "heartbeat"

    def __init__(self, driver: Driver, *, worker_id: str, lease_s: float,
                 held: Callable[[], list[int]], clock: Clock | None = None) -> None:
        interval = max(0.1, min(lease_s / 3, 2.0))
        super().__init__(interval=interval, max_backoff=interval, clock=clock)
        self.driver = driver
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.held = held

    async def tick(self) -> None:
        await self.driver.heartbeat(worker_id=self.worker_id, lease_s=self.lease_s,
                                    job_ids=self.held())
