"""Leader: one worker of the cluster holds a lease row and runs the cluster-wide duties.

The lease is a row with an expiry in the ``leases`` table (not a session advisory lock: it works
behind PgBouncer in transaction mode, and a dead holder's lease simply runs out). Every worker
runs this service; each round, the holder renews the lease and the others try to take it, which
they can only once it has expired.

Timing, for a lease period ``P`` (default: the worker's job lease, 30 s): the row is written with
an expiry of ``3P/4`` and every worker tries every ``P/4``. A leader that dies stops renewing;
its lease runs out at most ``3P/4`` after its last renewal, and another worker's next try comes
at most ``P/4`` after that: leadership moves within one lease period ``P``. A live leader
survives two failed renewals in a row before it loses the lease.

:meth:`Leader.is_leader` is conservative: it is true only until ``3P/4`` (on this worker's
monotonic clock) after the start of the last successful renewal, so a leader cut off from the
database stops leading before anyone else can take over. Duties that must run once per cluster
(retention, pruning the worker registry) check it on every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

from pgqueue._service import Clock, PeriodicService
from pgqueue.drivers.base import Driver
from pgqueue.errors import PgQueueError

__all__ = ["LEADER_LEASE", "Leader"]

#: the name of the cluster leader's lease row
LEADER_LEASE = "leader"


class Leader(PeriodicService):
    """Take, renew and (on stop) give up the cluster leader's lease; see the module docstring.

    ``changed`` is set whenever this worker becomes or stops being the leader (a test or a
    supervisor can await it); ``terms`` counts how often it became the leader.
    """

    name = "leader"

    def __init__(self, driver: Driver, *, worker_id: str, period_s: float,
                 clock: Clock | None = None) -> None:
        if not period_s > 0:
            raise ValueError(f"leader lease period must be positive, not {period_s!r}")
        super().__init__(interval=period_s / 4, max_backoff=period_s / 4, clock=clock)
        self.driver = driver
        self.worker_id = worker_id
        self.period_s = float(period_s)
        self.ttl_s = self.period_s * 3 / 4
        self.terms = 0
        self.changed = asyncio.Event()
        self._until = -math.inf

    def is_leader(self) -> bool:
        """True while this worker holds the lease (by its own clock, conservatively)."""
        return self.clock.monotonic() < self._until

    async def tick(self) -> None:
        started = self.clock.monotonic()
        was = self.is_leader()
        try:
            won = await self.driver.acquire_lease(LEADER_LEASE, holder=self.worker_id,
                                                  ttl_s=self.ttl_s)
        except BaseException:
            if was and not self.is_leader():
                self._lost()
            raise
        self._until = started + self.ttl_s if won else -math.inf
        if won and not was:
            self.terms += 1
            self.log.info("worker %s is now the leader", self.worker_id,
                          extra={"event": "leader_elected"})
            self.changed.set()
        elif was and not won:
            self._lost()

    def _lost(self) -> None:
        self.log.warning("worker %s is no longer the leader", self.worker_id,
                         extra={"event": "leader_lost"})
        self._until = -math.inf
        self.changed.set()

    async def stop(self) -> None:
        """Stop, and give the lease up if held, so another worker takes over at once."""
        leading = self.is_leader()
        await super().stop()
        if leading:
            self._until = -math.inf
            with contextlib.suppress(PgQueueError):
                await self.driver.release_lease(LEADER_LEASE, holder=self.worker_id)
