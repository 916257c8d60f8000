"""pgqueue: a transactional job queue for Python on PostgreSQL.

Jobs are rows. Enqueue them inside your own transaction (psycopg or SQLAlchemy), run them with
workers that claim with ``FOR UPDATE SKIP LOCKED`` and wake on LISTEN/NOTIFY, and inspect live
jobs, failures and history with SQL.

The public API is what this module exports (``__all__``), plus the modules
:mod:`pgqueue.migrations` (schema migrations, also from your own alembic revisions),
:mod:`pgqueue.config` (settings and their sources), :mod:`pgqueue.compat` (the seed-shaped
APIs) and :mod:`pgqueue.testing` (running jobs in your tests, and the pytest plugin). Modules
and packages whose name starts with ``_``, and ``pgqueue.drivers`` (the driver seam, internal
and not covered by semantic versioning) are internal.

- the client and runtime: :class:`App`, :class:`Task`, :class:`Worker`;
- jobs and outcomes: :class:`Job`, :class:`NewJob`, :class:`JobState`, :class:`AttemptError`,
  :class:`Snooze`, :class:`Cancel`, :class:`Fail`, :class:`Await`, :class:`RetryPolicy`;
  inside a handler :func:`current_job` and :func:`current_context` (a :class:`JobContext`,
  with durable steps: ``current_context().step(...)``);
- workflows: :func:`chain`, :func:`group` (:class:`Chain`, :class:`Group`) of task
  signatures (:class:`Signature`, from ``task.s(...)``), enqueued as a :class:`WorkflowRun`;
  :meth:`App.result`, :meth:`App.workflow` (:class:`WorkflowJob`);
- what the admin calls return: :class:`QueueStats`, :class:`FailedJob`, :class:`Capabilities`,
  :class:`ScheduleInfo`;
- configuration: :class:`Settings`, :func:`load_settings`;
- errors: :class:`PgQueueError` and its families (see :mod:`pgqueue.errors`).
"""

from pgqueue.app import App
from pgqueue.backend import Capabilities, QueueStats, ScheduleInfo
from pgqueue.compat import load_settings
from pgqueue.config import Settings
from pgqueue.errors import (
    CannotConnectError,
    CapabilityError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DependencyError,
    DriverError,
    EmbeddedServerError,
    JobError,
    JobFailedError,
    JobNotFoundError,
    MigrationError,
    NotMigratedError,
    PgQueueError,
    ResultTimeoutError,
    TransientDatabaseError,
    UnknownTaskError,
    ValidationError,
    WorkflowError,
)
from pgqueue.job import (
    AttemptError,
    Await,
    Cancel,
    Fail,
    FailedJob,
    Job,
    JobState,
    NewJob,
    Snooze,
    WorkflowJob,
)
from pgqueue.retry import RetryPolicy
from pgqueue.task import Signature, Task
from pgqueue.worker import JobContext, Worker, current_context, current_job
from pgqueue.workflow import Chain, Group, WorkflowRun, chain, group

__version__ = "0.1.0"

__all__ = [
    "App",
    "AttemptError",
    "Await",
    "Cancel",
    "CannotConnectError",
    "Capabilities",
    "CapabilityError",
    "Chain",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DependencyError",
    "DriverError",
    "EmbeddedServerError",
    "Fail",
    "FailedJob",
    "Group",
    "Job",
    "JobContext",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "JobState",
    "MigrationError",
    "NewJob",
    "NotMigratedError",
    "PgQueueError",
    "QueueStats",
    "ResultTimeoutError",
    "RetryPolicy",
    "ScheduleInfo",
    "Settings",
    "Signature",
    "Snooze",
    "Task",
    "TransientDatabaseError",
    "UnknownTaskError",
    "ValidationError",
    "Worker",
    "WorkflowError",
    "WorkflowJob",
    "WorkflowRun",
    "__version__",
    "chain",
    "current_context",
    "current_job",
    "group",
    "load_settings",
]
