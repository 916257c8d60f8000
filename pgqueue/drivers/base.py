"""The driver seam: whole queue operations that every backend implements.

**Internal, not covered by semver**: applications use :class:`pgqueue.App`; the seam may change
in any release. The public types it returns live in :mod:`pgqueue.job` (``Job``, ``FailedJob``,
``FinishedJob``, ``AttemptError``) and :mod:`pgqueue.backend` (``Capabilities``,
``QueueStats``) and are re-exported here for the drivers.

A driver never offers ``execute(sql)``. It offers operations -- insert many jobs, claim a batch,
finish many, requeue many, archive, pause -- each taking plain values or a params object and
returning typed rows. The PostgreSQL driver implements all of them; weaker drivers (memory,
redis) implement them within their limits and say what they cannot do in :class:`Capabilities`.
The behavioural suite in ``tests/drivers/`` runs the same scenarios against every driver and
skips only by these flags.

Operations used by applications come in a sync and an ``_async`` form; operations used only by
the worker runtime are async. Drivers write each operation once: the PostgreSQL driver builds it
as a statement plan run by a sync or an async executor; the memory and redis drivers write the
sync form and generate the async twin with :func:`async_twin`.

Outcome policy is not decided here: what each outcome does (:data:`pgqueue.job.OUTCOMES`), the
attempt-error record (:class:`pgqueue.job.AttemptError`) and the rescue rule (its reasons, limit
and spread: parameters of :meth:`Driver.rescue_expired`) come from
:mod:`pgqueue.job`. Capabilities are checked once, by :class:`pgqueue.App`: a driver is not
asked to do what its :class:`Capabilities` deny (``conn=`` on a driver without
``transactional_enqueue`` never reaches it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, runtime_checkable

from pgqueue.backend import Capabilities, QueueLimits, QueueStats, ScheduleInfo
from pgqueue.errors import CapabilityError
from pgqueue.job import (
    QUARANTINE_AFTER,
    QUARANTINE_REASON,
    RESCUE_REASON,
    RESCUE_SPREAD_S,
    AttemptError,
    FailedJob,
    FinishedJob,
    Job,
    NewJob,
    WorkflowJob,
)

__all__ = [
    "DEP_CANCEL_REASON",
    "DEP_FAIL_REASON",
    "FINAL_STATES",
    "RESULT_POLL_S",
    "Capabilities",
    "Driver",
    "FailedJob",
    "FinalOutcome",
    "Finish",
    "FinishedJob",
    "NoDatabaseMixin",
    "QueueLimits",
    "QueueStats",
    "Requeue",
    "ScheduleDef",
    "ScheduleInfo",
    "ScheduleState",
    "WakeCallback",
    "WorkflowJob",
    "async_twin",
    "mean_run_time",
]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(slots=True)
class Finish:
    """A job that left the live set for history: ``succeeded`` or ``cancelled``. (Not frozen:
    one is made per finished job, and a frozen dataclass's ``__init__`` costs about four times
    as much.)"""

    job_id: int
    state: str = "succeeded"
    result_json: str | None = None
    #: the claimed attempt this outcome belongs to (None: do not check)
    attempt: int | None = None


#: The error recorded on a dependent cancelled because a dependency failed or was cancelled
#: (policy ``cancel``), and the archive reason of one failed for it (policy ``fail``).
DEP_CANCEL_REASON = "cancelled: a job it depends on failed or was cancelled"
DEP_FAIL_REASON = "failed: a job it depends on failed or was cancelled"

#: The states in which a job has finished for good.
FINAL_STATES = frozenset({"succeeded", "cancelled", "failed"})

#: ``App.result`` waits for a NOTIFY, and looks again at least this often (seconds) in case
#: a notification was lost (a dropped connection).
RESULT_POLL_S = 2.0


@dataclass(frozen=True, slots=True)
class FinalOutcome:
    """How a job ended (for ``App.result``): its final state, its result (succeeded), and its
    last error or archive reason (failed, cancelled)."""

    state: str
    result: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Requeue:
    """A running job to put back to waiting after ``delay_s``.

    ``count_attempt`` is false for a snooze or a shutdown release; ``error`` is appended to the
    job's errors (a retry). ``snooze`` true adds one to the job's ``snoozes`` count.
    ``max_attempts`` (when set) raises the job's stored ``max_attempts`` to at least this value
    (a worker allowing more attempts than the job was enqueued with, e.g. velocity's
    ``max_retries``); it never lowers it.
    """

    job_id: int
    delay_s: float = 0.0
    count_attempt: bool = True
    error: AttemptError | None = None
    #: the claimed attempt this outcome belongs to (None: do not check)
    attempt: int | None = None
    #: a :class:`pgqueue.Snooze`: count it in the job's ``snoozes``
    snooze: bool = False
    #: raise the job's ``max_attempts`` to at least this (None: leave it)
    max_attempts: int | None = None


@dataclass(frozen=True, slots=True)
class ScheduleDef:
    """A periodic job as a worker declares it to the driver (from a
    :class:`pgqueue.periodic.Schedule`): what to show, and the job ``run-now`` enqueues."""

    name: str
    spec: str
    timezone: str
    catch_up: str
    job: NewJob
    #: the first tick after now, for display until the first claim
    next_tick: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A schedule's claimed state: the newest tick claimed, and whether it is paused."""

    last_tick: dt.datetime
    paused: bool


