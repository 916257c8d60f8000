"""Cancel polling: the fallback for cancel requests whose NOTIFY was missed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pgqueue._service import Clock, PeriodicService
from pgqueue.drivers.base import Driver

__all__ = ["CancelPoll"]


class CancelPoll(PeriodicService):
    """Every ``interval`` seconds, ask the database which of the jobs this worker holds
    (``held()``) were asked to stop, and call ``cancel(job_id)`` for each (a NOTIFY usually got
    there first). Holding none, it asks nothing."""

    name = "cancel-poll"

    def __init__(self, driver: Driver, *, worker_id: str, interval: float,
                 cancel: Callable[[int], None], held: Callable[[], Sequence[int]],
                 clock: Clock | None = None) -> None:
        super().__init__(interval=interval, clock=clock)
        self.driver = driver
        self.worker_id = worker_id
        self.cancel = cancel
        self.held = held

    async def tick(self) -> None:
        held = self.held()
        if not held:
            return
        for job_id in await self.driver.cancel_requested(worker_id=self.worker_id,
                                                         job_ids=held):
            self.cancel(job_id)
