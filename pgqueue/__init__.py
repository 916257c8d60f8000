"""pgqueue: a transactional job queue for Python on PostgreSQL.

Jobs are rows. Enqueue them inside your own transaction (psycopg or SQLAlchemy), run them with
workers that claim with ``FOR UPDATE SKIP LOCKED`` and wake on LISTEN/NOTIFY, and inspect live
jobs, failures and history with SQL.
"""

from pgqueue.app import App
from pgqueue.backend import Capabilities, QueueStats
from pgqueue.config import Settings, load_settings
from pgqueue.errors import (
    CapabilityError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DriverError,
    EmbeddedServerError,
    JobError,
    JobNotFoundError,
    JobTimeoutError,
    NotMigratedError,
    PgQueueError,
    TransientDatabaseError,
    UnknownTaskError,
    ValidationError,
)
from pgqueue.job import Cancel, Fail, FailedJob, Job, Snooze
from pgqueue.retry import RetryPolicy
from pgqueue.task import Task
from pgqueue.worker import Worker, current_context, current_job

__version__ = "0.1.0"

__all__ = [
    "App",
    "Cancel",
    "Capabilities",
    "CapabilityError",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DriverError",
    "EmbeddedServerError",
    "Fail",
    "FailedJob",
    "Job",
    "JobError",
    "JobNotFoundError",
    "JobTimeoutError",
    "NotMigratedError",
    "PgQueueError",
    "QueueStats",
    "RetryPolicy",
    "Settings",
    "Snooze",
    "Task",
    "TransientDatabaseError",
    "UnknownTaskError",
    "ValidationError",
    "Worker",
    "__version__",
    "current_context",
    "current_job",
    "load_settings",
]
