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

from pgqueue.errors import ValidationError

__all__ = ["Capabilities", "QueueLimits", "QueueStats", "ScheduleInfo"]


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
    #: flow control (:meth:`pgqueue.App.queue` limits and ``concurrency_key``) enforced across
    #: every worker (default False: the App refuses limits and concurrency keys)
    flow_control: bool = False
    #: workflows: ``depends_on``, ``chain``/``group``, :class:`pgqueue.Await`, ``App.result``,
    #: durable steps (default False: the App refuses them with :class:`pgqueue.CapabilityError`)
    workflows: bool = False
    #: the longest delay (``delay``/``run_at``, seconds) honoured; None: no limit. The App
    #: refuses a longer one (SQS: 900)
    max_delay_s: float | None = None
    #: a pause is stored for every worker (:meth:`pgqueue.App.pause`; default True)
    shared_pause: bool = True
    #: a live job can be read and cancelled by id (``get_job``, ``cancel``; default True)
    job_lookup: bool = True
    #: ``unique_key`` is honoured (default True; else the App refuses it)
    unique_keys: bool = True
    #: counts and sizes are exact (default True; SQS's are approximate)
    exact_counts: bool = True
    #: every attempt's error is kept with the job (default True; else only the error that
    #: archived it, and those recorded before a snooze or a re-drive)
    attempt_errors: bool = True
    #: expired leases are rescued by pgqueue (``rescue_expired``, with the reason recorded;
    #: default True); False: the backend makes the job claimable again by itself (SQS's
    #: visibility timeout)
    rescue: bool = True
    #: ``clear`` leaves running jobs alone (default True; SQS's PurgeQueue deletes them too)
    clear_spares_running: bool = True
    #: jobs of one priority are claimed in the order they were enqueued (default True; SQS
    #: standard queues: roughly, not guaranteed)
    fifo: bool = True
    #: a job is claimed by one worker at a time until its lease ends (default True; SQS
    #: standard queues deliver at least once: now and then a message goes to two receivers)
    exclusive_claims: bool = True


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
    #: the queue's limits (None: no limit), see :class:`QueueLimits`
    concurrency: int | None = None
    key_concurrency: int | None = None
    rate_limit: int | None = None
    rate_period_s: float | None = None
    key_rate_limit: int | None = None
    key_rate_period_s: float | None = None
    #: running jobs counted against ``concurrency`` (None without that limit)
    slots_in_use: int | None = None
    #: starts within the current rate period (0 without a rate limit)
    rate_used: int = 0
    #: ready jobs held back by a limit (full slots, used-up rate, or their key at its limit):
    #: not waiting for a worker
    waiting_for_limit: int = 0


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


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Flow-control limits of one queue, enforced by the claim across every worker process
    and host (None: no such limit). Declare them with :meth:`pgqueue.App.queue`, or set them at
    run time (``pgqueue queue NAME --concurrency 10``, :meth:`pgqueue.App.set_queue_limits`).

    - ``concurrency``: at most this many running jobs of the queue at once.
    - ``key_concurrency``: at most this many running jobs per ``concurrency_key`` (an enqueue
      option); jobs with a key are capped at 1 per key when neither this nor
      ``key_rate_limit`` is set (with only ``key_rate_limit``, a key's running jobs are not
      capped).
    - ``rate_limit`` / ``rate_period_s``: at most ``rate_limit`` job starts in any window of
      ``rate_period_s`` seconds. A held-back job waits; it is not failed, its attempt not counted.
    - ``key_rate_limit`` / ``key_rate_period_s``: the same per ``concurrency_key`` (jobs without
      a key are not bound by it).

    Example: ``QueueLimits(concurrency=10, rate_limit=50, rate_period_s=1.0)``. Build checked
    ones with :meth:`checked`.
    """

    concurrency: int | None = None
    key_concurrency: int | None = None
    rate_limit: int | None = None
    rate_period_s: float | None = None
    key_rate_limit: int | None = None
    key_rate_period_s: float | None = None

    @property
    def any(self) -> bool:
        """Whether any limit is set."""
        return any(v is not None for v in (self.concurrency, self.key_concurrency,
                                           self.rate_limit, self.key_rate_limit))

    @classmethod
    def checked(cls, queue: str, *, concurrency: object = None, key_concurrency: object = None,
                rate_limit: object = None, rate_period: object = None,
                key_rate_limit: object = None, key_rate_period: object = None) -> QueueLimits:
        """Validated limits of ``queue``: each limit a positive integer or None, each period
        positive seconds (a number or ``timedelta``; default 1 second when its limit is set).
        Raises :class:`pgqueue.ValidationError` naming the queue otherwise."""
        def count(name: str, value: object) -> int | None:
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"queue {queue!r}: {name} must be a positive integer "
                                      f"(or None for no limit), got {value!r}")
            return value

        def rate(name: str, limit: object, value: object) -> tuple[int | None, float | None]:
            n = count(f"{name}_limit", limit)
            if value is None:
                return n, (1.0 if n is not None else None)
            if isinstance(value, dt.timedelta):
                value = value.total_seconds()
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not value > 0 or value == float("inf")):
                raise ValidationError(f"queue {queue!r}: {name}_period must be a positive "
                                      f"number of seconds or a timedelta, got {value!r}")
            if n is None:
                raise ValidationError(f"queue {queue!r}: {name}_period needs {name}_limit "
                                      "(starts per period)")
            return n, float(value)

        per_queue = rate("rate", rate_limit, rate_period)
        per_key = rate("key_rate", key_rate_limit, key_rate_period)
        return cls(count("concurrency", concurrency), count("key_concurrency", key_concurrency),
                   *per_queue, *per_key)
