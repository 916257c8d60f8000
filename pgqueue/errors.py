"""The pgqueue error hierarchy.

Every error pgqueue raises on purpose is a :class:`PgQueueError`. The families:

- :class:`ConfigurationError` -- a setting is missing or invalid (names the key and its source);
- :class:`ValidationError` -- a call got bad input (names the argument and what is allowed);
- :class:`DatabaseError` -- the database is unreachable (:class:`DatabaseUnavailableError`, worth
  retrying), refuses us (:class:`CannotConnectError`: wrong host, database, role or password),
  not migrated, or a statement failed;
- :class:`JobError` -- an operation on a job that cannot be done (unknown id, wrong state);
- :class:`DriverError` -- a driver cannot do what was asked (declared capability missing).

Driver exceptions (psycopg, redis) are translated into these at the driver boundary, keeping the
original as ``__cause__``.
"""

from __future__ import annotations


class PgQueueError(Exception):
    """Base class of every error raised by pgqueue."""


class ConfigurationError(PgQueueError):
    """A setting is missing or has an invalid value.

    ``key`` names the setting, ``source`` where the value came from (an env var, a file, an
    argument); both default to ``None`` and, when given, prefix the message as
    ``key (from source): message``.
    """

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        self.key = key
        self.source = source
        prefix = ""
        if key:
            prefix = f"{key}"
            if source:
                prefix += f" (from {source})"
            prefix += ": "
        super().__init__(prefix + message)


class ValidationError(PgQueueError, ValueError):
    """An argument to a public call is invalid; nothing was written."""


class UnknownTaskError(ValidationError):
    """A task name is not registered with the app (strict mode) or the worker."""


class DatabaseError(PgQueueError):
    """A database operation failed (connection refused, statement error, ...)."""


class DatabaseUnavailableError(DatabaseError):
    """The database does not answer, for now: the connection was refused or lost (a restart,
    an administrator's shutdown), the server is starting up, or it has no free connection slot
    (``too many connections``). Waiting and retrying may help; a worker rides it out."""


class CannotConnectError(DatabaseError):
    """The server refused the connection for a reason that retrying will not fix: an unknown
    host, database or role, failed authentication, or TLS settings the server does not accept.

    The message quotes the server's own reason on one line (never a password). Fix the database
    URL or the server's access rules; a worker does not retry it. Example::

        try:
            app.enqueue("send_email", {"to": "a@example.com"})
        except pgqueue.CannotConnectError as exc:
            sys.exit(f"check PGQUEUE_DATABASE_URL: {exc}")
    """


class TransientDatabaseError(DatabaseError):
    """A statement did not take effect and may succeed if run again: it lost a conflict
    (deadlock, serialization failure), waited longer than ``lock_timeout`` for a lock, or was
    cancelled (``statement_timeout``, ``pg_cancel_backend``). pgqueue's worker retries its own
    writes on it; a caller may retry its call."""


class NotMigratedError(DatabaseError):
    """The pgqueue schema is missing or older than this version; run ``pgqueue migrate``."""


class MigrationError(DatabaseError):
    """pgqueue's migrations cannot run on this database: an object they would create exists
    without pgqueue's version record, or the recorded revision is unknown to this pgqueue (a
    newer one migrated it). The message names the conflict."""


class JobError(PgQueueError):
    """An operation on a job that cannot be done."""


class JobNotFoundError(JobError, LookupError):
    """No job (or failed job) with that id."""


class DependencyError(ValidationError):
    """``depends_on`` names a job that does not exist (or is no longer in the history), or one
    that already failed or was cancelled while the policy is not ``run``; nothing was
    written."""


class WorkflowError(ValidationError):
    """A workflow (``chain``/``group``) or a durable step is built wrongly: a member that is
    not a task signature, a step name reused with another function, a step result that is not
    JSON; nothing was written."""


class JobFailedError(JobError):
    """``App.result``: the job failed for good (``state`` ``failed``) or was cancelled
    (``cancelled``); ``error`` is its last error or archive reason."""

    def __init__(self, job_id: int, state: str, error: str | None) -> None:
        self.job_id = job_id
        self.state = state
        self.error = error
        super().__init__(f"job {job_id} {state}: {error or 'no error recorded'}")


class ResultTimeoutError(JobError, TimeoutError):
    """``App.result``: the job did not finish within the timeout (it may still finish)."""


class DriverError(PgQueueError):
    """The selected driver cannot do what was asked, or does not exist."""


class CapabilityError(DriverError):
    """The driver declares that it cannot do this (e.g. transactional enqueue on redis)."""


class EmbeddedServerError(PgQueueError):
    """The embedded PostgreSQL server could not be found, initialised or started."""


__all__ = [
    "CannotConnectError",
    "CapabilityError",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DependencyError",
    "DriverError",
    "EmbeddedServerError",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "MigrationError",
    "NotMigratedError",
    "PgQueueError",
    "ResultTimeoutError",
    "TransientDatabaseError",
    "UnknownTaskError",
    "ValidationError",
    "WorkflowError",
]
