"""What the worker runtime needs from an application, and nothing more.

The runtime never imports :mod:`pgqueue.app`: it works against these protocols, which
:class:`pgqueue.App` satisfies structurally (it is the composition root that hands itself to a
:class:`~pgqueue.worker.Worker`). A test or an embedding can pass any object with these members.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from pgqueue.drivers.base import Driver
from pgqueue.job import Job
from pgqueue.periodic import Schedule

__all__ = ["DeadLetterHandler", "RunnableTask", "TaskRegistry"]

#: A dead-letter hook: ``handler(job, error)``, sync or async; runs after the job is archived.
DeadLetterHandler = Callable[[Job, BaseException], Any | Awaitable[Any]]


class RunnableTask(Protocol):
    """A registered task as the executor sees it (:class:`pgqueue.Task` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def max_snoozes(self) -> int | None:
        """Snoozes a job may take before the next one fails it (None: no limit)."""
        ...
    @property
    def min_attempts(self) -> int | None:
        """Attempts every job of the task may take even when it was enqueued with fewer (its
        stored ``max_attempts`` is raised on retry); None: the job's own ``max_attempts``."""
        ...

    def retry(self, attempt: int) -> float:
        """Seconds to wait before the attempt after ``attempt`` (the task's backoff)."""
        ...

    def invoke(self, job: Job) -> tuple[Any, Callable[..., Any]]:
        """``(object with failed(exc) or None, the callable to run)`` for ``job``."""
        ...


class TaskRegistry(Protocol):
    """The worker's inputs: the tasks it can run, the dead-letter hooks, the periodic jobs it
    fires, the driver."""

    @property
    def driver(self) -> Driver: ...
    @property
    def default_queue(self) -> str: ...
    @property
    def tasks(self) -> Mapping[str, RunnableTask]: ...
    @property
    def dead_letter_handlers(self) -> Mapping[str, DeadLetterHandler]: ...
    @property
    def schedules(self) -> Mapping[str, Schedule]:
        """The periodic jobs, by name (:meth:`pgqueue.App.add_periodic`)."""
        ...
