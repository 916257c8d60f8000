"""The ``django.tasks`` backend: Django tasks stored and run as pgqueue jobs.

A Django task becomes a pgqueue job whose task name is the function's dotted path
(``shop.tasks.send_receipt``), whose ``args`` are ``{"args": [...], "kwargs": {...}}``, on the
queue ``queue_name``. The job is inserted through **Django's own connection** (the psycopg 3
connection of ``DATABASES[OPTIONS["DATABASE"]]``), so inside ``transaction.atomic()`` it commits
or rolls back with your model writes; outside one it is committed at once (Django's autocommit).

Priorities: Django's run from -100 to 100, higher first; pgqueue's from 0 up, lower first. A
Django priority ``p`` is stored as pgqueue priority ``100 - p`` (the default 0 is 100).

Results: :meth:`PgQueueBackend.get_result` reads the job where it is: live (``READY`` or
``RUNNING``), in history (``SUCCESSFUL`` with the return value; a cancelled job reads as
``FAILED``), or archived (``FAILED`` with every attempt's error).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone
from django.utils.module_loading import import_string

import pgqueue
from pgqueue.contrib.django._compat import (
    BaseTaskBackend,
    InvalidTaskBackendError,
    InvalidTaskError,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
)

__all__ = ["OPTIONS", "PgQueueBackend"]

#: the keys ``TASKS[alias]["OPTIONS"]`` accepts, and what each one means
OPTIONS: Mapping[str, str] = {
    "DATABASE": "the Django database alias whose connection enqueues (default 'default')",
    "DATABASE_URL": "pgqueue's own connections (workers, get_result); default: built from "
                    "DATABASES[DATABASE]",
    "SCHEMA": "the PostgreSQL schema of pgqueue's tables (default 'pgqueue')",
    "MAX_ATTEMPTS": "attempts per job before it is archived as failed (default 5)",
    "WORKER": "keyword arguments of pgqueue.Worker for manage.py pgqueue_worker, e.g. "
              "{'concurrency': 4}",
}

#: what ``100 - django priority`` is shifted by: Django's range -100..100 maps to 200..0
_PRIORITY_PIVOT = 100


#: the Apps of the backends, by (url, schema): Django makes a backend per thread, and they share
#: one App (one set of pools, one registry)
_APPS: dict[tuple[str, str], pgqueue.App] = {}
_APPS_LOCK = threading.Lock()
#: the Django tasks seen so far, by dotted path
_TASKS: dict[str, Any] = {}


def _shared_app(url: str, schema: str) -> pgqueue.App:
    """The pgqueue App of every backend on ``url`` and ``schema`` (created once, strict=False:
    a web process enqueues tasks that only the worker has imported)."""
    with _APPS_LOCK:
        app = _APPS.get((url, schema))
        if app is None:
            app = _APPS[(url, schema)] = pgqueue.App(url, schema=schema, strict=False)
        return app


def _django_url(alias: str) -> str:
    """A libpq conninfo string for Django's database ``alias`` (PostgreSQL only)."""
    db = settings.DATABASES.get(alias)
    if db is None:
        raise InvalidTaskBackendError(
            f"OPTIONS['DATABASE'] is {alias!r}, which is not in DATABASES "
            f"({', '.join(sorted(settings.DATABASES))})")
    engine = db.get("ENGINE", "")
    if engine != "django.db.backends.postgresql":
        raise InvalidTaskBackendError(
            f"DATABASES[{alias!r}] uses {engine!r}; pgqueue needs "
            "'django.db.backends.postgresql' (with psycopg 3)")
    params = {"dbname": db.get("NAME"), "user": db.get("USER"), "password": db.get("PASSWORD"),
              "host": db.get("HOST"), "port": str(db.get("PORT") or "")}
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v})


def _class_path(error: pgqueue.AttemptError) -> str:
    """The dotted class of a failed attempt's exception, read from the traceback's last line
    (``shop.tasks.OutOfStock: ...``; builtins have no module prefix). A failure without an
    exception (a timeout, a lost lease) reads as ``builtins.RuntimeError``."""
    last = (error.traceback or "").rstrip().rsplit("\n", 1)[-1]
    name = last.split(":", 1)[0].strip()
    if not name or " " in name:
        return "builtins.RuntimeError"
    return name if "." in name else f"builtins.{name}"


def _errors(errors: Iterable[pgqueue.AttemptError]) -> list[Any]:
    return [TaskError(exception_class_path=_class_path(e), traceback=e.traceback or e.error)
            for e in errors]


