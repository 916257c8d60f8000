"""A Backstage-style queue service on pgqueue (sync and async).

::

    from pgqueue.compat import backstage

    work_queue = backstage.get_queue("my-work-queue", dlq_handler=on_dead)
    work_queue.add({"task": "send_email", "recipient": "user@example.com"})
    work_queue.add({"task": "cleanup"}, delay=5000, priority=50)     # ms; lower runs first
    work_queue.process(handle, concurrency=5)   # nothing runs until a handler is attached
    work_queue.pause(); work_queue.resume()
    work_queue.get_job_count()                  # waiting (incl. delayed) + running
    work_queue.disconnect()                     # stop processing; jobs stay

    # async: the same object, with awaitable twins; the worker runs on the running loop
    await work_queue.add_async({...}, priority=1)
    await work_queue.process_async(async_handle)
    await work_queue.disconnect_async()

Mapping to pgqueue:

- a queue is a pgqueue queue of the same name; its jobs are rows of ``jobs`` whose task is
  ``backstage:<queue name>`` and whose ``args`` are the payload (a JSON object);
- ``delay`` is in **milliseconds** (as in Backstage), ``priority`` 0-1000, lower first, default
  20;
- retries: up to ``max_attempts`` runs (setting ``maxAttempts``, default 5) with exponential
  backoff of about 1, 2, 4, 8 s (:class:`pgqueue.RetryPolicy`); then the job is archived in
  ``failed_jobs`` and ``dlq_handler(job, error)`` runs;
- the handler gets a :class:`pgqueue.Job`: ``job.id``, ``job.payload``, ``job.attempt`` (1 for
  the first run); it may be a plain function or ``async def``;
- ``store``: ``"memory"`` (default when no database is configured), ``"postgres"``,
  ``"redis"``, ``"sqs"`` -- each must be configured (:mod:`pgqueue.config`:
  ``postgres.connection``, ``redis.connection``, ``sqs.region`` with an optional
  ``sqs.endpoint``), else :class:`pgqueue.ConfigurationError` (no silent default server);
  ``"kafka"`` raises :class:`pgqueue.DriverError` (not provided);
- on ``sqs``, as the seed documents, priorities are not supported (a priority other than 20
  raises :class:`pgqueue.CapabilityError`) and delays are at most 15 minutes (900,000 ms);
  ``pause()`` raises :class:`pgqueue.CapabilityError` too (SQS has no pause shared by the
  workers: ``disconnect()`` stops this process's worker);
- ``pause()`` is stored with the queue (postgres: in the ``queues`` table, so it holds for every
  worker process and across restarts) until ``resume()``.

Limits: the payload must be a JSON object (a dict, dataclass or pydantic model); process()
runs one worker per queue in this process (run more processes for more).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pgqueue._defaults import DEFAULT_PRIORITY
from pgqueue._names import validate_name
from pgqueue.app import App
from pgqueue.compat import BackgroundWorker, default_settings, worker_app
from pgqueue.config import Settings
from pgqueue.drivers import canonical_name
from pgqueue.errors import ConfigurationError, DriverError, ValidationError
from pgqueue.job import Job
from pgqueue.retry import Backoff, RetryPolicy
from pgqueue.task import EnqueueOptions
from pgqueue.worker import Worker

__all__ = ["DeadLetterHandler", "Handler", "Queue", "get_queue", "queues", "reset", "reset_async"]

#: ``handler(job)``: sync or async; raising means the attempt failed.
Handler = Callable[[Job], Any | Awaitable[Any]]
#: ``dlq_handler(job, error)``: sync or async; runs once a job has used all its attempts.
DeadLetterHandler = Callable[[Job, BaseException], Any | Awaitable[Any]]

TASK_PREFIX = "backstage:"

_queues: dict[str, Queue] = {}
_apps: dict[tuple[Settings, str], App] = {}
_lock = threading.RLock()


class Queue:
    """One Backstage-style queue. Get it with :func:`get_queue` (one instance per name).

    Attributes:
        name: the pgqueue queue name.
        store: the canonical driver name (``postgres``, ``memory``, ``redis``).
        app: the :class:`pgqueue.App` the queue lives in.
        max_attempts: runs of a job before it is dead-lettered.
        task_name: the pgqueue task name of its jobs (``backstage:<name>``).
    """

    def __init__(self, name: str, *, app: App, settings: Settings,
                 dlq_handler: DeadLetterHandler | None = None, max_attempts: int | None = None,
                 retry: Backoff | None = None) -> None:
        self.name = validate_name(name, "queue")
        self.app = app
        self.settings = settings
        self.store = app.driver.name
        self.max_attempts = max_attempts if max_attempts is not None else settings.max_attempts
        self.retry: Backoff = retry if retry is not None else RetryPolicy()
        self.dlq_handler = dlq_handler
        self.task_name = f"{TASK_PREFIX}{self.name}"
        self._handler: Handler | None = None
        self._runner: BackgroundWorker | None = None
        self._lock = threading.Lock()
        self._register(app)

    def __repr__(self) -> str:
        state = "processing" if self.processing else "idle"
        return f"<backstage.Queue {self.name!r} store={self.store} {state}>"

    # ---- the task: one dispatcher per queue -----------------------------------------------
    def _register(self, app: App) -> None:
        app.task(name=self.task_name, queue=self.name, max_attempts=self.max_attempts,
                 retry=self.retry)(self._run)
        if self.dlq_handler is not None:
            app.on_dead_letter(self.name, self.dlq_handler)

    def _run(self, job: Job, **_payload: Any) -> Any:
        """Call the attached handler with the job (the payload is ``job.payload``)."""
        handler = self._handler
        if handler is None:
            raise RuntimeError(f"queue {self.name!r} has no handler attached (disconnected); "
                               "the job will be retried")
        return handler(job)

    # ---- adding jobs ---------------------------------------------------------------------------
    def _options(self, delay: float, priority: int) -> EnqueueOptions:
        """The enqueue options of one :meth:`add` (``delay`` checked and turned into seconds);
        the same for the sync and the async call."""
        if isinstance(delay, bool) or not isinstance(delay, int | float) or math.isnan(
                delay) or delay < 0 or delay == math.inf:
            raise ValidationError(f"delay must be a number of milliseconds >= 0, not {delay!r}")
        return {"queue": self.name, "priority": priority, "delay": delay / 1000.0,
                "max_attempts": self.max_attempts}

    def add(self, payload: Any, *, delay: float = 0, priority: int = DEFAULT_PRIORITY) -> int:
        """Add a job; returns its id.

        ``payload``: a JSON object (dict, dataclass or pydantic model). ``delay``: milliseconds
        before it may run. ``priority``: 0-1000, lower runs first (default 20).
        """
        return self.app.enqueue(self.task_name, payload, **self._options(delay, priority))

    async def add_async(self, payload: Any, *, delay: float = 0,
                        priority: int = DEFAULT_PRIORITY) -> int:
        """Async twin of :meth:`add`."""
        return await self.app.enqueue_async(self.task_name, payload,
                                            **self._options(delay, priority))

    # ---- processing ------------------------------------------------------------------------
    @property
    def processing(self) -> bool:
        """True while a handler is attached and its worker runs."""
        return self._runner is not None and self._runner.running

    @property
    def worker(self) -> Worker | None:
        """The running :class:`pgqueue.Worker` (its ``processed``/``counts``), or None."""
        return self._runner.worker if self._runner is not None else None

    def _prepare(self, handler: Handler, concurrency: int | None,
                 threaded: bool) -> BackgroundWorker:
        """Check ``handler``, attach it and build the (not yet started) worker: the part of
        :meth:`process` and :meth:`process_async` that does not depend on how it runs."""
        if not callable(handler):
            raise ValidationError(f"handler must be callable, not {handler!r}")
        if self._runner is not None and self._runner.running:
            raise ValidationError(f"queue {self.name!r} already has a handler; call "
                                  "disconnect() before attaching another")
        wapp, owned = worker_app(self.app, threaded=threaded)
        self._register(wapp)
        worker = Worker(wapp, [self.name],
                        concurrency=concurrency if concurrency is not None
                        else self.settings.concurrency,
                        poll_interval=self.settings.poll_interval,
                        event_loop=self.settings.event_loop)
        self._handler = handler
        return BackgroundWorker(worker, owns_app=owned)

    def process(self, handler: Handler, *, concurrency: int | None = None) -> None:
        """Attach ``handler`` and start processing in a background thread.

        ``concurrency``: jobs at once (default: setting ``defaultConcurrency``, else 1). Returns
        once the worker runs. Until a handler is attached, the queue runs nothing.
        """
        with self._lock:
            runner = self._prepare(handler, concurrency, threaded=True)
            with self._detached_on_error():
                runner.start()
            self._runner = runner

    async def process_async(self, handler: Handler, *, concurrency: int | None = None) -> None:
        """Attach ``handler`` and start processing on the running event loop (the worker runs
        as tasks of this loop; stop it with :meth:`disconnect_async`). ``concurrency`` as for
        :meth:`process`."""
        runner = self._prepare(handler, concurrency, threaded=False)
        self._runner = runner
        with self._detached_on_error():
            await runner.start_async()

    @contextmanager
    def _detached_on_error(self) -> Iterator[None]:
        """If starting the worker fails, detach the handler and forget the worker."""
        try:
            yield
        except BaseException:
            self._handler = None
            self._runner = None
            raise

    def disconnect(self) -> None:
        """Stop processing (running jobs finish) and detach the handler. Jobs stay in the
        queue; call :meth:`process` again to resume."""
        with self._lock:
            runner, self._runner = self._runner, None
            if runner is not None:
                runner.stop()
            self._handler = None

    async def disconnect_async(self) -> None:
        """Async twin of :meth:`disconnect`."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.stop_async()
        self._handler = None

    # ---- queue control -------------------------------------------------------------------
    def pause(self) -> None:
        """Stop starting jobs of this queue (running jobs finish) until :meth:`resume`."""
        self.app.pause(self.name)

    async def pause_async(self) -> None:
        """Async twin of :meth:`pause`."""
        await self.app.pause_async(self.name)

    def resume(self) -> None:
        """Start running jobs again after :meth:`pause`."""
        self.app.resume(self.name)

    async def resume_async(self) -> None:
        """Async twin of :meth:`resume`."""
        await self.app.resume_async(self.name)

    def get_job_count(self) -> int:
        """Jobs waiting (including delayed) + running in this queue."""
        return self.app.count(self.name)

    async def get_job_count_async(self) -> int:
        """Async twin of :meth:`get_job_count`."""
        return await self.app.count_async(self.name)


