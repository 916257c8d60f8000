"""Vacuum: keep the jobs table small when dead rows pile up faster than autovacuum clears
them (claims and completions update and delete every job row), and its planner statistics
fresh when a burst of jobs outgrows them (the sessions' cached plans were made for the table
as it was)."""

from __future__ import annotations

from pgqueue._service import Clock, PeriodicService
from pgqueue.drivers.base import Driver

__all__ = ["Vacuum"]


class Vacuum(PeriodicService):
    """Every ``interval`` seconds, ask the driver to vacuum the jobs table if it holds many dead
    rows, or to analyze it if it outgrew its statistics (the driver lets one worker at a time
    do it, under the ``vacuum`` lease)."""

    name = "vacuum"

    def __init__(self, driver: Driver, *, interval: float, clock: Clock | None = None) -> None:
        super().__init__(interval=interval, clock=clock)
        self.driver = driver
        self.vacuums = 0

    async def tick(self) -> None:
        if await self.driver.vacuum_if_needed():
            self.vacuums += 1
            self.log.info("vacuumed or analyzed the jobs table", extra={"event": "vacuum"})
