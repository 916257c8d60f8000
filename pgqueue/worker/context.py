"""The running job's context, visible to its handler through :func:`current_job`.

The executor sets a :class:`JobContext` in a ``contextvars`` variable before calling the handler
(sync handlers run in a thread with a copy of the context), so a handler can read its job, check
whether it was asked to stop, and complete itself inside its own transaction
(:meth:`pgqueue.App.complete`).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pgqueue.errors import JobError
from pgqueue.job import Job

__all__ = ["Completion", "JobContext", "current_completion", "current_context", "current_job"]


@dataclass(slots=True)
class JobContext:
    job: Job
    worker_id: str
    #: set by App.complete(): the job was finished in the handler's own transaction
    completed_in_tx: bool = False
    _cancelled: threading.Event | None = None

    @property
    def cancelled(self) -> threading.Event:
        """Set when the job was asked to stop (cancel request, timeout or shutdown). Sync
        handlers that run long should check ``pgqueue.current_context().cancelled.is_set()``.
        Created on first use (most jobs never need one)."""
        if self._cancelled is None:
            with _EVENT_LOCK:
                if self._cancelled is None:
                    self._cancelled = threading.Event()
        return self._cancelled


_EVENT_LOCK = threading.Lock()


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "pgqueue_job", default=None)


def current_context() -> JobContext:
    """The context of the job this code runs for; raises JobError outside a handler."""
    ctx = _current.get()
    if ctx is None:
        raise JobError("no job is running here: current_job()/complete() work inside a "
                       "handler run by a pgqueue worker")
    return ctx


def current_job() -> Job:
    """The job this handler runs for."""
    return current_context().job


def set_context(ctx: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(ctx)


def reset_context(token: contextvars.Token[JobContext | None]) -> None:
    _current.reset(token)


@dataclass(frozen=True, slots=True)
class Completion:
    """What :meth:`pgqueue.App.complete` needs to finish the running job in the handler's own
    transaction: the job, the worker holding it, and the callback that tells the executor the
    job was completed in that transaction (so it writes no outcome of its own)."""

    job: Job
    worker_id: str
    mark_completed: Callable[[], None]


def current_completion(job: Job | None = None) -> Completion:
    """The running job's :class:`Completion`; raises JobError outside a handler, or when
    ``job`` is given and is not the running job."""
    ctx = current_context()
    if job is not None and job.id != ctx.job.id:
        raise JobError(f"complete() can only complete the running job {ctx.job.id}, "
                       f"not job {job.id}")

    def mark() -> None:
        ctx.completed_in_tx = True

    return Completion(ctx.job, ctx.worker_id, mark)