def _store(store: str | None, settings: Settings) -> str:
    """The canonical driver name of ``store`` (default: the configured driver)."""
    if store is None:
        return settings.driver
    try:
        return canonical_name(store)
    except DriverError as exc:
        raise DriverError(f"store {store!r}: {exc}") from exc


def _app_for(settings: Settings, store: str) -> App:
    """The app of ``store`` under ``settings``, built once and shared by its queues."""
    key = (settings, store)
    app = _apps.get(key)
    if app is None:
        if store == "postgres" and not settings.database_url:
            raise ConfigurationError(
                "store 'postgres' is not configured: set backend.queue.postgres.connection "
                "(or QUEUE_CONFIG / PGQUEUE_DATABASE_URL)", key="database_url",
                source=settings.sources["database_url"])
        if store == "sqs" and settings.sqs_region is None:
            raise ConfigurationError(
                "store 'sqs' is not configured: set backend.queue.sqs.region (and, for "
                "LocalStack or another emulator, backend.queue.sqs.endpoint)",
                key="sqs_region", source=settings.sources["sqs_region"])
        if store == "redis" and settings.sources["redis_url"] == "default":
            # as in Backstage: a requested store must be configured; never a silent default
            raise ConfigurationError(
                "store 'redis' is not configured: set backend.queue.redis.connection "
                "(or QUEUE_CONFIG / PGQUEUE_REDIS_URL, e.g. redis://127.0.0.1:6379/0)",
                key="redis_url", source=settings.sources["redis_url"])
        app = App.from_settings(settings, driver=store)
        _apps[key] = app
    return app


