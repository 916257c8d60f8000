"""Rescue: put back the jobs of workers whose leases expired (crashed, frozen, cut off)."""

from __future__ import annotations

from pgqueue._service import Clock, PeriodicService
from pgqueue.drivers.base import Driver

__all__ = ["Rescuer"]


class Rescuer(PeriodicService):
    """Every ``interval`` seconds, rescue running jobs whose lease has expired.

    Any worker may rescue (the driver's rescue takes each job once, ``SKIP LOCKED``); a rescue
    counts the attempt, and a job on its last attempt goes to the archive with the rescue
    reason defined in :mod:`pgqueue.job`.
    """

    name = "rescuer"

    def __init__(self, driver: Driver, *, interval: float, clock: Clock | None = None) -> None:
        super().__init__(interval=interval, clock=clock)
        self.driver = driver
        self.rescued = 0

    async def tick(self) -> None:
        rescued, failed = await self.driver.rescue_expired()
        if rescued or failed:
            self.rescued += len(rescued) + len(failed)
            self.log.warning("rescued %d jobs of dead workers (%d archived as poison)",
                             len(rescued), len(failed), extra={"event": "rescue"})
