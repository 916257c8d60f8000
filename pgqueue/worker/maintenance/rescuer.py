"""Rescue: put back the jobs of workers whose leases expired (crashed, frozen, cut off)."""

from __future__ import annotations

from pgqueue._service import Clock, PeriodicService
from pgqueue.drivers.base import Driver
from pgqueue.job import QUARANTINE_AFTER, RESCUE_SPREAD_S

__all__ = ["Rescuer"]


class Rescuer(PeriodicService):
    """Every ``interval`` seconds, rescue running jobs whose lease has expired.

    Any worker may rescue (the driver's rescue takes each job once, ``SKIP LOCKED``). The rule
    is :mod:`pgqueue.job`'s: a rescued job goes back to waiting, the jobs of one dead worker
    ``spread_s`` seconds apart; a rescue counts against a job only when its worker died while
    holding it, and a job that its worker died running ``quarantine_after`` times, each time the
    prime suspect among that worker's jobs, is quarantined to the archive
    (:data:`pgqueue.job.QUARANTINE_REASON`) while the jobs claimed alongside it flow on.
    ``rescued`` counts every rescued job, ``quarantined`` those archived.
    """

    name = "rescuer"

    def __init__(self, driver: Driver, *, interval: float, clock: Clock | None = None,
                 quarantine_after: int = QUARANTINE_AFTER,
                 spread_s: float = RESCUE_SPREAD_S) -> None:
        super().__init__(interval=interval, clock=clock)
        self.driver = driver
        self.quarantine_after = quarantine_after
        self.spread_s = spread_s
        self.rescued = 0
        self.quarantined = 0

    async def tick(self) -> None:
        rescued, failed = await self.driver.rescue_expired(
            quarantine_after=self.quarantine_after, spread_s=self.spread_s)
        self.rescued += len(rescued) + len(failed)
        if rescued:
            self.log.warning("rescued %d jobs of dead workers", len(rescued),
                             extra={"event": "rescue"})
        if failed:
            self.quarantined += len(failed)
            self.log.error("quarantined %d jobs whose worker process died under them "
                           "%d times or more: %s", len(failed), self.quarantine_after,
                           ", ".join(map(str, failed)), extra={"event": "quarantine"})
