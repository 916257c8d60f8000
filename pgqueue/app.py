"""The :class:`App`: configuration, the task registry, enqueue (sync and async) and queue control.

::

    app = pgqueue.App(database_url="postgresql://localhost/shop", schema="pgqueue")

    @app.task(name="send_email", queue="emails")
    def send_email(to: str, subject: str) -> None: ...

    with psycopg.connect(url) as conn:                    # your transaction
        conn.execute("INSERT INTO orders ...")
        send_email.enqueue(to="a@b.c", subject="hi", conn=conn)
    # committed together; a rollback leaves neither the order nor the job

Sync and async: every operation has a sync method and an ``_async`` twin. Each operation's
arguments are validated once, by a pure function (:meth:`App.build`, ``_check_id``,
``_queue``...), and its result is read once (``_found``, ``_first``); the twins only differ in
the driver call they make (``driver.count`` or ``await driver.count_async``), so each is one
line. What the driver cannot do is checked once, in :meth:`App._require`, before any call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Unpack, overload

from pgqueue._codec import result_json
from pgqueue._defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, DEFAULT_QUEUE, DEFAULT_SCHEMA
from pgqueue._dsn import to_libpq
from pgqueue._names import validate_name, validate_schema
from pgqueue.config import Settings, find_settings
from pgqueue.config._settings import needs_database_url
from pgqueue.config._values import parse_driver
from pgqueue.drivers import get_driver
from pgqueue.drivers.base import Driver, FailedJob, QueueStats
from pgqueue.drivers.postgres.driver import PostgresDriver
from pgqueue.errors import (
    CapabilityError,
    ConfigurationError,
    JobError,
    JobNotFoundError,
    UnknownTaskError,
    ValidationError,
)
from pgqueue.job import Job, NewJob
from pgqueue.retry import Backoff
from pgqueue.task import (
    EnqueueOptions,
    Task,
    check_delay,
    check_max_attempts,
    check_priority,
    check_timeout,
    dumps_args,
    to_json_object,
)
from pgqueue.worker import Worker
from pgqueue.worker._registry import DeadLetterHandler
from pgqueue.worker.context import Completion, current_completion

if TYPE_CHECKING:
    from pgqueue._conn import AsyncConn, SyncConn

__all__ = ["App", "DeadLetterHandler"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


_NOTHING: Any = object()

#: the keyword arguments enqueue calls accept (the message of an unknown one lists them)
_ENQUEUE_OPTIONS = (*EnqueueOptions.__annotations__, "conn")

#: a capability :meth:`App._require` checks, and what the refusal says
_Capability = Literal["transactional_enqueue", "transactional_completion"]
_REFUSALS: dict[_Capability, str] = {
    "transactional_enqueue": "the {driver} driver cannot enqueue inside your transaction; drop "
                             "conn= or use the postgres driver",
    "transactional_completion": "the {driver} driver cannot complete a job in your transaction; "
                                "return from the handler instead, or use the postgres driver",
}


class App:
    """A pgqueue application: where jobs live and which tasks exist.

    The client and composition root: it holds the task registry, enqueues (sync and async),
    controls queues and archived jobs, and builds workers (:meth:`worker`).

    Args:
        database_url: PostgreSQL URL. Default: the configured one, resolved as the ``pgqueue``
            command resolves it (:func:`pgqueue.config.find_settings`): ``PGQUEUE_DATABASE_URL``,
            then the seeds' names (``QUEUE_CONFIG``/``VELA_QUEUE_CONFIG``, Backstage's
            ``backend.queue.postgres.connection`` in ``app-config.yaml``), then ``DATABASE_URL``;
            the environment wins over ``.env``, which wins over ``app-config.yaml``.
            ``pgqueue config`` prints what was found and where.
        schema: the PostgreSQL schema of pgqueue's tables. Default: the configured one
            (``PGQUEUE_SCHEMA``, ``QUEUE_TABLE=myschema.jobs``, ``postgres.schema`` in
            ``app-config.yaml``), else ``pgqueue`` (``pgqueue`` with a ``driver`` instance).
        driver: a driver instance, or the name of one that needs no URL (``"memory"``,
            ``"redis"`` on redis://127.0.0.1:6379/0); default: postgres on ``database_url``,
            created on first use; with neither ``database_url`` nor ``driver``, a driver the
            configuration selects explicitly (``QUEUE_DRIVER=redis`` with its URL,
            ``QUEUE_DRIVER=memory``) is used.
        strict: if true, :meth:`enqueue` refuses task names that are not registered (default
            false: any valid name is enqueued, for workers in other processes).
        default_queue: queue of tasks registered without one (default ``"default"``).
        pool_size: size of pgqueue's own connection pools (default 10).
        environ: the environment the configuration is read from (default ``os.environ``, only
            read; ``.env`` and ``app-config.yaml`` of the current directory count as well).

    Attributes:
        tasks: the registry, by name and alias. dead_letter_handlers: hooks by queue.

    Example::

        app = pgqueue.App("postgresql://localhost/shop")
        app.enqueue("send_email", {"to": "a@b.c"}, delay=60)
        app = pgqueue.App()          # QUEUE_CONFIG=postgresql://... (Vela) works as well
    """

    def __init__(self, database_url: str | None = None, *, schema: str | None = None,
                 driver: Driver | str | None = None, strict: bool = False,
                 default_queue: str = DEFAULT_QUEUE, pool_size: int = 10,
                 environ: Mapping[str, str] | None = None) -> None:
        self.strict = strict
        self.default_queue = validate_name(default_queue, "queue")
        self.tasks: dict[str, Task] = {}
        self.dead_letter_handlers: dict[str, DeadLetterHandler] = {}
        self._pool_size = pool_size
        self._driver: Driver | None = None
        self.database_url: str | None = None
        self._url_source = "database_url argument"
        settings: Settings | None = None
        if driver is None and (database_url is None or schema is None):
            # what is not given comes from the configuration, resolved as the CLI resolves it
            settings = find_settings(environ=environ, database_url=database_url)
        self.schema = validate_schema(
            schema if schema is not None else settings.schema if settings else DEFAULT_SCHEMA)
        if isinstance(driver, str):
            driver = _driver_by_name(driver, self)
        if driver is not None:
            self._driver = driver
        elif database_url is not None:
            self.database_url = to_libpq(database_url, source=self._url_source)
        elif settings is not None:
            self._use_configured(settings)

    def _use_configured(self, settings: Settings) -> None:
        """Take the database (or driver) the configuration selects; a memory driver only when
        selected explicitly (never by default: jobs of a process-local queue would vanish)."""
        if settings.database_url is not None and settings.driver == "postgres":
            self.database_url = settings.database_url
            self._url_source = settings.source("database_url")
        elif settings.driver == "redis":
            self._driver = get_driver("redis", url=settings.redis_url)
        elif settings.driver == "memory" and not settings.source("driver").startswith(
                "default"):
            self._driver = get_driver("memory")

    @classmethod
    def from_settings(cls, settings: Settings, *, driver: str | None = None,
                      **app_kwargs: Any) -> App:
        """An App for layered :class:`pgqueue.Settings` (see :func:`pgqueue.load_settings`).

        ``driver`` picks another configured driver than ``settings.driver`` (default: that
        one). postgres uses ``settings.database_url`` and ``settings.schema``; redis uses
        ``settings.redis_url``; memory needs nothing. ``app_kwargs`` go to ``App``
        (``strict``, ``default_queue``, ``pool_size``). Example::

            settings = pgqueue.load_settings()
            app = pgqueue.App.from_settings(settings)
            app.worker(**settings.worker_options()).run_forever()
        """
        name = settings.driver if driver is None else parse_driver(driver, "driver", "argument")
        if name == "postgres":
            if not settings.database_url:
                raise ConfigurationError(
                    needs_database_url(("database_url", "PGQUEUE_DATABASE_URL", "DATABASE_URL")),
                    key="database_url", source=settings.sources["database_url"])
            return cls(database_url=settings.database_url, schema=settings.schema, **app_kwargs)
        if name == "memory":
            return cls(driver=get_driver("memory"), schema=settings.schema, **app_kwargs)
        return cls(driver=get_driver("redis", url=settings.redis_url), schema=settings.schema,
                   **app_kwargs)

    def __repr__(self) -> str:
        return f"<pgqueue.App schema={self.schema!r} tasks={len(self.tasks)}>"

    # ---- driver ----------------------------------------------------------------------------
    @property
    def driver(self) -> Driver:
        """The driver (created on first use: postgres on :attr:`database_url`). Raises
        :class:`pgqueue.ConfigurationError` when no driver and no database is configured."""
        if self._driver is None:
            if self.database_url is None:
                raise ConfigurationError(
                    "no database configured: pass App(database_url=...) or set "
                    "PGQUEUE_DATABASE_URL (or DATABASE_URL) to postgresql://user@host/dbname",
                    key="database_url")
            self._driver = PostgresDriver(self.database_url, schema=self.schema,
                                          pool_size=self._pool_size)
        return self._driver

    def _require(self, capability: _Capability) -> Driver:
        """The driver, if it has ``capability``; else a :class:`pgqueue.CapabilityError` saying
        what it cannot do. The one place the App checks what a driver can do."""
        driver = self.driver
        if not getattr(driver.capabilities, capability):
            raise CapabilityError(_REFUSALS[capability].format(driver=driver.name))
        return driver

    def _enqueuer(self, conn: object) -> Driver:
        """The driver to insert with: with a caller's ``conn``, only one that can join it."""
        return self.driver if conn is None else self._require("transactional_enqueue")

    def use_database(self, database_url: str, *, source: str = "argument") -> None:
        """Point this app at another PostgreSQL database (closing pools made for the old one).

        For apps defined at import time whose URL is only known later (the CLI's
        ``--database-url``, the demo's embedded server). ``source`` names where the URL came
        from in error messages.
        """
        url = to_libpq(database_url, source=source)
        if self._driver is not None:
            self._driver.close()
            self._driver = None
        self.database_url = url

    def close(self) -> None:
        """Close pgqueue's own connection pools (sync). The app can still be used: pools are
        reopened on demand."""
        if self._driver is not None:
            self._driver.close()

    async def aclose(self) -> None:
        """Close pgqueue's own connection pools (this event loop's async pool, and the sync
        pool)."""
        if self._driver is not None:
            await self._driver.aclose()
            self._driver.close()

    def migrate(self) -> None:
        """Upgrade pgqueue's schema in this app's database to head (idempotent)."""
        from pgqueue import migrations  # imported late: alembic and SQLAlchemy load only here

        if self.database_url is None:
            raise ConfigurationError("migrate needs a database URL", key="database_url")
        migrations.upgrade(self.database_url, schema=self.schema)

    # ---- tasks -------------------------------------------------------------------------------
    @overload
    def task(self, fn: F, /) -> Task: ...
    @overload
    def task(self, fn: None = None, /, *, name: str | None = None, queue: str | None = None,
             priority: int = DEFAULT_PRIORITY, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
             retry: Backoff | None = None, timeout: float | None = None,
             aliases: Iterable[str] = ()) -> Callable[[F], Task]: ...

    def task(self, fn: F | None = None, /, *, name: str | None = None, queue: str | None = None,
             priority: int = DEFAULT_PRIORITY, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
             retry: Backoff | None = None, timeout: float | None = None,
             aliases: Iterable[str] = ()) -> Task | Callable[[F], Task]:
        """Register a function or a class-based job (with ``handle()``) as a task.

        ``name`` is the stable name stored in the jobs table (default: ``module.qualname``);
        renaming the Python function later does not orphan queued jobs if the old name is kept
        in ``aliases``. ``queue`` defaults to the app's ``default_queue``, ``priority`` to 20,
        ``max_attempts`` to 5. ``retry`` is a backoff policy (``pgqueue.RetryPolicy``, the
        default, or any ``(attempt) -> seconds``); ``timeout`` is seconds per attempt (default
        none). Use bare (``@app.task``) or with options (``@app.task(name="x")``).
        """

        def register(f: F) -> Task:
            task_name = name or f"{f.__module__}.{f.__qualname__}"
            task = Task(self, f, name=task_name, queue=queue or self.default_queue,
                        priority=priority, max_attempts=max_attempts, retry=retry,
                        timeout=timeout, aliases=tuple(aliases))
            for key in (task.name, *task.aliases):
                if key in self.tasks and self.tasks[key].handler is not f:
                    raise ValidationError(f"task name {key!r} is already registered to "
                                          f"{self.tasks[key].handler!r}")
                self.tasks[key] = task
            return task

        return register(fn) if fn is not None else register

    def get_task(self, name: str) -> Task | None:
        """The task registered under ``name`` (or one of its aliases), or None."""
        return self.tasks.get(name)

    def task_for(self, obj: object) -> Task | None:
        """The task registered for a class-based job instance, if any."""
        for task in self.tasks.values():
            if task.is_class and isinstance(obj, task.handler):  # type: ignore[arg-type]
                return task
        return None

    def on_dead_letter(self, queue: str, handler: DeadLetterHandler) -> None:
        """Run ``handler(job, error)`` (sync or async) after a job of ``queue`` lands in
        ``failed_jobs``; one handler per queue (a second call replaces the first)."""
        self.dead_letter_handlers[validate_name(queue, "queue")] = handler

    # ---- enqueue -------------------------------------------------------------------------------
    def build(self, task: str | object, args: Any = None, *, queue: str | None = None,
              priority: int | None = None, delay: float | dt.timedelta | None = None,
              run_at: dt.datetime | None = None, max_attempts: int | None = None,
              unique_key: str | None = None, timeout: float | None = None,
              meta: Mapping[str, Any] | None = None) -> NewJob:
        """Validate one job and return it ready to insert (raises :class:`ValidationError`).

        The options and their defaults are those of :meth:`enqueue`
        (:class:`pgqueue.task.EnqueueOptions`). Insert built jobs with :meth:`insert`::

            app.insert([app.build("resize", {"id": i}, priority=i) for i in range(3)])
        """
        registered: Task | None
        if isinstance(task, str):
            registered = self.tasks.get(task)
            if registered is None:
                validate_name(task, "task")
                if self.strict:
                    known = ", ".join(sorted(self.tasks)) or "none"
                    raise UnknownTaskError(f"unknown task {task!r} (strict mode); registered "
                                           f"tasks: {known}")
            task_name = registered.name if registered else task
        else:  # a class-based job instance
            registered = self.task_for(task)
            if registered is None:
                raise UnknownTaskError(f"{type(task).__name__} is not a registered task; "
                                       "decorate its class with @app.task")
            if args is not None:
                raise ValidationError("pass either a job instance or a task name with args")
            args, task_name = task, registered.name
        args_json = registered.serialise(args) if registered else _serialise_plain(args)
        delay_s: float | None = None
        if delay is not None:
            if run_at is not None:
                raise ValidationError("pass delay or run_at, not both")
            if isinstance(delay, dt.timedelta):
                delay = delay.total_seconds()
            delay_s = check_delay(delay)
        if run_at is not None and (not isinstance(run_at, dt.datetime) or run_at.tzinfo is None):
            raise ValidationError("run_at must be a timezone-aware datetime, e.g. "
                                  "datetime.now(timezone.utc) + timedelta(minutes=5)")
        if unique_key is not None and (not isinstance(unique_key, str) or not unique_key
                                       or len(unique_key) > 1000 or "\x00" in unique_key):
            raise ValidationError("unique_key must be a non-empty string of at most 1000 "
                                  "characters without NUL")
        return NewJob(
            queue=validate_name(queue, "queue") if queue is not None else (
                registered.queue if registered else self.default_queue),
            task=task_name,
            args_json=args_json,
            priority=check_priority(priority) if priority is not None else (
                registered.priority if registered else DEFAULT_PRIORITY),
            max_attempts=check_max_attempts(max_attempts) if max_attempts is not None else (
                registered.max_attempts if registered else DEFAULT_MAX_ATTEMPTS),
            run_at=run_at,
            delay_s=delay_s,
            unique_key=unique_key,
            timeout_s=check_timeout(timeout) if timeout is not None else (
                registered.timeout if registered else None),
            meta_json=dumps_args(dict(meta), "meta") if meta else "{}",
        )

    def enqueue(self, task: str | object, args: Any = None, *, conn: SyncConn | None = None,
                **options: Unpack[EnqueueOptions]) -> int:
        """Enqueue one job; returns its id.

        ``task`` is a task name (with ``args`` a dict, dataclass or pydantic model; default
        ``{}``) or a class-based job instance. Options (:class:`pgqueue.task.EnqueueOptions`):
        ``queue``, ``priority`` (0-1000, lower first, default 20), ``delay`` (seconds or
        timedelta), ``run_at`` (aware datetime), ``max_attempts`` (default 5), ``unique_key``
        (if a live job holds it, nothing is inserted and that job's id is returned),
        ``timeout`` (seconds), ``meta`` (dict); unset ones take the task's defaults. ``conn``:
        your psycopg ``Connection`` or SQLAlchemy ``Connection``/``Session``; the job is then
        part of your transaction and its wake-up is sent at your commit (drivers without
        transactional enqueue raise :class:`pgqueue.CapabilityError`).
        """
        return self.insert([self.build(task, args, **_check_options(options))], conn=conn)[0]

    async def enqueue_async(self, task: str | object, args: Any = None, *,
                            conn: AsyncConn | None = None,
                            **options: Unpack[EnqueueOptions]) -> int:
        """Async twin of :meth:`enqueue` (``conn``: psycopg ``AsyncConnection``, SQLAlchemy
        ``AsyncConnection``/``AsyncSession``)."""
        job = self.build(task, args, **_check_options(options))
        return (await self.insert_async([job], conn=conn))[0]

    def enqueue_many(self, task: str, args_list: Iterable[Any], *, conn: SyncConn | None = None,
                     **options: Unpack[EnqueueOptions]) -> list[int]:
        """Enqueue many jobs of one task in one round trip (COPY for large batches); returns
        their ids in input order. Options (as for :meth:`enqueue`) apply to every job; an empty
        ``args_list`` inserts nothing::

            app.enqueue_many("resize", [{"id": i} for i in range(1000)], queue="images")
        """
        return self.insert(self._build_many(task, args_list, options), conn=conn)

    async def enqueue_many_async(self, task: str, args_list: Iterable[Any], *,
                                 conn: AsyncConn | None = None,
                                 **options: Unpack[EnqueueOptions]) -> list[int]:
        """Async twin of :meth:`enqueue_many` (``conn``: an async connection or session)."""
        return await self.insert_async(self._build_many(task, args_list, options), conn=conn)

    def _build_many(self, task: str, args_list: Iterable[Any],
                    options: EnqueueOptions) -> list[NewJob]:
        """Validate the shared options once, then only each job's arguments."""
        opts = _check_options(options)
        items = iter(args_list)
        first = next(items, _NOTHING)
        if first is _NOTHING:
            return []
        t = self.build(task, first, **opts)
        registered = self.tasks.get(t.task)
        serialise = registered.serialise if registered else _serialise_plain
        return [t, *(NewJob(t.queue, t.task, serialise(a), t.priority, t.max_attempts, t.run_at,
                            t.delay_s, t.unique_key, t.timeout_s, t.meta_json) for a in items)]

    def insert(self, jobs: Sequence[NewJob], *, conn: SyncConn | None = None) -> list[int]:
        """Insert jobs built with :meth:`build` (mixed tasks and options) in one batch; returns
        their ids in order. ``conn`` as for :meth:`enqueue`."""
        return self._enqueuer(conn).insert_many(jobs, conn=conn)

    async def insert_async(self, jobs: Sequence[NewJob], *,
                           conn: AsyncConn | None = None) -> list[int]:
        """Async twin of :meth:`insert` (``conn``: an async connection or session)."""
        return await self._enqueuer(conn).insert_many_async(jobs, conn=conn)

    # ---- completion inside the handler's transaction --------------------------------------------
    def _completion(self, job: Job | None, result: Any) -> tuple[Completion, Driver, str | None]:
        """What both complete twins need: the running job, a capable driver, the stored result."""
        driver = self._require("transactional_completion")
        return current_completion(job), driver, result_json(result)

    def complete(self, conn: SyncConn, job: Job | None = None, *, result: Any = None) -> None:
        """Mark the running job (default: the current one) succeeded inside ``conn``'s
        transaction, so that the handler's business writes and the completion commit together.

        ``result`` (JSON-serialisable, default None) is stored in the history. Raises
        :class:`pgqueue.CapabilityError` on drivers without transactional completion, and
        :class:`pgqueue.JobError` if this worker no longer holds the job (roll back then).
        """
        done, driver, stored = self._completion(job, result)
        if not driver.finish_in_transaction(conn, done.job.id, worker_id=done.worker_id,
                                            result_json=stored, attempt=done.job.attempt):
            raise _lost_lease(done.job.id)
        done.mark_completed()

    async def complete_async(self, conn: AsyncConn, job: Job | None = None, *,
                             result: Any = None) -> None:
        """Async twin of :meth:`complete` (``conn``: an async connection or session)."""
        done, driver, stored = self._completion(job, result)
        if not await driver.finish_in_transaction_async(
                conn, done.job.id, worker_id=done.worker_id, result_json=stored,
                attempt=done.job.attempt):
            raise _lost_lease(done.job.id)
        done.mark_completed()

    # ---- queue control -------------------------------------------------------------------------
    def pause(self, queue: str) -> None:
        """Pause a queue: no worker claims its jobs until :meth:`resume` (running jobs finish).
        The pause is stored with the queue (postgres: for every worker, across restarts)."""
        self.driver.set_paused(_queue(queue), True)

    async def pause_async(self, queue: str) -> None:
        """Async twin of :meth:`pause`."""
        await self.driver.set_paused_async(_queue(queue), True)

    def resume(self, queue: str) -> None:
        """Let workers claim a paused queue's jobs again (no-op if it is not paused)."""
        self.driver.set_paused(_queue(queue), False)

    async def resume_async(self, queue: str) -> None:
        """Async twin of :meth:`resume`."""
        await self.driver.set_paused_async(_queue(queue), False)

    def count(self, queue: str) -> int:
        """Waiting (including scheduled) + running jobs of a queue."""
        return self.driver.count(_queue(queue))

    async def count_async(self, queue: str) -> int:
        """Async twin of :meth:`count`."""
        return await self.driver.count_async(_queue(queue))

    def sizes(self, queue: str) -> dict[str, int]:
        """``{"waiting", "scheduled", "running", "failed"}`` counts of a queue."""
        return self.driver.sizes(_queue(queue))

    async def sizes_async(self, queue: str) -> dict[str, int]:
        """Async twin of :meth:`sizes`."""
        return await self.driver.sizes_async(_queue(queue))

    def clear(self, queue: str) -> int:
        """Delete a queue's waiting and scheduled jobs; returns how many. Running jobs finish."""
        return self.driver.clear(_queue(queue))

    async def clear_async(self, queue: str) -> int:
        """Async twin of :meth:`clear`."""
        return await self.driver.clear_async(_queue(queue))

    def pop(self, queue: str) -> Job | None:
        """Take the next ready job out of a queue and return it (you own it now), or None."""
        return self.driver.pop(_queue(queue))

    async def pop_async(self, queue: str) -> Job | None:
        """Async twin of :meth:`pop`."""
        return await self.driver.pop_async(_queue(queue))

    def cancel(self, job_id: int) -> bool:
        """Cancel a waiting job (moved to history as cancelled) or ask a running one to stop.
        Returns False if no live job has that id."""
        return self.driver.cancel(_check_id(job_id))

    async def cancel_async(self, job_id: int) -> bool:
        """Async twin of :meth:`cancel`."""
        return await self.driver.cancel_async(_check_id(job_id))

    def get_job(self, job_id: int) -> Job | None:
        """The live (waiting, scheduled or running) job with this id, or None."""
        return self.driver.get_job(_check_id(job_id))

    async def get_job_async(self, job_id: int) -> Job | None:
        """Async twin of :meth:`get_job`."""
        return await self.driver.get_job_async(_check_id(job_id))

    def failed(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]:
        """Archived (dead-letter) jobs, newest first: of ``queue`` (default: every queue), at
        most ``limit`` (default 100)."""
        return self.driver.list_failed(_opt_queue(queue), limit)

    async def failed_async(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]:
        """Async twin of :meth:`failed`."""
        return await self.driver.list_failed_async(_opt_queue(queue), limit)

    def get_failed(self, job_id: int) -> FailedJob:
        """The archived job with this id; :class:`pgqueue.JobNotFoundError` if there is none."""
        return _found(job_id, self.driver.get_failed(_check_id(job_id)))

    async def get_failed_async(self, job_id: int) -> FailedJob:
        """Async twin of :meth:`get_failed`."""
        return _found(job_id, await self.driver.get_failed_async(_check_id(job_id)))

    def retry_failed(self, job_id: int) -> int:
        """Re-drive one archived job: back to waiting with its id and attempt 0; returns the id.
        :class:`pgqueue.JobNotFoundError` if no archived job has that id."""
        return _first(job_id, self.driver.redrive([_check_id(job_id)]))

    async def retry_failed_async(self, job_id: int) -> int:
        """Async twin of :meth:`retry_failed`."""
        return _first(job_id, await self.driver.redrive_async([_check_id(job_id)]))

    def retry_all_failed(self, queue: str | None = None) -> list[int]:
        """Re-drive every archived job (of ``queue``, when given); returns their ids."""
        return self.driver.redrive(None, _opt_queue(queue))

    async def retry_all_failed_async(self, queue: str | None = None) -> list[int]:
        """Async twin of :meth:`retry_all_failed`."""
        return await self.driver.redrive_async(None, _opt_queue(queue))

    def purge_failed(self, queue: str | None = None, before: dt.datetime | None = None) -> int:
        """Delete archived jobs (of ``queue``, failed before ``before``; default: all);
        returns how many."""
        return self.driver.purge_failed(_opt_queue(queue), before)

    async def purge_failed_async(self, queue: str | None = None,
                                 before: dt.datetime | None = None) -> int:
        """Async twin of :meth:`purge_failed`."""
        return await self.driver.purge_failed_async(_opt_queue(queue), before)

    def stats(self) -> list[QueueStats]:
        """Per-queue counts (the ``queue_stats`` view)."""
        return self.driver.stats()

    async def stats_async(self) -> list[QueueStats]:
        """Async twin of :meth:`stats`."""
        return await self.driver.stats_async()

    # ---- workers ---------------------------------------------------------------------------------
    def worker(self, queues: Sequence[str] | None = None, **options: Any) -> Worker:
        """A :class:`pgqueue.Worker` for this app on ``queues`` (default: every queue of the
        registered tasks, else the app's default queue); ``options`` are the Worker's
        (``concurrency``, ``poll_interval``, ``burst``...)."""
        return Worker(self, queues=queues, **options)


def _lost_lease(job_id: int) -> JobError:
    return JobError(
        f"job {job_id} is no longer held by this worker (its lease expired and it was rescued, "
        "or it was cancelled); roll back this transaction: another attempt will run the job")


def _driver_by_name(name: str, app: App) -> Driver:
    return get_driver(name, schema=app.schema)


def _serialise_plain(args: Any) -> str:
    """The JSON text of an unregistered task's arguments (no signature to check them by)."""
    return dumps_args(to_json_object(args if args is not None else {}))


def _check_options(options: EnqueueOptions) -> EnqueueOptions:
    """``options`` if they are all enqueue options (callers without a type checker can pass
    any keyword); else a ValidationError listing the allowed ones."""
    unknown = sorted(set(options) - set(_ENQUEUE_OPTIONS))
    if unknown:
        raise ValidationError(f"unknown enqueue option(s) {', '.join(unknown)}; allowed: "
                              f"{', '.join(_ENQUEUE_OPTIONS)}")
    return options


def _check_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
        raise ValidationError(f"job id must be a positive integer, not {job_id!r}")
    return job_id


def _queue(queue: str) -> str:
    return validate_name(queue, "queue")


def _opt_queue(queue: str | None) -> str | None:
    return None if queue is None else _queue(queue)


def _found(job_id: int, found: T | None) -> T:
    """What a lookup of an archived job found; JobNotFoundError when nothing."""
    if found is None:
        raise JobNotFoundError(f"no failed job with id {job_id}")
    return found


def _first(job_id: int, ids: Sequence[int]) -> int:
    """The one id a re-drive of an archived job returned; JobNotFoundError when none."""
    return _found(job_id, ids[0] if ids else None)
