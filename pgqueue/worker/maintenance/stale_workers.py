"""Stale workers: forget worker rows that stopped heartbeating long ago (on the leader only)."""

from __future__ import annotations

from collections.abc import Callable

from pgqueue._service import Clock, PeriodicService
from pgqueue.drivers.base import Driver

__all__ = ["StaleWorkers"]


class StaleWorkers(PeriodicService):
    """Every ``interval`` seconds, delete registry rows of workers silent for ``older_than_s``
    (their jobs are the rescuer's business; this only keeps the ``workers`` table true).

    A cluster-wide duty: it runs only while ``leader()`` is true (default: always, for a
    worker without a leader service).
    """

    name = "stale-workers"

    def __init__(self, driver: Driver, *, interval: float, older_than_s: float,
                 leader: Callable[[], bool] = lambda: True, clock: Clock | None = None) -> None:
        super().__init__(interval=interval, clock=clock)
        self.driver = driver
        self.older_than_s = older_than_s
        self.leader = leader

    async def tick(self) -> None:
        if self.leader():
            await self.driver.prune_workers(older_than_s=self.older_than_s)
