"""Scheduler: enqueue the jobs of periodic schedules, each tick exactly once per cluster.

Every worker runs a scheduler for the schedules its App declares (``--no-periodic`` opts a
worker out). Timers only decide *when to look*; the database decides *who fires*:

1. one read gives the database's clock and each schedule's ``last_tick`` (the newest tick
   claimed) and ``paused`` flag;
2. the due ticks are computed from the schedule (:meth:`pgqueue.periodic.Schedule.due`: cron or
   period, time zone, catch-up policy) against the **database's** clock, so clock skew between
   hosts does not matter;
3. one statement moves ``last_tick`` from the value read to the newest due tick (a
   compare-and-set) and inserts the ticks' jobs only if it did. Of several workers claiming the
   same tick, exactly one updates the row; the others update nothing and insert nothing.

A worker killed at any point either committed that statement (the tick fired) or did not (the
tick is still due, and another worker fires it on its next round), so no tick is lost or fired
twice. Between due ticks the scheduler does not query: it wakes when the next tick is due by
its estimate of the database's clock (and every ``sync_interval`` seconds to re-read, e.g. a
pause made elsewhere). Every ``sync_interval`` seconds it also records its declared schedules
(:meth:`Driver.sync_schedules`), which marks schedules no longer declared as stale.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

from pgqueue._service import Clock, PeriodicService
from pgqueue.drivers.base import Driver, ScheduleDef
from pgqueue.periodic import Schedule

__all__ = ["Scheduler", "scheduler_interval"]


def scheduler_interval(schedules: Mapping[str, Schedule], default: float = 1.0) -> float:
    """How often a scheduler looks: ``default`` seconds, or a quarter of the shortest
    ``every`` period when that is shorter (at least 0.05 s)."""
    periods = [s.every.total_seconds() for s in schedules.values() if s.every is not None]
    return max(0.05, min([default, *(p / 4 for p in periods)]))


class Scheduler(PeriodicService):
    """Fire the due ticks of ``schedules`` (see the module docstring).

    ``fired`` counts the jobs this worker enqueued, ``lost`` the claims another worker won.
    """

    name = "scheduler"

    def __init__(self, driver: Driver, *, schedules: Mapping[str, Schedule],
                 interval: float | None = None, sync_interval: float = 60.0,
                 clock: Clock | None = None) -> None:
        interval = interval or scheduler_interval(schedules)
        super().__init__(interval=interval, max_backoff=max(interval, 5.0), clock=clock)
        self.driver = driver
        self.schedules = dict(schedules)
        self.sync_interval = sync_interval
        self.fired = 0
        self.lost = 0
        self._synced_at = -math.inf
        self._look_at = -math.inf  # monotonic time of the next read

    async def tick(self) -> None:
        now = self.clock.monotonic()
        if now - self._synced_at >= self.sync_interval:
            await self.sync()
        elif now < self._look_at:
            return
        await self.fire_due()

    async def sync(self) -> None:
        """Record this worker's schedules (new ones start at their next tick)."""
        started = self.clock.monotonic()
        wall = self.clock.now()
        await self.driver.sync_schedules([
            ScheduleDef(s.name, s.spec, s.timezone, s.catch_up, s.job, s.next_after(wall))
            for s in self.schedules.values()])
        self._synced_at = started

    async def fire_due(self) -> None:
        """Read the schedules' state, claim every due tick, and plan the next read."""
        started = self.clock.monotonic()
        db_now, states = await self.driver.schedule_states(list(self.schedules))
        if len(states) < len(self.schedules):  # a row vanished (e.g. deleted by hand)
            self._synced_at = -math.inf
        next_due: dt.datetime | None = None
        for name, schedule in self.schedules.items():
            state = states.get(name)
            if state is None or state.paused:
                continue
            fire, new_last = schedule.due(state.last_tick, db_now)
            last = state.last_tick
            if new_last is not None:
                following = schedule.next_after(new_last)
                ids = await self.driver.claim_ticks(
                    name, expected=state.last_tick, new_last=new_last, next_tick=following,
                    jobs=[schedule.job_for(t) for t in fire])
                if ids is None:
                    self.lost += 1
                    self._look_at = -math.inf  # someone else moved it: read again next round
                    return
                self.fired += len(ids)
                if ids:
                    self.log.debug("schedule %s: enqueued %d jobs (ticks up to %s)", name,
                                   len(ids), new_last.isoformat(),
                                   extra={"event": "periodic_fired", "schedule": name})
                last = new_last
            upcoming = schedule.next_after(max(last, db_now))
            if upcoming is not None and (next_due is None or upcoming < next_due):
                next_due = upcoming
        wait = self.sync_interval
        if next_due is not None:
            wait = min(wait, (next_due - db_now).total_seconds())
        self._look_at = started + max(0.0, wait)
