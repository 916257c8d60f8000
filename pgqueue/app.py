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

import contextlib
import dataclasses
import datetime as dt
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, Unpack, overload

from pgqueue import _tracing
from pgqueue._codec import result_json
from pgqueue._defaults import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_SNOOZES,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    DEFAULT_SCHEMA,
)
from pgqueue._dsn import to_libpq
from pgqueue._names import validate_name, validate_schema
from pgqueue._tracing import Publishing
from pgqueue.config import Settings, find_settings
from pgqueue.config._settings import needs_database_url
from pgqueue.config._values import parse_driver, parse_pooler
from pgqueue.drivers import get_driver
from pgqueue.drivers.base import (
    Driver,
    FailedJob,
    FinalOutcome,
    QueueLimits,
    QueueStats,
    ScheduleInfo,
)
from pgqueue.drivers.postgres.driver import PostgresDriver
from pgqueue.errors import (
    CapabilityError,
    ConfigurationError,
    JobError,
    JobFailedError,
    JobNotFoundError,
    ResultTimeoutError,
    UnknownTaskError,
    ValidationError,
    WorkflowError,
)
from pgqueue.job import Dependency, FinishedJob, Job, NewJob, NewJobs, WorkflowJob
from pgqueue.periodic import CatchUp, Schedule, make_schedule
from pgqueue.retry import Backoff
from pgqueue.task import (
    EnqueueOptions,
    Task,
    TaskDecorator,
    check_concurrency_key,
    check_delay,
    check_dependencies,
    check_max_attempts,
    check_new_jobs,
    check_priority,
    check_run_time,
    check_timeout,
    check_unique_key,
    derive_concurrency_key,
    dumps_args,
    to_json_object,
)
from pgqueue.worker import Worker
from pgqueue.worker._registry import DeadLetterHandler
from pgqueue.worker.context import Completion, current_completion
from pgqueue.workflow import Flow, WorkflowRun, plan, planned_ids

if TYPE_CHECKING:
    from pgqueue._conn import AsyncConn, SyncConn

__all__ = ["App", "DeadLetterHandler"]

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

#: the keyword arguments enqueue calls accept (the message of an unknown one lists them)
_ENQUEUE_OPTIONS = (*EnqueueOptions.__annotations__, "conn")
_ENQUEUE_OPTION_SET = frozenset(_ENQUEUE_OPTIONS)
#: the dependencies and failure policy of a job enqueued without ``depends_on`` or
#: ``on_dependency_failure``
_NO_DEPENDENCIES = check_dependencies(None, None)

#: a capability :meth:`App._require` checks, and what the refusal says
_Capability = Literal["transactional_enqueue", "transactional_completion", "flow_control",
                      "workflows", "shared_pause", "job_lookup", "history", "unique_keys",
                      "priorities"]