def get_queue(name: str, *, store: str | None = None,
              dlq_handler: DeadLetterHandler | None = None, app: App | None = None,
              settings: Settings | None = None, max_attempts: int | None = None,
              retry: Backoff | None = None) -> Queue:
    """The queue called ``name``, created on the first call; later calls return the same
    instance and ignore their options (as in Backstage).

    Args:
        name: the queue name (letters, digits, ``_ . : - /``).
        store: ``"memory"``, ``"postgres"``, ``"redis"`` or ``"sqs"``; default: the
            configured driver (``defaultStore``; memory when no database is configured).
            ``postgres`` and ``redis`` must have a connection configured, ``sqs`` a region,
            else :class:`ConfigurationError`.
        dlq_handler: ``(job, error)`` run after the last failed attempt.
        app: use this :class:`pgqueue.App` (its driver) instead of building one.
        settings: configuration (default: :func:`pgqueue.compat.default_settings`:
            ``app-config.yaml`` and ``.env`` of the current directory, then the environment).
        max_attempts: runs per job (default: setting ``maxAttempts``, else 5).
        retry: backoff policy (default ``RetryPolicy()``: about 1, 2, 4, 8 s).
    """
    with _lock:
        queue = _queues.get(name)
        if queue is not None:
            return queue
        cfg = settings if settings is not None else default_settings()
        if app is not None:
            if store is not None and _store(store, cfg) != app.driver.name:
                raise ValidationError(f"store {store!r} does not match the driver of the given "
                                      f"app ({app.driver.name!r}); pass one or the other")
            the_app = app
        else:
            the_app = _app_for(cfg, _store(store, cfg))
        queue = Queue(name, app=the_app, settings=cfg, dlq_handler=dlq_handler,
                      max_attempts=max_attempts, retry=retry)
        _queues[name] = queue
        return queue


def queues() -> dict[str, Queue]:
    """The queues created so far, by name (a copy)."""
    with _lock:
        return dict(_queues)


def reset() -> None:
    """Disconnect every queue and forget them (and the apps built for them). For tests.

    Closes the apps' sync connection pools; from async code use :func:`reset_async`.
    """
    with _lock:
        for queue in list(_queues.values()):
            queue.disconnect()
        for app in _apps.values():
            app.close()
        _queues.clear()
        _apps.clear()


async def reset_async() -> None:
    """Async twin of :func:`reset` (also closes async connection pools)."""
    for queue in list(_queues.values()):
        await queue.disconnect_async()
    for app in list(_apps.values()):
        await app.aclose()
    with _lock:
        _queues.clear()
        _apps.clear()
