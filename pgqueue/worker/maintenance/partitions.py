"""History partitions: make sure the coming days' ``job_history`` partitions exist."""

from __future__ import annotations

from pgqueue._service import Clock, PeriodicService
from pgqueue.drivers.base import Driver

__all__ = ["Partitions"]


class Partitions(PeriodicService):
    """At start and every hour, create the ``job_history`` partitions of the next ``days``
    days (rows of a day without its partition land in the default partition)."""

    name = "partitions"

    def __init__(self, driver: Driver, *, days: int = 7, interval: float = 3600.0,
                 clock: Clock | None = None) -> None:
        super().__init__(interval=interval, max_backoff=interval, clock=clock)
        self.driver = driver
        self.days = days

    async def tick(self) -> None:
        await self.driver.ensure_partitions(self.days)
