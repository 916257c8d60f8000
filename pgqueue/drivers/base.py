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

from pgqueue.backend import Capabilities, QueueStats
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
)

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
    "async_twin",
    "mean_run_time",
]

P = ParamSpec("P")
R = TypeVar("R")


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

    ``count_attempt`` is false for a snooze or a shutdown release; ``error`` is appended to the
    job's errors (a retry).
    """

    job_id: int
    delay_s: float = 0.0
    count_attempt: bool = True
    error: AttemptError | None = None
    #: the claimed attempt this outcome belongs to (None: do not check)
    attempt: int | None = None


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
    async def next_run_at(self, queues: Sequence[str]) -> dt.datetime | None: ...
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

    async def vacuum_if_needed(self, *, min_dead: int = 20_000, dead_ratio: float = 0.1) -> bool:
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
