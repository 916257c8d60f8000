"""Summary: one INFO line now and then with what the worker did."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from pgqueue._service import Clock, PeriodicService

__all__ = ["Summary"]


class Summary(PeriodicService):
    """Every ``interval`` seconds, log the outcomes counted since the last line and the number
    of running jobs (``worker <id>: last 60 s {'succeeded': 12}, running 3``)."""

    name = "summary"

    def __init__(self, *, worker_id: str, interval: float, counts: Callable[[], Mapping[str, int]],
                 running: Callable[[], int], clock: Clock | None = None) -> None:
        super().__init__(interval=interval, first_delay=interval, clock=clock,
                         logger=logging.getLogger("pgqueue.worker"))
        self.worker_id = worker_id
        self.counts = counts
        self.running = running
        self._last = dict(counts())
        self._since = self.clock.monotonic()

    async def tick(self) -> None:
        now, counts = self.clock.monotonic(), dict(self.counts())
        delta = {k: v - self._last.get(k, 0) for k, v in counts.items()
                 if v - self._last.get(k, 0)}
        self.log.info("worker %s: last %.0f s %s, running %d", self.worker_id, now - self._since,
                      delta or "idle", self.running(), extra={"event": "summary", **delta})
        self._last, self._since = counts, now
