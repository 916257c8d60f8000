"""The running job's context, visible to its handler through :func:`current_job`.

The executor sets a :class:`JobContext` in a ``contextvars`` variable before calling the handler
(sync handlers run in a thread with a copy of the context), so a handler can read its job, check
whether it was asked to stop, and complete itself inside its own transaction
(:meth:`pgqueue.App.complete`).
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pgqueue.drivers.base import Driver
from pgqueue.errors import JobError, WorkflowError
from pgqueue.job import Job

T = TypeVar("T")

__all__ = ["Completion", "JobContext", "current_completion", "current_context", "current_job"]


@dataclass(slots=True)
class JobContext:
    job: Job
    worker_id: str
    #: the driver of the worker running it (durable steps write their checkpoints there)
    driver: Driver | None = None
    #: set by App.complete(): the job was finished in the handler's own transaction
    completed_in_tx: bool = False
    _cancelled: threading.Event | None = None
    #: the durable steps this run went through: name -> function name (made on first use)
    _steps: dict[str, str] | None = None

    def step(self, name: str, fn: Callable[..., T], *args: Any, conn: Any = None) -> T:
        """Run ``fn(*args)`` once per job, durably: its result is checkpointed in the
        ``job_steps`` table, and a later run of this job (a retry after an error in a later
        step, or after a crash) returns the stored result instead of calling ``fn`` again.

        With ``conn`` (your psycopg or SQLAlchemy connection, inside your transaction) the
        checkpoint is written in that transaction: ``fn``'s business writes through ``conn``
        and the checkpoint commit together -- exactly one effect per step. Without it, the
        checkpoint is written right after ``fn`` returns (a crash in between runs ``fn``
        again).

        The result must be JSON (it is returned as read back: tuples become lists). A name
        belongs to one function per job: reusing it with another function raises
        :class:`pgqueue.WorkflowError`, as does a result that is not JSON. Needs a driver with
        ``workflows`` (postgres).
        """
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise WorkflowError(f"a step name is a string of 1-200 characters, not {name!r:.60}")
        if self.driver is None or not self.driver.capabilities.workflows:
            raise WorkflowError("durable steps need a driver with workflows (postgres)")
        fn_name = _fn_name(fn)
        if self._steps is None:
            self._steps = {}
        seen = self._steps.setdefault(name, fn_name)
        if seen != fn_name:
            raise WorkflowError(f"step {name!r} is used with two functions in one job ({seen} "
                                f"and {fn_name}); give each step its own name")
        found = self.driver.get_step(self.job.id, name, conn=conn)
        if found is not None:
            if found[0] != fn_name:
                raise WorkflowError(f"step {name!r} of job {self.job.id} was checkpointed for "
                                    f"{found[0]}, not {fn_name}; give each step its own name")
            return found[1]  # type: ignore[no-any-return]
        result = fn(*args)
        try:
            text = json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise WorkflowError(f"step {name!r}: its result must be JSON (dict, list, str, "
                                f"number, bool, None): {exc}") from exc
        self.driver.put_step(self.job.id, name, fn_name, text, conn=conn)
        return json.loads(text)  # type: ignore[no-any-return]

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


def _fn_name(fn: Callable[..., Any]) -> str:
    """A function's stable name for a step checkpoint (module and qualified name)."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


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


#: make ``ctx`` the current job's context; returns the token that :func:`reset_context` takes
#: (the context variable's own methods: no Python call around them, once per job)
set_context: Callable[[JobContext | None], contextvars.Token[JobContext | None]] = _current.set
#: undo a :func:`set_context`
reset_context: Callable[[contextvars.Token[JobContext | None]], None] = _current.reset


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