class PgQueueBackend(BaseTaskBackend):  # type: ignore[misc]
    """A ``django.tasks`` backend storing tasks as pgqueue jobs in PostgreSQL.

    Settings (``settings.py``)::

        INSTALLED_APPS = [..., "pgqueue.contrib.django"]    # the manage.py commands
        TASKS = {
            "default": {
                "BACKEND": "pgqueue.contrib.django.PgQueueBackend",
                "QUEUES": ["default", "emails"],           # Django's own option
                "OPTIONS": {"DATABASE": "default", "SCHEMA": "pgqueue", "MAX_ATTEMPTS": 5,
                            "WORKER": {"concurrency": 4}},
            }
        }

    Every option is optional (see :data:`OPTIONS`); an unknown one, or a bad value, raises
    Django's ``InvalidTaskBackend`` (``ImproperlyConfigured``). Create pgqueue's tables with
    ``manage.py pgqueue_migrate`` and run tasks with ``manage.py pgqueue_worker``: the worker
    imports the ``tasks`` module of every installed app, which is where it finds the task
    functions. Supports ``priority``, ``run_after``, ``queue_name``, ``takes_context``, async
    task functions and :meth:`get_result`. Example::

        from django.db import transaction
        from shop.tasks import send_receipt              # @task def send_receipt(order_id)

        with transaction.atomic():
            order = Order.objects.create(item="book")
            result = send_receipt.enqueue(order.id)      # commits (or not) with the order
        send_receipt.get_result(result.id).status         # READY, then SUCCESSFUL
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = self.options
        if not isinstance(options, Mapping):
            raise InvalidTaskBackendError(f"TASKS[{alias!r}]['OPTIONS'] must be a dict")
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InvalidTaskBackendError(
                f"TASKS[{alias!r}]['OPTIONS'] has unsupported option(s) {', '.join(unknown)}; "
                f"pgqueue's backend accepts {', '.join(OPTIONS)}")
        self.database: str = options.get("DATABASE", "default")
        url = options.get("DATABASE_URL") or _django_url(self.database)
        self.max_attempts: int | None = options.get("MAX_ATTEMPTS")
        worker = options.get("WORKER", {})
        if not isinstance(worker, Mapping):
            raise InvalidTaskBackendError(
                f"TASKS[{alias!r}]['OPTIONS']['WORKER'] must be a dict of pgqueue.Worker "
                "options, e.g. {'concurrency': 4}")
        self.worker_options: dict[str, Any] = dict(worker)
        try:
            if self.max_attempts is not None:
                pgqueue.App(driver="memory").build("probe", max_attempts=self.max_attempts)
            self.app = _shared_app(url, options.get("SCHEMA", "pgqueue"))
        except pgqueue.PgQueueError as exc:
            raise InvalidTaskBackendError(f"TASKS[{alias!r}]['OPTIONS']: {exc}") from exc

    # ---- tasks ---------------------------------------------------------------------------------
    def validate_task(self, task: Any) -> None:
        """Django's checks (raising ``InvalidTask``), then register the task with :attr:`app`
        under its dotted path, so that a worker importing the module can run it."""
        super().validate_task(task)
        path = task.module_path
        _TASKS.setdefault(path, task)
        if self.app.get_task(path) is None:
            try:
                self.app.task(name=path, queue=task.queue_name)(self._runner(path))
            except pgqueue.PgQueueError as exc:
                raise InvalidTaskError(f"{path}: {exc}") from exc

    def _runner(self, path: str) -> Any:
        """The pgqueue handler that runs the Django task ``path`` with a job's arguments."""
        def run(args: list[Any], kwargs: dict[str, Any], job: pgqueue.Job) -> Any:
            task = self._task(path)
            try:
                if task.takes_context:
                    context = TaskContext(task_result=self._live_result(task, job))
                    return task.call(context, *args, **kwargs)
                return task.call(*args, **kwargs)
            finally:
                close_old_connections()

        run.__name__ = run.__qualname__ = path.rsplit(".", 1)[-1]
        return run

    def _task(self, path: str) -> Any:
        task = _TASKS.get(path)
        if task is None:
            try:
                task = import_string(path)
            except ImportError as exc:
                raise TaskResultDoesNotExist(f"task {path!r} cannot be imported: {exc}") from exc
        return task

    # ---- enqueue -------------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        """Django's psycopg 3 connection of :attr:`database` (opened if needed)."""
        wrapper = connections[self.database]
        wrapper.ensure_connection()
        raw = wrapper.connection
        if not isinstance(raw, psycopg.Connection):
            raise InvalidTaskBackendError(
                f"DATABASES[{self.database!r}] is not on psycopg 3 ({type(raw).__module__}); "
                "install psycopg (3) so Django and pgqueue share the transaction")
        return raw

    def _options(self, task: Any) -> dict[str, Any]:
        options: dict[str, Any] = {"queue": task.queue_name,
                                   "priority": _PRIORITY_PIVOT - task.priority}
        if self.max_attempts is not None:
            options["max_attempts"] = self.max_attempts
        if task.run_after is not None:
            run_at = task.run_after
            if timezone.is_naive(run_at):
                run_at = timezone.make_aware(run_at)
            options["run_at"] = run_at
        return options

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Insert a job for ``task(*args, **kwargs)`` through Django's connection, in the
        current transaction if there is one; returns its ``TaskResult`` (``READY``)."""
        self.validate_task(task)
        positional, named = list(args), dict(kwargs)
        try:
            job = self.app.build(task.module_path, {"args": positional, "kwargs": named},
                                 **self._options(task))
            job_id = self.app.insert([job], conn=self._connection())[0]
        except pgqueue.ValidationError as exc:
            raise InvalidTaskError(str(exc)) from exc
        return self._result(task, job_id, TaskResultStatus.READY, args=positional,
                            kwargs=named, enqueued_at=timezone.now())

    # ---- results -------------------------------------------------------------------------------
    def _result(self, task: Any, job_id: int, status: Any, *, args: list[Any],
                kwargs: dict[str, Any], enqueued_at: dt.datetime | None = None,
                started_at: dt.datetime | None = None, finished_at: dt.datetime | None = None,
                errors: Iterable[pgqueue.AttemptError] = (), attempts: int = 0,
                worker: str | None = None) -> Any:
        return TaskResult(
            task=task, id=str(job_id), status=status, enqueued_at=enqueued_at,
            started_at=started_at, finished_at=finished_at,
            last_attempted_at=finished_at or started_at, args=args, kwargs=kwargs,
            backend=self.alias, errors=_errors(errors),
            worker_ids=[worker or "pgqueue"] * attempts)

    def _live_result(self, task: Any, job: pgqueue.Job) -> Any:
        running = job.state == pgqueue.JobState.RUNNING
        return self._result(
            task, job.id, TaskResultStatus.RUNNING if running else TaskResultStatus.READY,
            args=job.args.get("args", []), kwargs=job.args.get("kwargs", {}),
            enqueued_at=job.created_at, errors=job.errors,
            attempts=job.attempt)

    def get_result(self, result_id: str) -> Any:
        """The ``TaskResult`` of job ``result_id``: ``READY``/``RUNNING`` while it is live,
        ``SUCCESSFUL`` with ``return_value`` once it succeeded, ``FAILED`` with ``errors`` once
        archived (or cancelled). ``TaskResultDoesNotExist`` for an unknown id, or a finished
        job that history retention already dropped."""
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(f"{result_id!r} is not a pgqueue job id") from None
        live = self.app.get_job(job_id)
        if live is not None:
            return self._live_result(self._task(live.task), live)
        done = self.app.get_finished(job_id)
        if done is not None:
            ok = done.state == pgqueue.JobState.SUCCEEDED
            result = self._result(
                self._task(done.task), job_id,
                TaskResultStatus.SUCCESSFUL if ok else TaskResultStatus.FAILED,
                args=done.args.get("args", []), kwargs=done.args.get("kwargs", {}),
                enqueued_at=done.enqueued_at, started_at=done.started_at,
                finished_at=done.finished_at, errors=done.errors,
                attempts=done.attempt, worker=done.worker_id)
            if not ok:
                result.errors.append(TaskError(exception_class_path="builtins.RuntimeError",
                                               traceback="cancelled"))
            object.__setattr__(result, "_return_value", done.result)
            return result
        try:
            failed = self.app.get_failed(job_id)
        except pgqueue.JobNotFoundError:
            raise TaskResultDoesNotExist(f"no pgqueue job {job_id}") from None
        return self._result(
            self._task(failed.task), job_id, TaskResultStatus.FAILED,
            args=failed.args.get("args", []), kwargs=failed.args.get("kwargs", {}),
            enqueued_at=failed.enqueued_at, finished_at=failed.failed_at, errors=failed.errors,
            attempts=failed.attempt)

    # ---- workers -------------------------------------------------------------------------------
    def worker(self, queues: Iterable[str] | None = None, **options: Any) -> pgqueue.Worker:
        """A pgqueue worker running this backend's tasks on ``queues`` (default: the backend's
        ``QUEUES``), with ``OPTIONS["WORKER"]`` updated by ``options``."""
        chosen = sorted(queues) if queues else sorted(self.queues)
        return self.app.worker(chosen, **{**self.worker_options, **options})
