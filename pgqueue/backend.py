"""What a queue backend declares and reports: :class:`Capabilities` and :class:`QueueStats`.

Public types (exported by :mod:`pgqueue`): ``App.driver.capabilities`` says what the chosen
driver can do, and ``App.stats()`` returns one :class:`QueueStats` per queue. The job rows
(:class:`~pgqueue.job.Job`, :class:`~pgqueue.job.FailedJob`) live in :mod:`pgqueue.job`.
``App.periodic_schedules()`` returns one :class:`ScheduleInfo` per periodic job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Capabilities", "QueueStats", "ScheduleInfo"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a driver can do. :class:`pgqueue.App` checks them (``conn=`` on a driver without
    ``transactional_enqueue`` raises :class:`pgqueue.CapabilityError`); the behavioural suite
    skips scenarios by them."""

    #: enqueue can join the caller's database transaction (``conn=``)
    transactional_enqueue: bool
    #: a handler can complete its job inside its own business transaction
    transactional_completion: bool
    #: several processes (and hosts) can share the queue
    cross_process: bool
    #: wake-ups are pushed (LISTEN/NOTIFY, pub/sub) rather than only polled
    push_wakeups: bool
    #: finished jobs are kept in a history
    history: bool
    #: per-job priorities are honoured across the whole queue (default True)
    priorities: bool = True
    #: per-job delays (run_at) are honoured (default True)
    delays: bool = True
    #: periodic jobs (:meth:`pgqueue.App.periodic`): each tick claimed once in a shared table,
    #: and the cluster leader's lease (default False: the App and the worker refuse schedules)
    periodic: bool = False


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for one queue (as the ``queue_stats`` view gives them). Every count defaults to 0
    and the times to None (no job to measure)."""

    queue: str
    paused: bool = False
    waiting: int = 0
    scheduled: int = 0
    running: int = 0
    failed: int = 0
    finished_last_hour: int = 0
    failed_last_hour: int = 0
    oldest_wait_s: float | None = None
    mean_run_time_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """One periodic job as the database knows it (a row of the ``periodic_schedules`` view).

    ``stale`` is true when the code of the workers that synced last no longer declares it (it
    never fires then); ``last_tick`` is the newest tick claimed (or, before the first one, when
    the schedule was first seen or resumed); ``next_tick`` the tick after it (None if unknown).
    """

    name: str
    spec: str
    timezone: str
    catch_up: str
    task: str
    queue: str
    paused: bool
    stale: bool
    last_tick: dt.datetime
    next_tick: dt.datetime | None
    last_fired_at: dt.datetime | None
    seen_at: dt.datetime
