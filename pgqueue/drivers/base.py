"""The driver seam (internal): whole queue operations that every backend implements.

A driver never offers ``execute(sql)``. It offers operations -- insert many jobs, claim a batch,
finish many, requeue many, archive, pause -- each taking plain values or a params object and
returning typed rows. The PostgreSQL driver implements all of them; weaker drivers (memory,
redis) implement them within their limits and say what they cannot do in :class:`Capabilities`.
The behavioural suite in ``tests/drivers/`` runs the same scenarios against every driver and
skips only by these flags.

Operations used by applications come in a sync and an ``_async`` form; operations used only by
the worker runtime are async.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pgqueue.job import Job, NewJob

__all__ = [
    "Capabilities",
    "Driver",
    "FailedJob",
    "Finish",
    "FinishedJob",
    "NoDatabaseMixin",
    "QueueStats",
    "Requeue",
    "WakeCallback",
]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a driver can do. The behavioural suite skips scenarios by these flags."""

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
    #: per-job priorities are honoured across the whole queue
    priorities: bool = True
    #: per-job delays (run_at) are honoured
    delays: bool = True


@dataclass(frozen=True, slots=True)
class Finish:
    """A job that left the live set for history: ``succeeded`` or ``cancelled``."""

    job_id: int
    state: str = "succeeded"
    result_json: str | None = None
    #: the claimed attempt this outcome belongs to (None: do not check)
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class Requeue:
    """A running job to put back to waiting after ``delay_s``.

    ``count_attempt`` is false for a snooze or a shutdown release; ``error`` (an attempt record:
    ``{"attempt", "error", "traceback", "at"}``) is appended to the job's errors.
    """

    job_id: int
    delay_s: float = 0.0
    count_attempt: bool = True
    error: dict[str, Any] | None = None
    #: the claimed attempt this outcome belongs to (None: do not check)
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class FailedJob:
    """A row of the ``failed_jobs`` archive."""

    id: int
    queue: str
    task: str
    args: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    errors: list[dict[str, Any]]
    reason: str
    enqueued_at: dt.datetime
    failed_at: dt.datetime

    @property
    def payload(self) -> dict[str, Any]:
        return self.args


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for one queue (as the ``queue_stats`` view gives them)."""

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
class FinishedJob:
    """A row of the ``job_history``: a job that left the live set as ``succeeded`` or
    ``cancelled``. ``result`` is the handler's JSON result (or None)."""

    id: int
    queue: str
    task: str
    args: dict[str, Any]
    priority: int
    state: str
    attempt: int
    max_attempts: int
    errors: list[dict[str, Any]]
    result: Any
    worker_id: str | None
    enqueued_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime


#: Called by a driver's listener, on the worker's event loop: ``(kind, payload)`` where kind is
#: ``"job"`` (payload: queue name) or ``"control"`` (payload: dict with ``op``).
WakeCallback = Callable[[str, Any], None]


@runtime_checkable
class Listener(Protocol):
    """Pushes wake-ups to a worker until stopped. Reconnects by itself."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Driver(Protocol):
    """The operations a queue backend provides. Internal: applications use :class:`pgqueue.App`.

    ``conn`` arguments are the caller's own connection or session (only drivers with
    ``transactional_enqueue`` accept one; others raise :class:`pgqueue.CapabilityError`).
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
    async def archive(self, job_id: int, *, worker_id: str, error: dict[str, Any],
                      reason: str, attempt: int | None = None) -> bool: ...
    async def next_run_at(self, queues: Sequence[str]) -> dt.datetime | None: ...
    async def register_worker(self, *, worker_id: str, queues: Sequence[str],
                              concurrency: int) -> None: ...
    async def unregister_worker(self, *, worker_id: str) -> None: ...
    async def heartbeat(self, *, worker_id: str, lease_s: float,
                        job_ids: Sequence[int]) -> None: ...
    async def rescue_expired(self, *, limit: int = 1000) -> tuple[list[int], list[int]]:
        """Requeue (or archive, on their last attempt) jobs whose lease expired; returns
        (requeued ids, archived ids)."""
    async def cancel_requested(self, *, worker_id: str) -> list[int]: ...
    async def prune_workers(self, *, older_than_s: float) -> None: ...
    async def ensure_partitions(self, days: int = 7) -> None: ...
    async def vacuum_if_needed(self, *, min_dead: int = 20_000,
                               dead_ratio: float = 0.1) -> bool: ...
    def finish_in_transaction(self, conn: Any, job_id: int, *, worker_id: str,
                              result_json: str | None = None,
                              attempt: int | None = None) -> bool: ...
    async def finish_in_transaction_async(self, conn: Any, job_id: int, *, worker_id: str,
                                          result_json: str | None = None,
                                          attempt: int | None = None) -> bool: ...
    async def now(self) -> dt.datetime: ...
    def listener(self, callback: WakeCallback) -> Listener | None: ...

    # -- queue control (sync and async) ---------------------------------------------------------
    def set_paused(self, queue: str, paused: bool) -> None: ...
    async def set_paused_async(self, queue: str, paused: bool) -> None: ...
    def paused_queues(self) -> set[str]: ...
    async def paused_queues_async(self) -> set[str]: ...
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
    def redrive(self, ids: Sequence[int] | None = None, queue: str | None = None) -> list[int]: ...
    async def redrive_async(self, ids: Sequence[int] | None = None,
                            queue: str | None = None) -> list[int]: ...
    def purge_failed(self, queue: str | None = None,
                     before: dt.datetime | None = None) -> int: ...
    async def purge_failed_async(self, queue: str | None = None,
                                 before: dt.datetime | None = None) -> int: ...
    def stats(self) -> list[QueueStats]: ...
    async def stats_async(self) -> list[QueueStats]: ...


class NoDatabaseMixin:
    """The operations of the driver seam that only make sense on PostgreSQL, for drivers
    without a database transaction or a table to maintain (memory, redis)."""

    name: str

    async def vacuum_if_needed(self, *, min_dead: int = 20_000, dead_ratio: float = 0.1) -> bool:
        """Nothing to vacuum here (a PostgreSQL concern)."""
        return False

    async def ensure_partitions(self, days: int = 7) -> None:
        """Nothing to do: the history is a capped list."""

    def finish_in_transaction(self, conn: Any, job_id: int, *, worker_id: str,
                              result_json: str | None = None,
                              attempt: int | None = None) -> bool:
        from pgqueue.errors import CapabilityError

        raise CapabilityError(f"the {self.name} driver cannot complete a job inside your "
                              "transaction; return from the handler instead, or use the "
                              "postgres driver")

    async def finish_in_transaction_async(self, conn: Any, job_id: int, *, worker_id: str,
                                          result_json: str | None = None,
                                          attempt: int | None = None) -> bool:
        return self.finish_in_transaction(conn, job_id, worker_id=worker_id)
