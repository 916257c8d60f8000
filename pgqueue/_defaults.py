"""The one definition of each default pgqueue uses, and of its fixed table names.

Every module that needs one of these imports it from here (the App, tasks, jobs, drivers,
settings, the command line and the compat APIs), so that a default can never differ between
two entry points. This module imports nothing.
"""

from __future__ import annotations

__all__ = [
           "DEFAULT_CONCURRENCY",
           "DEFAULT_EVENT_LOOP",
           "DEFAULT_LOCK_TIMEOUT",
           "DEFAULT_MAX_ATTEMPTS",
           "DEFAULT_MAX_SNOOZES",
           "DEFAULT_POLL_INTERVAL",
           "DEFAULT_PRIORITY",
           "DEFAULT_QUEUE",
           "DEFAULT_REDIS_TIMEOUT",
           "DEFAULT_REDIS_URL",
           "DEFAULT_SCHEMA",
           "DEFAULT_STATEMENT_TIMEOUT",
           "DEFAULT_UNKNOWN_TASK_GRACE",
           "EVENT_LOOPS",
           "FAILED_JOBS_TABLE",
           "JOBS_TABLE",
           "POOLERS",
           "pooler_value",
]

#: the PostgreSQL schema of pgqueue's tables unless configured otherwise
DEFAULT_SCHEMA = "pgqueue"

#: the queue of a task registered without one, and of the compat APIs' calls without one
DEFAULT_QUEUE = "default"

#: a job's priority unless its task or the enqueue call says otherwise (lower runs first)
DEFAULT_PRIORITY = 20

#: attempts of a job before it is archived as failed, unless its task or the call says otherwise
DEFAULT_MAX_ATTEMPTS = 5

#: snoozes (``pgqueue.Snooze``) a job may take before the next one archives it as failed,
#: unless its task says otherwise (``@app.task(max_snoozes=None)``: no limit)
DEFAULT_MAX_SNOOZES = 100

#: jobs a worker runs at once (:class:`pgqueue.Settings`)
DEFAULT_CONCURRENCY = 1

#: seconds between checks for jobs when no wake-up arrives (:class:`pgqueue.Settings`)
DEFAULT_POLL_INTERVAL = 1.0

#: the event loops a worker can run on (the ``event_loop`` setting, ``Worker(event_loop=...)``,
#: ``pgqueue worker --event-loop``): asyncio's own, uvloop, or ``auto`` (uvloop when installed)
EVENT_LOOPS = ("asyncio", "uvloop", "auto")

#: the event loop of a worker unless configured otherwise (:class:`pgqueue.Settings`)
DEFAULT_EVENT_LOOP = "asyncio"

#: the Redis server of the redis driver unless configured otherwise
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: seconds Redis may take to answer a command (and to accept a connection) before the redis
#: driver gives up with DatabaseUnavailableError
DEFAULT_REDIS_TIMEOUT = 5.0

#: seconds a statement on pgqueue's own PostgreSQL sessions may wait for a lock (``lock_timeout``)
DEFAULT_LOCK_TIMEOUT = 5.0

#: ``statement_timeout`` of pgqueue's own PostgreSQL sessions; ``None`` keeps the server's
DEFAULT_STATEMENT_TIMEOUT: float | None = None

#: what may stand between pgqueue and PostgreSQL (the ``pooler`` setting; None: nothing)
POOLERS = ("transaction", "session")

#: seconds a job of a task this worker does not know is put back (another worker, or the next
#: deploy, may know it) before it is archived
DEFAULT_UNKNOWN_TASK_GRACE = 300.0


def pooler_value(value: object) -> str | None:
    """``value`` as a ``pooler`` setting: None (also ``"none"``, ``""``), ``"transaction"``
    or ``"session"``, case-insensitive; ``ValueError`` otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none"):
            return None
        if text in POOLERS:
            return text
    raise ValueError(f"pooler must be one of none, {', '.join(POOLERS)}, not {value!r}")


#: live jobs (waiting and running), in the configured schema
JOBS_TABLE = "jobs"

#: the dead-letter archive, in the configured schema
FAILED_JOBS_TABLE = "failed_jobs"