_REFUSALS: dict[_Capability, str] = {
    "transactional_enqueue": "the {driver} driver cannot enqueue inside your transaction; drop "
                             "conn= or use the postgres driver",
    "transactional_completion": "the {driver} driver cannot complete a job in your transaction; "
                                "return from the handler instead, or use the postgres driver",
    "flow_control": "the {driver} driver has no flow control (queue limits, concurrency keys: "
                    "they are enforced in a table every worker shares); use the postgres driver",
    "workflows": "the {driver} driver has no workflows (depends_on, chain/group, Await, "
                 "App.result, durable steps); use the postgres driver",
    "shared_pause": "the {driver} driver cannot pause a queue for every worker (it has no "
                    "shared pause state); stop the queue's workers instead, or use the postgres "
                    "driver",
    "job_lookup": "the {driver} driver cannot find a live job by id (to read or cancel it); "
                  "use the postgres driver",
    "history": "the {driver} driver keeps no history of finished jobs; use the postgres driver",
    "unique_keys": "the {driver} driver cannot honour unique_key (it has no index of live "
                   "jobs); drop unique_key or use the postgres driver",
    "priorities": "the {driver} driver has no priorities (its backend does not order jobs by "
                  "priority); leave priority at its default 20, or use the postgres driver",
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
        strict: whether :meth:`enqueue` refuses task names that are not registered
            (:class:`pgqueue.UnknownTaskError`). Default ``None``: refuse them once the app
            has at least one task registered (a typo is caught where the tasks are known),
            and accept any valid name on an app without tasks (a producer whose workers run
            elsewhere). ``True`` always refuses; ``False`` never does (an app that registers
            some tasks and also enqueues tasks of other services).
        default_queue: queue of tasks registered without one (default ``"default"``).
        pool_size: size of pgqueue's own connection pools (default 10).
        pooler: what stands between pgqueue and PostgreSQL: ``None`` (default: the configured
            one, ``PGQUEUE_POOLER``, else nothing), ``"transaction"`` (PgBouncer's transaction
            mode, most cloud poolers: no prepared statements, no session state, no LISTEN
            through it) or ``"session"``. See ``docs/deploy.md``.
        listen_url: a direct PostgreSQL URL for the workers' LISTEN connection when
            ``database_url`` is a transaction pooler (default: the configured one,
            ``PGQUEUE_LISTEN_URL``, else none: such workers poll).
        environ: the environment the configuration is read from (default ``os.environ``, only
            read; ``.env`` and ``app-config.yaml`` of the current directory count as well).

    Attributes:
        tasks: the registry, by name and alias. dead_letter_handlers: hooks by queue.
        schedules: the periodic jobs, by name (:meth:`periodic`, :meth:`add_periodic`).
        queue_limits: the declared flow-control limits, by queue (:meth:`queue`).

    Example::

        app = pgqueue.App("postgresql://localhost/shop")
        app.enqueue("send_email", {"to": "a@b.c"}, delay=60)
        app = pgqueue.App()          # QUEUE_CONFIG=postgresql://... (Vela) works as well
    """

    def __init__(self, database_url: str | None = None, *, schema: str | None = None,
                 driver: Driver | str | None = None, strict: bool | None = None,
                 default_queue: str = DEFAULT_QUEUE, pool_size: int = 10,
                 pooler: str | None = None, listen_url: str | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.strict = strict
        self.default_queue = validate_name(default_queue, "queue")
        self.tasks: dict[str, Task] = {}
        self.dead_letter_handlers: dict[str, DeadLetterHandler] = {}
        self.schedules: dict[str, Schedule] = {}
        self.queue_limits: dict[str, QueueLimits] = {}
        self._pool_size = pool_size
        self.pooler = parse_pooler(pooler, "pooler", "argument")
        self.listen_url = (None if listen_url is None
                           else to_libpq(listen_url, source="listen_url argument"))
        self._driver: Driver | None = None
        self.database_url: str | None = None
        self._url_source = "database_url argument"
        settings: Settings | None = None
        if driver is None and (database_url is None or schema is None):
            # what is not given comes from the configuration, resolved as the CLI resolves it
            settings = find_settings(environ=environ, database_url=database_url)
        self.schema = validate_schema(
            schema if schema is not None else settings.schema if settings else DEFAULT_SCHEMA)
        if settings is not None:  # the deployment's pooler, unless given here
            self.pooler = self.pooler or settings.pooler
            self.listen_url = self.listen_url or settings.listen_url
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
        elif settings.driver == "sqs":
            self._driver = _sqs_driver(settings)
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
            app_kwargs.setdefault("pooler", settings.pooler)
            app_kwargs.setdefault("listen_url", settings.listen_url)
            return cls(database_url=settings.database_url, schema=settings.schema, **app_kwargs)
        if name == "memory":
            return cls(driver=get_driver("memory"), schema=settings.schema, **app_kwargs)
        if name == "sqs":
            return cls(driver=_sqs_driver(settings), schema=settings.schema, **app_kwargs)
        return cls(driver=get_driver("redis", url=settings.redis_url,
                                     socket_timeout=settings.redis_timeout),
                   schema=settings.schema, **app_kwargs)

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
                                          pool_size=self._pool_size, pooler=self.pooler,
                                          listen_url=self.listen_url)
        return self._driver

    def _require(self, capability: _Capability) -> Driver:
        """The driver, if it has ``capability``; else a :class:`pgqueue.CapabilityError` saying
        what it cannot do. The one place the App checks what a driver can do."""
        driver = self.driver
        if not getattr(driver.capabilities, capability):
            raise CapabilityError(_REFUSALS[capability].format(driver=driver.name))
        return driver

    def _enqueuer(self, conn: object, jobs: Sequence[NewJob] = ()) -> Driver:
        """The driver to insert with: with a caller's ``conn``, only one that can join it;
        for ``jobs`` with a concurrency key, only one with flow control; with dependencies,
        only one with workflows; for jobs with a priority other than the default, a unique key
        or a delay, only a driver that honours them (up to its ``max_delay_s``). Nothing is
        written when one job is refused."""
        driver = self.driver
        caps = driver.capabilities
        if (caps.flow_control and caps.workflows and caps.priorities and caps.unique_keys
                and caps.max_delay_s is None and (conn is None or caps.transactional_enqueue)):
            return driver  # it honours every job option: nothing to refuse, no job to look at
        if any(getattr(j, "concurrency_key", None) is not None for j in jobs):
            self._require("flow_control")
        if any(getattr(j, "depends_on", ()) or getattr(j, "workflow_id", None) for j in jobs):
            self._require("workflows")
        if not caps.priorities and any(j.priority != DEFAULT_PRIORITY for j in jobs):
            bad = next(j.priority for j in jobs if j.priority != DEFAULT_PRIORITY)
            raise CapabilityError(f"priority {bad}: " + _REFUSALS["priorities"].format(
                driver=self.driver.name))
        if not caps.unique_keys and any(j.unique_key is not None for j in jobs):
            self._require("unique_keys")
        if caps.max_delay_s is not None:
            _check_max_delay(jobs, caps.max_delay_s, self.driver.name)
        return self.driver if conn is None else self._require("transactional_enqueue")

    def use_database(self, database_url: str, *, source: str = "argument",
                     schema: str | None = None) -> None:
        """Point this app at another PostgreSQL database (closing pools made for the old one),
        and at another pgqueue ``schema`` when given (default: keep :attr:`schema`).

        For apps defined at import time whose URL is only known later (the CLI's
        ``--database-url`` and ``--schema``, the demo's embedded server). ``source`` names
        where the URL came from in error messages.
        """
        url = to_libpq(database_url, source=source)
        if schema is not None:
            self.schema = validate_schema(schema)
        if self._driver is not None:
            self._driver.close()
            self._driver = None
        self.database_url = url

    def use_driver(self, driver: Driver | str | None) -> None:
        """Use this driver from now on (an instance, or ``"memory"``/``"redis"``; None: the
        default again, postgres on :attr:`database_url` created on first use); the previous one
        is not closed (the caller may still own it). For tests: :mod:`pgqueue.testing` wraps
        the app's driver this way, and its pytest plugin points an app defined at import time
        at a throwaway driver::

            app.use_driver("memory")
        """
        self._driver = _driver_by_name(driver, self) if isinstance(driver, str) else driver

    @property
    def has_driver(self) -> bool:
        """Whether a driver is configured or already made (:attr:`driver` would not raise)."""
        return self._driver is not None or self.database_url is not None

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
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: None = None, /, *, name: str | None = None, queue: str | None = None,
             priority: int = DEFAULT_PRIORITY, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
             retry: Backoff | None = None, timeout: float | None = None,
             aliases: Iterable[str] = (),
             max_snoozes: int | None = DEFAULT_MAX_SNOOZES,
             concurrency_key: Callable[[dict[str, Any]], str] | None = None,
             ) -> TaskDecorator: ...

    def task(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
             queue: str | None = None, priority: int = DEFAULT_PRIORITY,
             max_attempts: int = DEFAULT_MAX_ATTEMPTS, retry: Backoff | None = None,
             timeout: float | None = None, aliases: Iterable[str] = (),
             max_snoozes: int | None = DEFAULT_MAX_SNOOZES,
             concurrency_key: Callable[[dict[str, Any]], str] | None = None,
             ) -> Task | TaskDecorator:
        """Register a function or a class-based job (with ``handle()``) as a task.

        ``name`` is the stable name stored in the jobs table (default: ``module.qualname``);
        renaming the Python function later does not orphan queued jobs if the old name is kept
        in ``aliases``. ``queue`` defaults to the app's ``default_queue``, ``priority`` to 20,
        ``max_attempts`` to 5. ``retry`` is a backoff policy (``pgqueue.RetryPolicy``, the
        default, or any ``(attempt) -> seconds``); ``timeout`` is seconds per attempt (default
        none). ``max_snoozes`` bounds how often a job may :class:`pgqueue.Snooze` (default 100,
        None: no limit): the snooze after the last allowed one archives the job in
        ``failed_jobs``. ``concurrency_key`` derives each job's concurrency key from its
        arguments (see :meth:`queue`: at most ``key_concurrency`` running jobs per key), e.g.
        ``@app.task(queue="sync", concurrency_key=lambda args: str(args["tenant_id"]))``.
        Use bare (``@app.task``) or with options (``@app.task(name="x")``).
        """

        def register(f: Callable[P, R]) -> Task[P, R]:
            task_name = name or f"{f.__module__}.{f.__qualname__}"
            task = Task(self, f, name=task_name, queue=queue or self.default_queue,
                        priority=priority, max_attempts=max_attempts, retry=retry,
                        timeout=timeout, aliases=tuple(aliases), max_snoozes=max_snoozes,
                        concurrency_key=concurrency_key)
            if concurrency_key is not None and self._driver is not None:
                self._require("flow_control")
            for key in (task.name, *task.aliases):
                if key in self.tasks and self.tasks[key].handler is not f:
                    raise ValidationError(f"task name {key!r} is already registered to "
                                          f"{self.tasks[key].handler!r}")
                self.tasks[key] = task
            return task

        return register(fn) if fn is not None else typing.cast(TaskDecorator, register)

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

    # ---- flow control ------------------------------------------------------------------------
    def queue(self, name: str, *, concurrency: int | None = None,
              key_concurrency: int | None = None, rate_limit: int | None = None,
              rate_period: float | dt.timedelta | None = None,
              key_rate_limit: int | None = None,
              key_rate_period: float | dt.timedelta | None = None) -> QueueLimits:
        """Declare a queue's flow-control limits, enforced in the database across every worker
        process and host (see :class:`pgqueue.QueueLimits`):

        - ``concurrency``: at most this many jobs of the queue run at once;
        - ``key_concurrency``: at most this many per ``concurrency_key`` (an enqueue option;
          default 1 per key, unless only ``key_rate_limit`` is set: then not capped);
        - ``rate_limit`` starts per ``rate_period`` (seconds or a timedelta, default 1 s);
        - ``key_rate_limit`` starts per ``key_rate_period`` (default 1 s) for each
          ``concurrency_key``.

        A held-back job waits (it is not failed, its attempt is not counted). The limits are
        written to the ``queues`` table when a worker of this app starts (replacing what
        ``pgqueue queue NAME --concurrency N`` set at run time), or at once with
        :meth:`set_queue_limits`. A queue without limits keeps the plain claim. Bad values raise
        :class:`pgqueue.ValidationError` naming the queue; a driver without ``flow_control``
        raises :class:`pgqueue.CapabilityError`. Nothing is recorded then. Example::

            app.queue("emails", concurrency=10)
            app.queue("api", rate_limit=50, rate_period=1)       # 50 starts a second
            app.queue("tenants", key_concurrency=2)              # 2 per concurrency_key
            app.queue("per_customer", key_rate_limit=5)          # 5 starts a second per key
        """
        limits = QueueLimits.checked(validate_name(name, "queue"), concurrency=concurrency,
                                     key_concurrency=key_concurrency, rate_limit=rate_limit,
                                     rate_period=rate_period, key_rate_limit=key_rate_limit,
                                     key_rate_period=key_rate_period)
        if self._driver is not None:
            self._require("flow_control")
        self.queue_limits[name] = limits
        return limits

    def set_queue_limits(self, name: str, *, concurrency: int | None = None,
                         key_concurrency: int | None = None, rate_limit: int | None = None,
                         rate_period: float | dt.timedelta | None = None,
                         key_rate_limit: int | None = None,
                         key_rate_period: float | dt.timedelta | None = None) -> QueueLimits:
        """Store a queue's limits in the database now (replacing its old ones; no argument:
        no limit). Every worker applies them at its next claim (within about a second). The
        options are those of :meth:`queue`. Example: ``app.set_queue_limits("emails",
        concurrency=5)``."""
        limits = QueueLimits.checked(validate_name(name, "queue"), concurrency=concurrency,
                                     key_concurrency=key_concurrency, rate_limit=rate_limit,
                                     rate_period=rate_period, key_rate_limit=key_rate_limit,
                                     key_rate_period=key_rate_period)
        self._require("flow_control").set_queue_limits_sync(name, limits)
        return limits

    async def apply_queue_limits_async(self) -> None:
        """Write the limits declared with :meth:`queue` to the database (a worker of this app
        does it when it starts)."""
        if self.queue_limits:
            driver = self._require("flow_control")
            for name, limits in sorted(self.queue_limits.items()):
                await driver.set_queue_limits(name, limits)

    # ---- periodic jobs -----------------------------------------------------------------------
    def periodic(self, *, cron: str | None = None, every: dt.timedelta | float | None = None,
                 name: str | None = None, queue: str | None = None, args: Any = None,
                 timezone: str = "UTC", catch_up: CatchUp = "latest", catch_up_limit: int = 100,
                 grace: float | dt.timedelta = 60.0, priority: int | None = None,
                 max_attempts: int | None = None, timeout: float | None = None,
                 ) -> Callable[[Any], Task]:
        """Register a function (or a :class:`Task`) as a task run on a schedule.

        ``name`` names the schedule (default: the task's name); the function is registered as
        a task named ``module.qualname`` on ``queue`` unless it already is one. The other
        options are those of :meth:`add_periodic`. Returns the :class:`Task`::

            @app.periodic(cron="*/5 * * * *", name="reports.refresh", queue="reports",
                          timezone="Europe/Berlin")
            def refresh_reports() -> None: ...
        """
        def register(fn: Any) -> Task:
            task = fn if isinstance(fn, Task) else self.task(queue=queue)(fn)
            self.add_periodic(name or task.name, task=task.name, cron=cron, every=every,
                              args=args, queue=queue, timezone=timezone, catch_up=catch_up,
                              catch_up_limit=catch_up_limit, grace=grace, priority=priority,
                              max_attempts=max_attempts, timeout=timeout)
            return task
        return register

    def add_periodic(self, name: str, *, task: str, cron: str | None = None,
                     every: dt.timedelta | float | None = None, args: Any = None,
                     queue: str | None = None, timezone: str = "UTC",
                     catch_up: CatchUp = "latest", catch_up_limit: int = 100,
                     grace: float | dt.timedelta = 60.0, priority: int | None = None,
                     max_attempts: int | None = None, timeout: float | None = None) -> Schedule:
        """Enqueue a job of ``task`` with ``args`` on a schedule: exactly once per tick across
        every worker (see :mod:`pgqueue.periodic`).

        Exactly one of ``cron`` (5 fields, or ``@hourly``, ``@daily``, ``@weekly``,
        ``@monthly``, ``@yearly``) and ``every`` (a timedelta of at least one second, or
        seconds) is required. ``timezone`` (IANA name, default ``"UTC"``) is where the cron
        expression is read; a wall-clock tick that a DST change skips does not fire, one that
        happens twice fires once. ``catch_up`` after downtime: ``"latest"`` (default: one job
        for the missed ticks), ``"all"`` (each missed tick, the newest ``catch_up_limit`` at
        most) or ``"skip"``; a tick counts as missed once it is more than ``grace`` seconds
        old (default 60). ``queue``, ``priority``, ``max_attempts`` and ``timeout`` default to
        the task's. Any bad option raises :class:`pgqueue.ValidationError` naming the schedule,
        before anything is registered::

            app.add_periodic("cleanup", cron="0 3 * * *", task="cleanup", args={"days": 30})
        """
        if isinstance(name, str) and name in self.schedules:
            raise ValidationError(f"schedule {name!r} is already declared; give each periodic "
                                  "job its own name")
        try:
            job = self.build(task, args, queue=queue, priority=priority,
                             max_attempts=max_attempts, timeout=timeout)
        except ValidationError as exc:
            raise type(exc)(f"schedule {name!r}: {exc}") from exc
        schedule = make_schedule(name, job, cron=cron, every=every, timezone=timezone,
                                 catch_up=catch_up, catch_up_limit=catch_up_limit, grace=grace)
        if self._driver is not None and not self._driver.capabilities.periodic:
            raise CapabilityError(f"schedule {name!r}: the {self._driver.name} driver has no "
                                  "periodic jobs (they need a table shared by every worker); "
                                  "use the postgres driver")
        self.schedules[schedule.name] = schedule
        return schedule

    def periodic_schedules(self) -> list[ScheduleInfo]:
        """Every schedule the database knows, with its last and next tick and whether it is
        paused or stale (no longer declared by the workers' code: it never fires)."""
        return self.driver.list_schedules()

    async def periodic_schedules_async(self) -> list[ScheduleInfo]:
        """Async twin of :meth:`periodic_schedules`."""
        return await self.driver.list_schedules_async()

    def pause_periodic(self, name: str) -> None:
        """Stop firing a schedule, for every worker, until :meth:`resume_periodic`; the ticks
        that pass meanwhile never fire. :class:`pgqueue.JobNotFoundError` if it is unknown."""
        _schedule_found(name, self.driver.set_schedule_paused(_schedule(name), True))

    async def pause_periodic_async(self, name: str) -> None:
        """Async twin of :meth:`pause_periodic`."""
        _schedule_found(name, await self.driver.set_schedule_paused_async(_schedule(name), True))

    def resume_periodic(self, name: str) -> None:
        """Fire a paused schedule again, from its next tick on."""
        _schedule_found(name, self.driver.set_schedule_paused(_schedule(name), False))

    async def resume_periodic_async(self, name: str) -> None:
        """Async twin of :meth:`resume_periodic`."""
        _schedule_found(name, await self.driver.set_schedule_paused_async(_schedule(name),
                                                                          False))

    def run_periodic_now(self, name: str) -> int:
        """Enqueue a schedule's job now, outside its ticks (which are unchanged); returns the
        job id. Works from any process: the job is built from the schedule's row."""
        return _schedule_found(name, self.driver.run_schedule_now(_schedule(name)))

    async def run_periodic_now_async(self, name: str) -> int:
        """Async twin of :meth:`run_periodic_now`."""
        return _schedule_found(name, await self.driver.run_schedule_now_async(_schedule(name)))

    # ---- enqueue -------------------------------------------------------------------------------
    def build(self, task: str | object, args: Any = None, *, queue: str | None = None,
              priority: int | None = None, delay: float | dt.timedelta | None = None,
              run_at: dt.datetime | None = None, max_attempts: int | None = None,
              unique_key: str | None = None, timeout: float | None = None,
              meta: Mapping[str, Any] | None = None,
              concurrency_key: str | None = None, depends_on: Sequence[int] | None = None,
              on_dependency_failure: str | None = None) -> NewJob:
        """Validate one job and return it ready to insert (raises :class:`ValidationError`).

        The options and their defaults are those of :meth:`enqueue`
        (:class:`pgqueue.task.EnqueueOptions`). Insert built jobs with :meth:`insert`::

            app.insert([app.build("resize", {"id": i}, priority=i) for i in range(3)])
        """
        registered, task_name, args = self._resolve(task, args)
        serialise = _serialiser(registered)
        job = self._template(registered, task_name, lambda: serialise(args), queue=queue,
                             priority=priority, delay=delay, run_at=run_at,
                             max_attempts=max_attempts, unique_key=unique_key, timeout=timeout,
                             meta=meta, concurrency_key=concurrency_key, depends_on=depends_on,
                             on_dependency_failure=on_dependency_failure)
        return self._keyed(registered, job)

    def _resolve(self, task: str | object, args: Any) -> tuple[Task | None, str, Any]:
        """(the registered task or None, the task name to store, the arguments) of a job."""
        registered: Task | None
        if isinstance(task, str):
            registered = self.tasks.get(task)
            if registered is None:
                validate_name(task, "task")
                if self.strict or (self.strict is None and self.tasks):
                    raise _unknown_task(task, self.tasks)
            return registered, registered.name if registered else task, args
        registered = self.task_for(task)  # a class-based job instance
        if registered is None:
            raise UnknownTaskError(f"{type(task).__name__} is not a registered task; "
                                   "decorate its class with @app.task")
        if args is not None:
            raise ValidationError("pass either a job instance or a task name with args")
        return registered, registered.name, task

    def _template(self, registered: Task | None, task_name: str,
                  args_json: Callable[[], str] | None = None, *, queue: str | None = None,
                  priority: int | None = None, delay: float | dt.timedelta | None = None,
                  run_at: dt.datetime | None = None, max_attempts: int | None = None,
                  unique_key: str | None = None, timeout: float | None = None,
                  meta: Mapping[str, Any] | None = None,
                  concurrency_key: str | None = None, depends_on: Sequence[int] | None = None,
                  on_dependency_failure: str | None = None) -> NewJob:
        """A job with these options validated and defaulted, and empty args (the part of
        :meth:`build` that a batch of one task shares); ``args_json``, when given, makes its
        arguments' JSON text (validating them) once the options are found valid, so that one
        job is built once."""
        # each check runs only for an option that is set: an unset one is valid as it is (the
        # common enqueue sets none, and pays for none)
        if concurrency_key is not None:
            check_concurrency_key(concurrency_key)
            self._require("flow_control")
        deps, policy = (_NO_DEPENDENCIES if depends_on is None and on_dependency_failure is None
                        else check_dependencies(depends_on, on_dependency_failure))
        if deps:
            self._require("workflows")
            if unique_key is not None:
                raise ValidationError("a job with depends_on cannot have a unique_key")
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
        if delay_s is not None or run_at is not None:
            check_run_time(delay_s=delay_s, run_at=run_at)
        return NewJob(
            queue=validate_name(queue, "queue") if queue is not None else (
                registered.queue if registered else self.default_queue),
            task=task_name,
            args_json="{}" if args_json is None else args_json(),
            priority=check_priority(priority) if priority is not None else (
                registered.priority if registered else DEFAULT_PRIORITY),
            max_attempts=check_max_attempts(max_attempts) if max_attempts is not None else (
                registered.max_attempts if registered else DEFAULT_MAX_ATTEMPTS),
            run_at=run_at,
            delay_s=delay_s,
            unique_key=None if unique_key is None else check_unique_key(unique_key),
            timeout_s=check_timeout(timeout) if timeout is not None else (
                registered.timeout if registered else None),
            meta_json="{}" if meta is None else dumps_args(to_json_object(meta, "meta"),
                                                           "meta"),
            concurrency_key=concurrency_key,
            depends_on=deps,
            on_dependency_failure=policy,
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
        jobs = (self.build(task, args, **_check_options(options)),)
        if _tracing.active() is None:  # tracing off: no span, nothing to stamp
            return self._enqueuer(conn, jobs).insert_many(jobs, conn=conn)[0]
        with _traced(jobs) as (stamped, span):
            ids = self._enqueuer(conn, stamped).insert_many(stamped, conn=conn)
            if span is not None:
                span.set_ids(ids)
        return ids[0]

    async def enqueue_async(self, task: str | object, args: Any = None, *,
                            conn: AsyncConn | None = None,
                            **options: Unpack[EnqueueOptions]) -> int:
        """Async twin of :meth:`enqueue` (``conn``: psycopg ``AsyncConnection``, SQLAlchemy
        ``AsyncConnection``/``AsyncSession``)."""
        jobs = (self.build(task, args, **_check_options(options)),)
        if _tracing.active() is None:  # tracing off: no span, nothing to stamp
            return (await self._enqueuer(conn, jobs).insert_many_async(jobs, conn=conn))[0]
        with _traced(jobs) as (stamped, span):
            ids = await self._enqueuer(conn, stamped).insert_many_async(stamped, conn=conn)
            if span is not None:
                span.set_ids(ids)
        return ids[0]

    def enqueue_many(self, task: str, args_list: Iterable[Any], *, conn: SyncConn | None = None,
                     **options: Unpack[EnqueueOptions]) -> list[int]:
        """Enqueue many jobs of one task in one round trip (COPY for large batches); returns
        their ids in input order. Options (as for :meth:`enqueue`) apply to every job; an empty
        ``args_list`` inserts nothing::

            app.enqueue_many("resize", [{"id": i} for i in range(1000)], queue="images")
        """
        with _traced(self._build_many(task, args_list, options, lazy=conn is None)) as (jobs, _):
            return self._enqueuer(conn, _shapes(jobs)).insert_many(jobs, conn=conn)

    async def enqueue_many_async(self, task: str, args_list: Iterable[Any], *,
                                 conn: AsyncConn | None = None,
                                 **options: Unpack[EnqueueOptions]) -> list[int]:
        """Async twin of :meth:`enqueue_many` (``conn``: an async connection or session)."""
        with _traced(self._build_many(task, args_list, options, lazy=conn is None)) as (jobs, _):
            return await self._enqueuer(conn, _shapes(jobs)).insert_many_async(jobs, conn=conn)

    def _build_many(self, task: str, args_list: Iterable[Any], options: EnqueueOptions, *,
                    lazy: bool = False) -> Sequence[NewJob]:
        """Validate the shared options once, then each job's arguments (a ValidationError
        names the row: ``args_list[7]: ...``), all before anything is written. ``lazy`` (the
        batch goes in a transaction of pgqueue's own): the arguments are validated when the
        driver first needs them, which the PostgreSQL driver's COPY does while the server
        writes the rows before (an invalid row then rolls the whole batch back); see
        :class:`~pgqueue.job.NewJobs`. The jobs share everything but their arguments (a
        ``NewJobs``), unless the task derives a concurrency key from each job's arguments."""
        opts = _check_options(options)
        if not isinstance(task, str):
            raise ValidationError("enqueue_many takes a task name; for job instances use "
                                  "App.insert([App.build(job) ...])")
        registered, task_name, _ = self._resolve(task, None)
        template = self._template(registered, task_name, **opts)
        serialise = _serialiser(registered)
        if registered is not None and registered.concurrency_key is not None:
            out = []
            for i, args in enumerate(args_list):
                try:
                    out.append(self._keyed(registered, _with_args(template, serialise(args))))
                except ValidationError as exc:
                    raise type(exc)(f"args_list[{i}]: {exc}") from exc
            return out
        batch = NewJobs(template, list(args_list), serialise)
        if not lazy:
            batch.args_json  # noqa: B018 (serialises them all now: raises on the first bad one)
        return batch

    def _keyed(self, registered: Task | None, job: NewJob) -> NewJob:
        """``job`` with the concurrency key its task derives from its arguments (a key given
        to the enqueue call wins)."""
        if registered is None or registered.concurrency_key is None or job.concurrency_key:
            return job
        self._require("flow_control")
        return dataclasses.replace(
            job, concurrency_key=derive_concurrency_key(registered, job.args_json))

    def insert(self, jobs: Sequence[NewJob], *, conn: SyncConn | None = None) -> list[int]:
        """Insert jobs built with :meth:`build` (mixed tasks and options) in one batch; returns
        their ids in order. ``conn`` as for :meth:`enqueue`. Every job is checked before
        anything is written (all or nothing); a :class:`pgqueue.ValidationError` names the
        first bad one's index (``jobs[3]: ...``)."""
        with _traced(check_new_jobs(jobs)) as (checked, _):
            return self._enqueuer(conn, checked).insert_many(checked, conn=conn)

    async def insert_async(self, jobs: Sequence[NewJob], *,
                           conn: AsyncConn | None = None) -> list[int]:
        """Async twin of :meth:`insert` (``conn``: an async connection or session)."""
        with _traced(check_new_jobs(jobs)) as (checked, _):
            return await self._enqueuer(conn, checked).insert_many_async(checked, conn=conn)

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

    # ---- workflows ---------------------------------------------------------------------------
    def build_workflow(self, flow: Flow) -> tuple[list[NewJob], list[int]]:
        """Validate a workflow (:func:`pgqueue.chain`, :func:`pgqueue.group`) and return its
        jobs ready to insert, with a new workflow id, and the indexes of its final stage.
        Raises :class:`pgqueue.WorkflowError` / :class:`ValidationError` before anything is
        written."""
        self._require("workflows")
        planned, final = plan(flow)
        flow_id = uuid.uuid4().hex
        jobs = []
        for n, p in enumerate(planned):
            sig = p.signature
            if not isinstance(sig.task, Task) or self.tasks.get(sig.task.name) is not sig.task:
                raise WorkflowError(f"workflow job {n}: task {sig.task.name!r} is not "
                                    "registered with this app")
            opts = _check_options(sig.options)
            if opts.get("depends_on") or opts.get("unique_key"):
                raise WorkflowError(f"workflow job {n} ({sig.task.name}): depends_on and "
                                    "unique_key are not options of a workflow member (the "
                                    "workflow sets the dependencies)")
            args = dict(sig.kwargs)
            if p.arg is not None:
                args[p.arg] = None  # filled with the results when its dependencies finish
            try:
                job = self.build(sig.task.name, args, **opts)
            except ValidationError as exc:
                raise type(exc)(f"workflow job {n} ({sig.task.name}): {exc}") from exc
            deps = tuple(Dependency(index=i, arg=p.arg, pos=pos) for i, pos in p.deps)
            jobs.append(dataclasses.replace(job, depends_on=deps, workflow_id=flow_id))
        return jobs, final

    def enqueue_workflow(self, flow: Flow, *, conn: SyncConn | None = None) -> WorkflowRun:
        """Enqueue a whole workflow in one transaction (``conn``: yours, as for
        :meth:`enqueue`: a rollback leaves none of its jobs); returns a
        :class:`pgqueue.WorkflowRun` (its id and job ids)::

            run = app.enqueue_workflow(group(b.s(), c.s()).then(d.s()))
            app.result(run.last[0], timeout=60)
        """
        jobs, final = self.build_workflow(flow)
        with _traced(jobs) as (stamped, _):
            ids = self._enqueuer(conn, stamped).insert_many(stamped, conn=conn)
        return WorkflowRun(jobs[0].workflow_id or "", ids, planned_ids(ids, final))

    async def enqueue_workflow_async(self, flow: Flow, *,
                                     conn: AsyncConn | None = None) -> WorkflowRun:
        """Async twin of :meth:`enqueue_workflow`."""
        jobs, final = self.build_workflow(flow)
        with _traced(jobs) as (stamped, _):
            ids = await self._enqueuer(conn, stamped).insert_many_async(stamped, conn=conn)
        return WorkflowRun(jobs[0].workflow_id or "", ids, planned_ids(ids, final))

    def result(self, job_id: int, *, timeout: float | None = None) -> Any:
        """Wait until job ``job_id`` has finished and return its result (the handler's return
        value, as stored JSON). Waits on a NOTIFY sent when the job completes (not by polling;
        it looks again every few seconds in case a notification was lost). ``timeout``:
        seconds (default None: wait as long as it takes).

        Raises :class:`pgqueue.JobFailedError` if the job failed for good or was cancelled,
        :class:`pgqueue.ResultTimeoutError` at the timeout, :class:`pgqueue.JobNotFoundError`
        for an unknown id (or one whose history was dropped).
        """
        driver = self._require("workflows")
        return _result_of(job_id, driver.wait_result(_check_id(job_id), _timeout(timeout)),
                          timeout)

    async def result_async(self, job_id: int, *, timeout: float | None = None) -> Any:
        """Async twin of :meth:`result`."""
        driver = self._require("workflows")
        return _result_of(job_id, await driver.wait_result_async(_check_id(job_id),
                                                                 _timeout(timeout)), timeout)

    def workflow(self, workflow_id: str) -> list[WorkflowJob]:
        """Every job of the workflow ``workflow_id`` with its state, in workflow order (empty
        for an unknown id). The ``workflows`` view sums them up in SQL."""
        return self._require("workflows").workflow(_workflow_id(workflow_id))

    async def workflow_async(self, workflow_id: str) -> list[WorkflowJob]:
        """Async twin of :meth:`workflow`."""
        return await self._require("workflows").workflow_async(_workflow_id(workflow_id))

    # ---- queue control -------------------------------------------------------------------------
    def pause(self, queue: str) -> None:
        """Pause a queue: no worker claims its jobs until :meth:`resume` (running jobs finish).
        The pause is stored with the queue (postgres: for every worker, across restarts)."""
        self._require("shared_pause").set_paused(_queue(queue), True)

    async def pause_async(self, queue: str) -> None:
        """Async twin of :meth:`pause`."""
        await self._require("shared_pause").set_paused_async(_queue(queue), True)

    def resume(self, queue: str) -> None:
        """Let workers claim a paused queue's jobs again (no-op if it is not paused)."""
        self._require("shared_pause").set_paused(_queue(queue), False)

    async def resume_async(self, queue: str) -> None:
        """Async twin of :meth:`resume`."""
        await self._require("shared_pause").set_paused_async(_queue(queue), False)

    def forget_queue(self, queue: str) -> bool:
        """Drop what is stored about a queue: its pause state (a paused queue's jobs can be
        claimed again) and its listing in :meth:`stats` once it has no jobs and no recent
        history. Jobs are not touched. Returns True if anything was stored (False: the queue
        was never paused or resumed). Undoes a mistyped :meth:`pause`::

            app.pause("emials")
            app.forget_queue("emials")
        """
        return self._require("shared_pause").forget_queue(_queue(queue))

    async def forget_queue_async(self, queue: str) -> bool:
        """Async twin of :meth:`forget_queue`."""
        return await self._require("shared_pause").forget_queue_async(_queue(queue))

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
        return self._require("job_lookup").cancel(_check_id(job_id))

    async def cancel_async(self, job_id: int) -> bool:
        """Async twin of :meth:`cancel`."""
        return await self._require("job_lookup").cancel_async(_check_id(job_id))

    def get_job(self, job_id: int) -> Job | None:
        """The live (waiting, scheduled or running) job with this id, or None."""
        return self._require("job_lookup").get_job(_check_id(job_id))

    async def get_job_async(self, job_id: int) -> Job | None:
        """Async twin of :meth:`get_job`."""
        return await self._require("job_lookup").get_job_async(_check_id(job_id))

    def get_finished(self, job_id: int) -> FinishedJob | None:
        """The finished (``succeeded`` or ``cancelled``) job with this id, with its ``result``,
        or None (not finished, unknown, or dropped by history retention). Live jobs are read
        with :meth:`get_job`, archived failures with :meth:`get_failed`::

            done = app.get_finished(job_id)
            if done is not None and done.state == "succeeded":
                print(done.result)
        """
        return self._require("history").get_finished(_check_id(job_id))

    async def get_finished_async(self, job_id: int) -> FinishedJob | None:
        """Async twin of :meth:`get_finished`."""
        return await self._require("history").get_finished_async(_check_id(job_id))

    def failed(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]:
        """Archived (dead-letter) jobs, newest first: of ``queue`` (default: every queue), at
        most ``limit`` (an integer >= 0, default 100; else :class:`pgqueue.ValidationError`)."""
        return self.driver.list_failed(_opt_queue(queue), _check_limit(limit))

    async def failed_async(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]:
        """Async twin of :meth:`failed`."""
        return await self.driver.list_failed_async(_opt_queue(queue), _check_limit(limit))

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

    def purge_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        """Delete archived jobs; returns how many. Every filter given applies (``ids``: only
        these; ``queue``; ``task``; ``before``: failed before this aware datetime); with no
        filter, every archived job goes. Ids that are not archived are ignored::

            app.purge_failed(ids=[12, 15])
            app.purge_failed(queue="emails", before=now - dt.timedelta(days=7))
        """
        return self.driver.purge_failed(**_failed_filter(queue, before, ids, task))

    async def purge_failed_async(self, queue: str | None = None,
                                 before: dt.datetime | None = None, *,
                                 ids: Sequence[int] | None = None,
                                 task: str | None = None) -> int:
        """Async twin of :meth:`purge_failed`."""
        return await self.driver.purge_failed_async(**_failed_filter(queue, before, ids, task))

    def count_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        """How many archived jobs match the filters (as for :meth:`purge_failed`; none: all)::

            app.count_failed(queue="emails")   # the size of the emails queue's archive
        """
        return self.driver.count_failed(**_failed_filter(queue, before, ids, task))

    async def count_failed_async(self, queue: str | None = None,
                                 before: dt.datetime | None = None, *,
                                 ids: Sequence[int] | None = None,
                                 task: str | None = None) -> int:
        """Async twin of :meth:`count_failed`."""
        return await self.driver.count_failed_async(**_failed_filter(queue, before, ids, task))

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


def _unknown_task(name: str, tasks: Mapping[str, Task]) -> UnknownTaskError:
    """The refusal of an unregistered task name, listing the registered ones (and the closest
    one, for a typo)."""
    import difflib

    known = sorted(tasks)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") if known else "none"
    return UnknownTaskError(
        f"unknown task {name!r}: {hint}registered tasks: {listed} (an App with tasks refuses "
        "other names; pass App(strict=False) to enqueue tasks that other processes register)")


def _lost_lease(job_id: int) -> JobError:
    return JobError(
        f"job {job_id} is no longer held by this worker (its lease expired and it was rescued, "
        "or it was cancelled); roll back this transaction: another attempt will run the job")


def _sqs_driver(settings: Settings) -> Driver:
    """The sqs driver of ``settings`` (``sqs_region``, ``sqs_endpoint``)."""
    return get_driver("sqs", region=settings.sqs_region, endpoint_url=settings.sqs_endpoint)


def _driver_by_name(name: str, app: App) -> Driver:
    return get_driver(name, schema=app.schema)


def _serialise_plain(args: Any) -> str:
    """The JSON text of an unregistered task's arguments (no signature to check them by)."""
    return dumps_args(to_json_object(args if args is not None else {}))


@contextlib.contextmanager
def _traced(jobs: Sequence[NewJob]) -> Iterator[tuple[Sequence[NewJob], Publishing | None]]:
    """The PRODUCER span of an enqueue (see :mod:`pgqueue._tracing`) with the jobs to insert,
    their ``meta`` stamped with its trace context; the jobs themselves (not copied) and no span
    when tracing is off (or there is nothing to insert)."""
    if not jobs or _tracing.active() is None:
        yield jobs, None
        return
    queues = {j.queue for j in jobs}
    tasks = {j.task for j in jobs}
    with _tracing.publish(queues.pop() if len(queues) == 1 else "(mixed)",
                          tasks.pop() if len(tasks) == 1 else "(mixed)", len(jobs)) as span:
        carrier = span.carrier if span is not None else None
        if not carrier:  # a span that is not sampled: nothing to store
            yield jobs, span
            return
        stamped: dict[str, str] = {}  # meta_json -> stamped (a batch shares one meta)
        out = []
        for j in jobs:
            meta = stamped.get(j.meta_json)
            if meta is None:
                meta = stamped[j.meta_json] = _tracing.stamp_meta(j.meta_json, carrier)
            out.append(dataclasses.replace(j, meta_json=meta))
        yield out, span


def _shapes(jobs: Sequence[NewJob]) -> Sequence[NewJob]:
    """What :meth:`App._enqueuer` needs to see of ``jobs``: a :class:`~pgqueue.job.NewJobs`
    differs only in its arguments, so its template stands for all (checking 100,000 jobs one
    by one would make each)."""
    return (jobs.template,) if isinstance(jobs, NewJobs) else jobs


def _with_args(t: NewJob, args_json: str) -> NewJob:
    """``t`` with these arguments (positional: cheaper than ``dataclasses.replace`` per row)."""
    return NewJob(t.queue, t.task, args_json, t.priority, t.max_attempts, t.run_at, t.delay_s,
                  t.unique_key, t.timeout_s, t.meta_json, t.concurrency_key, t.depends_on,
                  t.on_dependency_failure, t.workflow_id)


def _serialiser(registered: Task | None) -> Callable[[Any], str]:
    """How to validate and serialise the arguments of a job of ``registered`` (or of an
    unregistered task)."""
    return registered.serialise if registered is not None else _serialise_plain


def _check_options(options: EnqueueOptions) -> EnqueueOptions:
    """``options`` if they are all enqueue options (callers without a type checker can pass
    any keyword); else a ValidationError listing the allowed ones."""
    if not _ENQUEUE_OPTION_SET.issuperset(options):
        unknown = sorted(set(options) - _ENQUEUE_OPTION_SET)
        raise ValidationError(f"unknown enqueue option(s) {', '.join(unknown)}; allowed: "
                              f"{', '.join(_ENQUEUE_OPTIONS)}")
    return options


def _failed_filter(queue: str | None, before: dt.datetime | None, ids: Sequence[int] | None,
                   task: str | None) -> dict[str, Any]:
    """The validated filters of a purge or count of archived jobs, as the driver's keyword
    arguments."""
    return {"queue": _opt_queue(queue), "before": _check_before(before),
            "ids": None if ids is None else [_check_id(i) for i in ids],
            "task": None if task is None else validate_name(task, "task")}


def _timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise ValidationError(f"timeout must be a number of seconds >= 0, not {timeout!r}")
    return float(timeout)


def _result_of(job_id: int, outcome: FinalOutcome | None, timeout: float | None) -> Any:
    """What :meth:`App.result` returns or raises for a job's outcome."""
    if outcome is None:
        raise ResultTimeoutError(f"job {job_id} did not finish within {timeout} s")
    if outcome.state != "succeeded":
        raise JobFailedError(job_id, outcome.state, outcome.error)
    return outcome.result


def _workflow_id(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise ValidationError(f"a workflow id is a string (WorkflowRun.id), not {value!r:.60}")
    return value


def _check_max_delay(jobs: Sequence[NewJob], limit: float, driver: str) -> None:
    """CapabilityError for the first job whose delay (or ``run_at``) is beyond ``limit``
    seconds from now."""
    now = dt.datetime.now(dt.UTC)
    for j in jobs:
        wait = (j.run_at - now).total_seconds() if j.run_at is not None else (j.delay_s or 0.0)
        if wait > limit:
            raise CapabilityError(
                f"delay of {wait:.0f} s: the {driver} driver delays jobs by at most "
                f"{limit:.0f} s ({limit / 60:g} minutes, its backend's limit); enqueue it "
                "later, or use the postgres driver")


def _check_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
        raise ValidationError(f"job id must be a positive integer, not {job_id!r}")
    return job_id


#: the largest ``limit`` a listing accepts (PostgreSQL's LIMIT takes a bigint; this is plenty)
_MAX_LIMIT = 2**31 - 1


def _check_limit(limit: object) -> int:
    """``limit`` if it is an integer >= 0, else ValidationError."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= _MAX_LIMIT:
        raise ValidationError(f"limit must be an integer from 0 to {_MAX_LIMIT}, not {limit!r}")
    return limit


def _check_before(before: object) -> dt.datetime | None:
    """None, or ``before`` if it is a timezone-aware datetime, else ValidationError (a naive
    one would be read in the database session's time zone: a silent guess)."""
    if before is None:
        return None
    if not isinstance(before, dt.datetime) or before.utcoffset() is None:
        raise ValidationError(f"before must be a timezone-aware datetime, not {before!r}; e.g. "
                              "datetime.now(timezone.utc) - timedelta(days=7)")
    return before


def _queue(queue: str) -> str:
    return validate_name(queue, "queue")


def _schedule(name: str) -> str:
    return validate_name(name, "schedule")


def _schedule_found(name: str, found: T | None) -> T:
    """What an operation on a named schedule found; JobNotFoundError when nothing."""
    if found is None or found is False:
        raise JobNotFoundError(f"no periodic schedule named {name!r}; `pgqueue periodic list` "
                               "shows them")
    return found


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
