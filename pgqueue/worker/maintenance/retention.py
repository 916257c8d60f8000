"""Retention: drop old history (and, if asked, old failed jobs), on the leader only."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

from pgqueue._service import Clock, PeriodicService
from pgqueue.drivers.base import Driver

__all__ = ["DEFAULT_HISTORY_RETENTION", "Retention"]

#: how long finished jobs stay in ``job_history`` unless the worker is told otherwise
DEFAULT_HISTORY_RETENTION = dt.timedelta(days=14)


class Retention(PeriodicService):
    """Every ``every`` seconds (default hourly), on the cluster leader only (checked every
    ``interval`` seconds, so a new leader runs it at once):

    - drop the daily ``job_history`` partitions whose day ended more than ``history_s``
      seconds ago by the database's clock (whole partitions: a catalogue operation, no DELETE
      and no bloat; the day that straddles the cutoff is kept whole), and delete the few older
      rows of the default partition;
    - if ``failed_s`` is set, delete archived (failed) jobs that failed more than ``failed_s``
      seconds ago; by default the archive is kept until purged (``pgqueue failed purge``).

    ``dropped`` and ``purged`` count what it removed.
    """

    name = "retention"

    def __init__(self, driver: Driver, *, leader: Callable[[], bool], history_s: float | None,
                 failed_s: float | None = None, every: float = 3600.0, interval: float = 60.0,
                 clock: Clock | None = None) -> None:
        super().__init__(interval=min(interval, every), max_backoff=every, clock=clock)
        self.every = every
        self._ran_at = -math.inf
        self.driver = driver
        self.leader = leader
        self.history_s = history_s
        self.failed_s = failed_s
        self.dropped = 0
        self.purged = 0

    async def tick(self) -> None:
        if not self.leader():
            self._ran_at = -math.inf  # run at once when this worker becomes the leader
            return
        if self.clock.monotonic() - self._ran_at < self.every:
            return
        self._ran_at = self.clock.monotonic()
        if self.history_s is not None:
            dropped = await self.driver.drop_history(older_than_s=self.history_s)
            if dropped:
                self.dropped += dropped
                self.log.info("dropped %d history partitions older than %s", dropped,
                              dt.timedelta(seconds=self.history_s),
                              extra={"event": "retention"})
        if self.failed_s is not None:
            cutoff = await self.driver.now() - dt.timedelta(seconds=self.failed_s)
            purged = await self.driver.purge_failed_async(None, cutoff)
            if purged:
                self.purged += purged
                self.log.info("deleted %d failed jobs older than %s", purged,
                              dt.timedelta(seconds=self.failed_s),
                              extra={"event": "retention"})