#: Called by a driver's listener, on the worker's event loop: ``(kind, payload)`` where kind is
#: ``"job"`` (payload: queue name) or ``"control"`` (payload: dict with ``op``).
WakeCallback = Callable[[str, Any], None]


@runtime_checkable
class Listener(Protocol):
    """Pushes wake-ups to a worker until stopped; reconnects by itself. A service
    (:class:`pgqueue._service.Service`): ``start``/``stop`` and ``started``/``stopped``."""

    started: asyncio.Event
    stopped: asyncio.Event

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Driver(Protocol):
    """The operations a queue backend provides. Internal: applications use :class:`pgqueue.App`.

    ``conn`` arguments are the caller's own connection or session. :class:`pgqueue.App` passes
    one only to drivers with ``transactional_enqueue`` (others ignore it).
    """

    name: str
    capabilities: Capabilities

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None: ...
    async def aclose(self) -> None: ...
    def check(self) -> None:
        """Raise a clear :class:`pgqueue.PgQueueError` if the backend is unusable (down, not
        migrated)."""

    # -- enqueue ------------------------------------------------------------------------------
    def insert_many(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[int]: ...
    async def insert_many_async(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[int]: ...

    # -- worker ---------------------------------------------------------------------------------
    async def claim(self, queues: Sequence[str], limit: int, *, worker_id: str,
                    lease_s: float) -> list[Job]: ...
    async def finish_many(self, items: Sequence[Finish], *, worker_id: str) -> list[int]: ...
    async def requeue_many(self, items: Sequence[Requeue], *, worker_id: str) -> list[int]: ...
    async def archive(self, job_id: int, *, worker_id: str, error: AttemptError,
                      reason: str, attempt: int | None = None) -> bool: ...
    async def next_run_at(self, queues: Sequence[str], *,
                          worker_id: str | None = None) -> dt.datetime | None:
        """When a claim of ``queues`` may next take a job (None: nothing waits). With
        ``worker_id``, the worker that will sleep until then: a driver may answer from where
        that worker's claims read (PostgreSQL's claim cursor) with a time no later than its
        next full look; without, the answer is exact (a burst worker decides on it to stop)."""
    def limits_hold(self, queues: Sequence[str]) -> bool:
        """Whether flow-control limits may hold back ready jobs of ``queues`` (so that a
        written outcome, which frees a limit's slot, is worth another claim); from what the
        driver's last claim saw, without I/O."""
    async def register_worker(self, *, worker_id: str, queues: Sequence[str],
                              concurrency: int) -> None: ...
    async def unregister_worker(self, *, worker_id: str) -> None: ...
    async def heartbeat(self, *, worker_id: str, lease_s: float,
                        job_ids: Sequence[int]) -> None: ...
    async def rescue_expired(self, *, limit: int = 1000, reason: str = RESCUE_REASON,
                             quarantine_after: int = QUARANTINE_AFTER,
                             quarantine_reason: str = QUARANTINE_REASON,
                             spread_s: float = RESCUE_SPREAD_S) -> tuple[list[int], list[int]]:
        """Rescue up to ``limit`` running jobs whose lease expired, atomically, by the rule of
        :mod:`pgqueue.job`: each gets an :class:`~pgqueue.job.AttemptError` with ``reason``; when
        its worker died (:func:`~pgqueue.job.rescue_counts`) its ``rescues`` count goes up and
        the dead worker's jobs go back ``spread_s`` seconds apart (most-rescued last); a job the
        rule quarantines (:func:`~pgqueue.job.rescue_quarantines` with ``quarantine_after``) goes
        to the archive with ``quarantine_reason`` (``{n}`` replaced by its count). Returns
        (requeued ids, quarantined ids)."""
    async def cancel_requested(self, *, worker_id: str,
                               job_ids: Sequence[int] | None = None) -> list[int]:
        """Which of ``worker_id``'s running jobs were asked to stop; with ``job_ids`` (the
        jobs the worker holds), only among those, which a driver may then read by id."""
    async def prune_workers(self, *, older_than_s: float) -> None: ...
    async def ensure_partitions(self, days: int = 7) -> None: ...
    async def vacuum_if_needed(self, *, min_dead: int = 20_000, dead_ratio: float = 0.1,
                               min_growth: int = 256, growth_ratio: float = 4.0) -> bool:
        """Keep the store's tables fit for the hot statements (PostgreSQL: VACUUM when dead
        rows pile up, ANALYZE when the table outgrew its planner statistics); whether it did."""
    def finish_in_transaction(self, conn: Any, job_id: int, *, worker_id: str,
                              result_json: str | None = None,
                              attempt: int | None = None) -> bool: ...
    async def finish_in_transaction_async(self, conn: Any, job_id: int, *, worker_id: str,
                                          result_json: str | None = None,
                                          attempt: int | None = None) -> bool: ...
    async def now(self) -> dt.datetime: ...
    def listener(self, callback: WakeCallback) -> Listener | None: ...

    # -- periodic jobs and the cluster leader (capability ``periodic``) -------------------------
    async def sync_schedules(self, schedules: Sequence[ScheduleDef]) -> None:
        """Record the schedules a worker declares (new ones start at their next tick) and mark
        every other recorded schedule stale."""
    async def schedule_states(self, names: Sequence[str],
                              ) -> tuple[dt.datetime, dict[str, ScheduleState]]:
        """The backend's clock and the claimed state of each named schedule it knows."""
    async def claim_ticks(self, name: str, *, expected: dt.datetime, new_last: dt.datetime,
                          next_tick: dt.datetime | None, jobs: Sequence[NewJob],
                          ) -> list[int] | None:
        """Compare-and-set ``last_tick`` from ``expected`` to ``new_last`` and insert ``jobs``,
        atomically; their ids, or None if another worker claimed first (or it is paused)."""
    async def acquire_lease(self, name: str, *, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl_s`` seconds; True if ``holder`` holds it."""
    async def release_lease(self, name: str, *, holder: str) -> None: ...
    async def drop_history(self, *, older_than_s: float) -> int:
        """Drop history older than ``older_than_s`` (whole daily partitions on PostgreSQL);
        returns the number of partitions dropped."""
    def list_schedules(self) -> list[ScheduleInfo]: ...
    async def list_schedules_async(self) -> list[ScheduleInfo]: ...
    def set_schedule_paused(self, name: str, paused: bool) -> bool: ...
    async def set_schedule_paused_async(self, name: str, paused: bool) -> bool: ...
    def run_schedule_now(self, name: str) -> int | None: ...
    async def run_schedule_now_async(self, name: str) -> int | None: ...

    # -- workflows (capability ``workflows``; the App refuses them otherwise) --------------------
    async def park(self, job_id: int, *, worker_id: str, attempt: int | None,
                   awaited: Sequence[int]) -> tuple[bool, list[int]]:
        """Park a running job until the jobs ``awaited`` have finished (``Await``): blocked,
        attempt given back. Returns (parked, the awaited ids that do not exist: then nothing
        changed)."""
    def wait_result(self, job_id: int, timeout_s: float | None) -> FinalOutcome | None:
        """Wait until the job has finished; its outcome, or None at the timeout. Raises
        :class:`pgqueue.JobNotFoundError` for an unknown id."""
    async def wait_result_async(self, job_id: int,
                                timeout_s: float | None) -> FinalOutcome | None: ...
    def workflow(self, workflow_id: str) -> list[WorkflowJob]: ...
    async def workflow_async(self, workflow_id: str) -> list[WorkflowJob]: ...
    def get_step(self, job_id: int, name: str, *, conn: Any = None) -> tuple[str, Any] | None:
        """A durable step's checkpoint (function name, result), or None."""
    def put_step(self, job_id: int, name: str, fn: str, result_json: str, *,
                 conn: Any = None) -> None:
        """Write a durable step's checkpoint (in ``conn``'s transaction when given)."""

    # -- queue control (sync and async) ---------------------------------------------------------
    def set_paused(self, queue: str, paused: bool) -> None: ...
    async def set_paused_async(self, queue: str, paused: bool) -> None: ...
    def paused_queues(self) -> set[str]: ...
    async def paused_queues_async(self) -> set[str]: ...
    def forget_queue(self, queue: str) -> bool:
        """Drop what is stored about a queue (its pause state, its listing in the stats when it
        has no jobs); jobs are untouched. True if anything was stored."""
    async def forget_queue_async(self, queue: str) -> bool: ...
    def count(self, queue: str) -> int: ...
    async def count_async(self, queue: str) -> int: ...
    def sizes(self, queue: str) -> dict[str, int]: ...
    async def sizes_async(self, queue: str) -> dict[str, int]: ...
    def clear(self, queue: str) -> int: ...
    async def clear_async(self, queue: str) -> int: ...
    def pop(self, queue: str) -> Job | None: ...
    async def pop_async(self, queue: str) -> Job | None: ...
    def cancel(self, job_id: int) -> bool: ...
    async def cancel_async(self, job_id: int) -> bool: ...
    def get_job(self, job_id: int) -> Job | None: ...
    async def get_job_async(self, job_id: int) -> Job | None: ...
    def list_failed(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]: ...
    async def list_failed_async(self, queue: str | None = None,
                                limit: int = 100) -> list[FailedJob]: ...
    def get_failed(self, job_id: int) -> FailedJob | None: ...
    async def get_failed_async(self, job_id: int) -> FailedJob | None: ...
    def get_finished(self, job_id: int) -> FinishedJob | None:
        """The finished (succeeded or cancelled) job with this id, while history keeps it."""
        ...
    async def get_finished_async(self, job_id: int) -> FinishedJob | None: ...
    def redrive(self, ids: Sequence[int] | None = None, queue: str | None = None) -> list[int]: ...
    async def redrive_async(self, ids: Sequence[int] | None = None,
                            queue: str | None = None) -> list[int]: ...
    def purge_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        """Delete the archived jobs that match every given filter (``ids``, ``queue``,
        ``task``, failed before ``before``; none given: all); returns how many."""
    async def purge_failed_async(self, queue: str | None = None,
                                 before: dt.datetime | None = None, *,
                                 ids: Sequence[int] | None = None,
                                 task: str | None = None) -> int: ...
    def count_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        """How many archived jobs match the filters (as for :meth:`purge_failed`)."""
    async def count_failed_async(self, queue: str | None = None,
                                 before: dt.datetime | None = None, *,
                                 ids: Sequence[int] | None = None,
                                 task: str | None = None) -> int: ...
    def stats(self) -> list[QueueStats]: ...
    async def stats_async(self) -> list[QueueStats]: ...
    # -- flow control (``capabilities.flow_control``; the App refuses limits otherwise) --------
    def set_queue_limits_sync(self, queue: str, limits: QueueLimits) -> None:
        """Store ``queue``'s limits (replacing the old ones; all None: no limit)."""
    async def set_queue_limits(self, queue: str, limits: QueueLimits) -> None: ...


class _Offloads(Protocol):
    async def _offload(self, fn: Callable[..., R], *args: Any) -> R: ...


D = TypeVar("D", bound=_Offloads)


def async_twin(
    sync: Callable[Concatenate[D, P], R],
) -> Callable[Concatenate[D, P], Coroutine[Any, Any, R]]:
    """The ``_async`` form of a driver's sync operation, generated: it runs the sync form through
    the driver's ``_offload`` (inline for memory, a thread for redis). Use in a class body:
    ``count_async = async_twin(count)``."""

    @functools.wraps(sync)
    async def twin(self: D, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._offload(functools.partial(sync, self, *args, **kwargs))

    twin.__doc__ = f"Async twin of :meth:`{sync.__name__}`."
    return twin


def mean_run_time(done: Sequence[FinishedJob]) -> float | None:
    """Mean run time in seconds of finished jobs that started (None when there is none)."""
    runs = [(f.finished_at - f.started_at).total_seconds() for f in done
            if f.started_at is not None]
    return sum(runs) / len(runs) if runs else None


class NoDatabaseMixin:
    """The operations of the driver seam that only make sense on PostgreSQL, for drivers
    without a database transaction or a table to maintain (memory, redis)."""

    name: str

    async def vacuum_if_needed(self, *, min_dead: int = 20_000, dead_ratio: float = 0.1,
                               min_growth: int = 256, growth_ratio: float = 4.0) -> bool:
        """Nothing to vacuum here (a PostgreSQL concern)."""
        return False

    async def ensure_partitions(self, days: int = 7) -> None:
        """Nothing to do: the history is a capped list."""

    def finish_in_transaction(self, conn: Any, job_id: int, *, worker_id: str,
                              result_json: str | None = None,
                              attempt: int | None = None) -> bool:
        """Not offered (``transactional_completion=False``; :class:`pgqueue.App` does not call
        it): raises :class:`pgqueue.CapabilityError`."""
        raise CapabilityError(f"the {self.name} driver cannot complete a job inside your "
                              "transaction; return from the handler instead, or use the "
                              "postgres driver")

    async def finish_in_transaction_async(self, conn: Any, job_id: int, *, worker_id: str,
                                          result_json: str | None = None,
                                          attempt: int | None = None) -> bool:
        """Not offered: see :meth:`finish_in_transaction`."""
        return self.finish_in_transaction(conn, job_id, worker_id=worker_id)

    # -- periodic jobs: not offered (``periodic=False``; the App and the worker refuse
    #    schedules before reaching these) ------------------------------------------------------
    def _no_periodic(self) -> CapabilityError:
        return CapabilityError(f"the {self.name} driver has no periodic jobs (they need a "
                               "table shared by every worker); use the postgres driver")

    async def sync_schedules(self, schedules: Sequence[ScheduleDef]) -> None:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_periodic()

    async def schedule_states(self, names: Sequence[str],
                              ) -> tuple[dt.datetime, dict[str, ScheduleState]]:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_periodic()

    async def claim_ticks(self, name: str, *, expected: dt.datetime, new_last: dt.datetime,
                          next_tick: dt.datetime | None, jobs: Sequence[NewJob],
                          ) -> list[int] | None:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_periodic()

    def list_schedules(self) -> list[ScheduleInfo]:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_periodic()

    async def list_schedules_async(self) -> list[ScheduleInfo]:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_periodic()

    def set_schedule_paused(self, name: str, paused: bool) -> bool:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_periodic()

    async def set_schedule_paused_async(self, name: str, paused: bool) -> bool:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_periodic()

    def run_schedule_now(self, name: str) -> int | None:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_periodic()

    async def run_schedule_now_async(self, name: str) -> int | None:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_periodic()

    # -- the leader: without a shared table, every worker leads its own (idempotent) duties,
    #    as before there was a leader
    async def acquire_lease(self, name: str, *, holder: str, ttl_s: float) -> bool:
        """Always True: this driver's duties are idempotent and run on every worker."""
        return True

    async def release_lease(self, name: str, *, holder: str) -> None:
        """Nothing to release."""

    async def drop_history(self, *, older_than_s: float) -> int:
        """Nothing to drop: the history is a capped list."""
        return 0

    # -- workflows: not offered (``workflows=False``; the App refuses them first)
    def _no_workflows(self) -> CapabilityError:
        return CapabilityError(f"the {self.name} driver has no workflows (dependencies, "
                               "chains and groups, Await, App.result, durable steps); use the "
                               "postgres driver")

    async def park(self, job_id: int, *, worker_id: str, attempt: int | None,
                   awaited: Sequence[int]) -> tuple[bool, list[int]]:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_workflows()

    def wait_result(self, job_id: int, timeout_s: float | None) -> FinalOutcome | None:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_workflows()

    async def wait_result_async(self, job_id: int,
                                timeout_s: float | None) -> FinalOutcome | None:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_workflows()

    def workflow(self, workflow_id: str) -> list[WorkflowJob]:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_workflows()

    async def workflow_async(self, workflow_id: str) -> list[WorkflowJob]:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_workflows()

    def get_step(self, job_id: int, name: str, *, conn: Any = None) -> tuple[str, Any] | None:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_workflows()

    def put_step(self, job_id: int, name: str, fn: str, result_json: str, *,
                 conn: Any = None) -> None:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise self._no_workflows()

    # -- flow control: not offered (``flow_control=False``; the App refuses limits and
    #    concurrency keys before reaching these)
    def limits_hold(self, queues: Sequence[str]) -> bool:
        """No limits here: never."""
        return False

    def set_queue_limits_sync(self, queue: str, limits: QueueLimits) -> None:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        raise CapabilityError(f"the {self.name} driver has no queue limits (they are enforced "
                              "in a table shared by every worker); use the postgres driver")

    async def set_queue_limits(self, queue: str, limits: QueueLimits) -> None:
        """Not offered: raises :class:`pgqueue.CapabilityError`."""
        self.set_queue_limits_sync(queue, limits)
