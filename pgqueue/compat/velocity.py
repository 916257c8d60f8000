"""A Velocity-style queue on pgqueue: job objects with ``handle()`` and ``failed(err)``.

::

    from pgqueue.compat import velocity

    @dataclass
    class EmailJob:
        to: str
        subject: str
        body: str
        def handle(self) -> None: print("Sending email to", self.to)
        def failed(self, err: BaseException) -> None: print("Failed:", self.to, err)

    velocity.register("*jobs.EmailJob", EmailJob)        # name -> factory(dict) -> job
    velocity.push(EmailJob("a@b.c", "Welcome", "..."))     # queue "default"
    velocity.push(job, "emails")
    velocity.later(timedelta(minutes=5), job, "scheduled")
    worker = velocity.work("emails", lambda job: job.handle(), concurrency=5, interval=0.1,
                           max_retries=3)
    velocity.size("emails"); velocity.clear("failed"); velocity.pop("default")
    worker.stop()

    # tests
    q = velocity.new_memory_queue(); velocity.set_default(q)

The module-level functions use the **default queue**: the one given to :func:`set_default`, else
one built on first use from :func:`pgqueue.compat.default_settings` (``.env`` and
``app-config.yaml`` of the current directory, then the environment: ``QUEUE_DRIVER=memory|redis|
database``, ...). A :class:`Queue` object has the same methods.

Mapping to pgqueue:

- a job is a row of ``jobs``: its ``args`` are the job object's fields (a dataclass, a pydantic
  model, an object with ``to_dict()``, or the public attributes of a plain object), its task is
  ``velocity:<name>`` (the name without characters pgqueue does not allow in task names, such
  as Go's ``*``), and ``meta.velocity_type`` keeps the exact registered name;
- a job's name is the one it was registered under (:func:`register` with the class itself, a
  factory whose return annotation is the class, ``cls=``, or an untyped factory: see
  :func:`register`), else its class name;
- deserialisation calls the registered ``factory(dict)``; an unregistered class pushed in this
  process is registered under its class name with the class as factory;
- ``push(job, queue, conn=conn)`` / ``later(..., conn=conn)`` insert the job in your own
  transaction (postgres): it exists only if your transaction commits, and you own the commit;
- a job enqueued without :func:`push` -- ``app.enqueue("jobs.EmailJob", data, queue="emails")``
  or ``app.enqueue("velocity:jobs.EmailJob", ...)`` -- is rebuilt by ``work()`` with the factory
  registered under that name;
- ``work()`` runs a :class:`pgqueue.Worker` for one queue in a background thread (``work_async``:
  on the running loop); the handler gets the job object and fails by raising (or, as in Go, by
  returning an exception); ``failed(err)`` is called once the job has no attempt left;
- ``max_retries``: a failed job runs ``max_retries + 1`` times under this worker. Without it, the
  job's own ``max_attempts`` (setting ``PGQUEUE_MAX_ATTEMPTS``, default 5, stored at push)
  bounds the runs; a ``max_retries`` above that raises the job's stored cap (it is not silently
  capped); the backoff between attempts is :class:`pgqueue.RetryPolicy` (~1, 2, 4, 8 s);
- ``size`` counts waiting (including delayed) and running jobs; ``clear`` deletes the waiting
  ones; ``pop`` takes the next ready job out of the queue and returns it deserialised.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import logging
import re
import threading
import typing
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pgqueue._conn import AsyncConn, SyncConn
from pgqueue._defaults import DEFAULT_QUEUE
from pgqueue._names import validate_name
from pgqueue.app import App
from pgqueue.compat import BackgroundWorker, default_settings, worker_app
from pgqueue.config import Settings
from pgqueue.drivers import get_driver
from pgqueue.errors import UnknownTaskError, ValidationError
from pgqueue.job import Fail, Job, NewJob, Outcome
from pgqueue.retry import Backoff
from pgqueue.task import EnqueueOptions, check_delay, to_json_object
from pgqueue.worker import Worker

__all__ = [
    "Factory",
    "Queue",
    "VelocityWorker",
    "clear",
    "clear_async",
    "default_queue",
    "later",
    "later_async",
    "new_memory_queue",
    "new_queue",
    "pop",
    "pop_async",
    "push",
    "push_async",
    "register",
    "reset",
    "set_default",
    "size",
    "size_async",
    "work",
    "work_async",
]

log = logging.getLogger("pgqueue.compat.velocity")

#: ``factory(data) -> job object`` (with ``handle()`` and optionally ``failed(err)``).
Factory = Callable[[dict[str, Any]], Any]
#: ``handler(job object)``: sync or async; raise (or return an exception) to fail the attempt.
Handler = Callable[[Any], Any | Awaitable[Any]]

TASK_PREFIX = "velocity:"
TYPE_KEY = "velocity_type"

_lock = threading.RLock()
_factories: dict[str, Factory] = {}
_names: dict[type, str] = {}
#: names registered with a factory whose class is not known yet (no return annotation)
_untyped: dict[str, Factory] = {}
_workers: weakref.WeakSet[VelocityWorker] = weakref.WeakSet()
_default: Queue | None = None
#: the default queue was built here (from settings), so reset() closes its app
_default_owned = False


# ---- type registration --------------------------------------------------------------------
def task_name(name: str) -> str:
    """The pgqueue task name of a velocity job name (``*jobs.EmailJob`` ->
    ``velocity:jobs.EmailJob``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.:\-/]", "", name)[:190] or "job"
    return TASK_PREFIX + cleaned


def _is_task_name(name: str) -> bool:
    """Whether ``name`` may be used as a pgqueue task name as it is."""
    try:
        validate_name(name, "task")
    except ValidationError:
        return False
    return True


def _short(name: str) -> str:
    """The type name at the end of a registered name (``*jobs.EmailJob`` -> ``EmailJob``)."""
    return name.lstrip("*&").rsplit(".", 1)[-1].rsplit("/", 1)[-1]


def register(name: str, factory: Factory | type, *, cls: type | None = None) -> None:
    """Register a job type for deserialisation: ``factory(data)`` rebuilds a job object from
    its stored fields (a class as factory is called as ``cls(**data)``, or
    ``cls.model_validate(data)`` for a pydantic model).

    ``name`` is kept exactly (``"*jobs.EmailJob"`` works). Jobs of class ``cls`` are pushed
    under this name; ``cls`` defaults to ``factory`` when it is a class, else to the return
    annotation of ``factory``. A factory without one (``lambda d: EmailJob(**d)``) is used all
    the same: the first push of an object whose class no name claims yet picks the untyped
    registration whose name ends in the class name (``*jobs.EmailJob`` for ``EmailJob``), else
    the one whose factory rebuilds an object of that class from the pushed data.
    """
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValidationError(f"job name must be a non-empty string of at most 200 characters, "
                              f"not {name!r}")
    if not callable(factory):
        raise ValidationError(f"factory for {name!r} must be callable (data) -> job, not "
                              f"{factory!r}")
    if cls is None:
        if isinstance(factory, type):
            cls = factory
        else:
            try:
                ret = typing.get_type_hints(factory).get("return")
            except Exception:  # unresolvable annotations: no class mapping
                ret = None
            cls = ret if isinstance(ret, type) else None
    with _lock:
        _factories[name] = _class_factory(factory) if isinstance(factory, type) else factory
        if cls is not None:
            _names[cls] = name
            _untyped.pop(name, None)
        else:
            _untyped[name] = factory
        for worker in list(_workers):
            worker._add_task(name)


def _class_factory(cls: type) -> Factory:
    """A factory that builds ``cls`` from its fields: ``model_validate(data)`` for a pydantic
    model, else ``cls(**data)``."""
    validate = getattr(cls, "model_validate", None)

    def build(data: dict[str, Any]) -> Any:
        return validate(data) if callable(validate) else cls(**data)

    build.__qualname__ = f"{cls.__qualname__}(**data)"
    return build


def _name_of(job: Any) -> str:
    """The registered name of a job object (registering its class under its name if new)."""
    if isinstance(job, type) or not callable(getattr(job, "handle", None)):
        raise ValidationError(f"a job must be an object with a handle() method, not {job!r}")
    cls = type(job)
    with _lock:
        if cls in _names:
            return _names[cls]
        found = _untyped_name_of(job, cls)
        if found is not None:
            _names[cls] = found
            return found
        name = cls.__name__
        if name not in _factories:
            _factories[name] = _class_factory(cls)
            _names[cls] = name
            for worker in list(_workers):
                worker._add_task(name)
        return name


def _untyped_name_of(job: Any, cls: type) -> str | None:
    """The untyped registration that ``job`` belongs to: by name (the registered name ends in
    the class name), else the one whose factory rebuilds a ``cls`` from the job's data."""
    if not _untyped:
        return None
    by_name = [n for n in _untyped if _short(n) == cls.__name__]
    if len(by_name) == 1:
        return by_name[0]
    try:
        data = _data_of(job)
    except ValidationError:
        return None
    for name in by_name or list(_untyped):
        try:
            built = _untyped[name](dict(data))
        except Exception:  # not this factory's data
            continue
        if type(built) is cls:
            return name
    return None


def _data_of(job: Any) -> dict[str, Any]:
    """The fields of a job object as a JSON-ready dict."""
    if callable(getattr(job, "to_dict", None)):
        return to_json_object(job.to_dict(), "job data")
    if (dataclasses.is_dataclass(job) and not isinstance(job, type)) or hasattr(
            job, "model_dump"):
        return to_json_object(job, "job data")
    try:
        fields = vars(job)
    except TypeError:
        raise ValidationError(f"cannot read the fields of {type(job).__name__}: make it a "
                              "dataclass, a pydantic model, or give it to_dict()") from None
    return {k: v for k, v in fields.items() if not k.startswith("_")}


def _type_of(job: Job) -> str:
    """The registered name of a stored job: ``meta.velocity_type`` (set by :func:`push`), else
    the registered name whose task name the job has (a job enqueued with
    ``app.enqueue("velocity:jobs.EmailJob", ...)`` or ``app.enqueue("jobs.EmailJob", ...)``)."""
    meta_type = job.meta.get(TYPE_KEY) if isinstance(job.meta, Mapping) else None
    if isinstance(meta_type, str):
        return meta_type
    with _lock:
        if job.task in _factories:
            return job.task
        for name in _factories:
            if task_name(name) == job.task:
                return name
    return job.task[len(TASK_PREFIX):] if job.task.startswith(TASK_PREFIX) else job.task


def deserialise(job: Job) -> Any:
    """Rebuild the job object of a pgqueue job with its registered factory.

    Raises :class:`pgqueue.UnknownTaskError` when no factory is registered for its name.
    """
    name = _type_of(job)
    with _lock:
        factory = _factories.get(name)
        known = ", ".join(sorted(_factories)) or "none"
    if factory is None:
        raise UnknownTaskError(f"no job type registered as {name!r} (job {job.id}); call "
                               f"velocity.register({name!r}, factory) (registered: {known})")
    try:
        obj = factory(dict(job.args))
    except Exception as exc:
        raise ValidationError(f"factory for {name!r} could not rebuild job {job.id} from "
                              f"{job.args!r}: {exc}") from exc
    with _lock:  # an untyped factory has now shown which class it builds
        if name in _untyped:
            _names.setdefault(type(obj), name)
    return obj


def _popped(job: Job | None) -> Any | None:
    """The job object of a popped job; the error says what was taken if it cannot be built."""
    if job is None:
        return None
    try:
        return deserialise(job)
    except (UnknownTaskError, ValidationError) as exc:
        raise type(exc)(f"{exc}. The job was taken out of queue {job.queue!r}; its data: "
                        f"{job.args!r}") from exc


# ---- queues ------------------------------------------------------------------------------
def _seconds(value: float | dt.timedelta, what: str) -> float:
    """``value`` (seconds or a timedelta) as checked float seconds >= 0."""
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    return check_delay(value, what)


class Queue:
    """A velocity queue: where :func:`push`, :func:`work` and the rest act.

    Build one with :func:`new_queue` (from settings) or :func:`new_memory_queue`.
    """

    def __init__(self, app: App, settings: Settings | None = None) -> None:
        self.app = app
        self.settings = settings if settings is not None else Settings()

    def __repr__(self) -> str:
        return f"<velocity.Queue driver={self.app.driver.name}>"

    def _rows(self, job: Any, queue: str, delay: float | None = None) -> list[NewJob]:
        """The validated row of one push, as a batch of one (``delay``: checked seconds, None:
        run now); the same for the sync and the async call."""
        name = _name_of(job)
        opts: EnqueueOptions = {"queue": validate_name(queue, "queue"),
                                "max_attempts": self.settings.max_attempts,
                                "meta": {TYPE_KEY: name}}
        if delay is not None:
            opts["delay"] = delay
        return [self.app.build(task_name(name), _data_of(job), **opts)]

    def push(self, job: Any, queue: str = DEFAULT_QUEUE, *, conn: SyncConn | None = None) -> int:
        """Queue ``job`` (an object with ``handle()``) on ``queue`` (default ``"default"``) to
        run as soon as possible; returns its id.

        ``conn``: your own open connection or session (psycopg ``Connection``, SQLAlchemy
        ``Connection``/``Session``; postgres only): the job is inserted in its transaction and
        exists only if that transaction commits -- you own the commit. Example::

            with psycopg.connect(url) as conn:          # commits when the block ends
                conn.execute("INSERT INTO users (email) VALUES (%s)", (email,))
                velocity.push(WelcomeEmail(email), "emails", conn=conn)
        """
        return self.app.insert(self._rows(job, queue), conn=conn)[0]

    async def push_async(self, job: Any, queue: str = DEFAULT_QUEUE, *,
                         conn: AsyncConn | None = None) -> int:
        """Async twin of :meth:`push` (``conn``: psycopg ``AsyncConnection``, SQLAlchemy
        ``AsyncConnection``/``AsyncSession``)."""
        return (await self.app.insert_async(self._rows(job, queue), conn=conn))[0]

    def later(self, delay: float | dt.timedelta, job: Any, queue: str = DEFAULT_QUEUE, *,
              conn: SyncConn | None = None) -> int:
        """Queue ``job`` on ``queue`` (default ``"default"``) to run after ``delay`` (seconds or
        a timedelta); returns its id. ``conn`` as for :meth:`push`."""
        return self.app.insert(self._rows(job, queue, _seconds(delay, "delay")), conn=conn)[0]

    async def later_async(self, delay: float | dt.timedelta, job: Any,
                          queue: str = DEFAULT_QUEUE, *, conn: AsyncConn | None = None) -> int:
        """Async twin of :meth:`later`."""
        return (await self.app.insert_async(self._rows(job, queue, _seconds(delay, "delay")),
                                            conn=conn))[0]

    def size(self, queue: str = DEFAULT_QUEUE) -> int:
        """Jobs in ``queue`` (default ``"default"``): waiting (including delayed) and running."""
        return self.app.count(queue)

    async def size_async(self, queue: str = DEFAULT_QUEUE) -> int:
        """Async twin of :meth:`size`."""
        return await self.app.count_async(queue)

    def clear(self, queue: str = DEFAULT_QUEUE) -> int:
        """Delete the waiting (and delayed) jobs of ``queue`` (default ``"default"``); returns
        how many. Running jobs finish."""
        return self.app.clear(queue)

    async def clear_async(self, queue: str = DEFAULT_QUEUE) -> int:
        """Async twin of :meth:`clear`."""
        return await self.app.clear_async(queue)

    def pop(self, queue: str = DEFAULT_QUEUE) -> Any | None:
        """Take the next ready job out of ``queue`` (default ``"default"``) and return its job
        object (you run it), or None when no job is ready."""
        return _popped(self.app.pop(queue))

    async def pop_async(self, queue: str = DEFAULT_QUEUE) -> Any | None:
        """Async twin of :meth:`pop`."""
        return _popped(await self.app.pop_async(queue))

    def _worker(self, queue: str, handler: Handler, concurrency: int,
                interval: float | dt.timedelta | None, max_retries: int | None,
                retry: Backoff | None, threaded: bool) -> tuple[VelocityWorker, BackgroundWorker]:
        """Check the options and build the (not yet started) worker: the part of :meth:`work`
        and :meth:`work_async` that does not depend on how it runs."""
        if not callable(handler):
            raise ValidationError(f"handler must be callable (job) -> None, not {handler!r}")
        if max_retries is not None and (isinstance(max_retries, bool) or not isinstance(
                max_retries, int) or max_retries < 0):
            raise ValidationError(f"max_retries must be an integer >= 0, not {max_retries!r}")
        poll = self.settings.poll_interval if interval is None else _seconds(interval,
                                                                             "interval")
        if poll <= 0:
            raise ValidationError(f"interval must be > 0 seconds, not {interval!r}")
        wapp, owned = worker_app(self.app, threaded=threaded)
        vw = VelocityWorker(wapp, validate_name(queue, "queue"), handler,
                            max_retries=max_retries, retry=retry)
        worker = Worker(wapp, [vw.queue], concurrency=concurrency, poll_interval=poll,
                        event_loop=self.settings.event_loop)
        vw._runner = runner = BackgroundWorker(worker, owns_app=owned)
        return vw, runner

    def work(self, queue: str, handler: Handler, *, concurrency: int = 1,
             interval: float | dt.timedelta | None = None, max_retries: int | None = None,
             retry: Backoff | None = None) -> VelocityWorker:
        """Start a worker for ``queue`` in a background thread; returns it (call ``stop()``).

        ``handler(job)`` gets each job object (typically ``lambda job: job.handle()``).
        ``concurrency``: jobs at once. ``interval``: poll interval (seconds or timedelta;
        default: setting ``poll_interval``). ``max_retries``: retries after the first failed
        run (default: the job's ``max_attempts`` - 1; a larger value raises each failing job's
        ``max_attempts`` to ``max_retries + 1``). ``retry``: backoff policy (default
        :class:`pgqueue.RetryPolicy`).
        """
        vw, runner = self._worker(queue, handler, concurrency, interval, max_retries, retry,
                                  True)
        with _forgotten_on_error(vw):
            runner.start()
        return vw

    async def work_async(self, queue: str, handler: Handler, *, concurrency: int = 1,
                         interval: float | dt.timedelta | None = None,
                         max_retries: int | None = None,
                         retry: Backoff | None = None) -> VelocityWorker:
        """Like :meth:`work`, on the running event loop (stop with ``await stop_async()``)."""
        vw, runner = self._worker(queue, handler, concurrency, interval, max_retries, retry,
                                  False)
        with _forgotten_on_error(vw):
            await runner.start_async()
        return vw


@contextmanager
def _forgotten_on_error(vw: VelocityWorker) -> Iterator[None]:
    """If starting the worker fails, stop tracking it (``reset()`` has nothing to stop)."""
    try:
        yield
    except BaseException:
        _workers.discard(vw)
        raise


class VelocityWorker:
    """A running worker for one queue (from :func:`work`). ``stop()`` stops it gracefully."""

    def __init__(self, app: App, queue: str, handler: Handler, *, max_retries: int | None,
                 retry: Backoff | None) -> None:
        self.app = app
        self.queue = queue
        self.handler = handler
        self.max_retries = max_retries
        self.retry = retry
        self._runner: BackgroundWorker | None = None
        with _lock:
            for name in _factories:
                self._add_task(name)
            _workers.add(self)
        app.on_dead_letter(queue, self._dead_letter)

    def __repr__(self) -> str:
        return f"<velocity.VelocityWorker queue={self.queue!r}>"

    @property
    def worker(self) -> Worker:
        """The :class:`pgqueue.Worker` behind it (``processed``, ``counts``)."""
        assert self._runner is not None
        return self._runner.worker

    def stop(self) -> None:
        """Stop gracefully: no new jobs, running ones finish (a loop-run worker is only asked
        to stop; use :meth:`stop_async` there)."""
        if self._runner is not None:
            self._runner.stop()
        _workers.discard(self)

    async def stop_async(self) -> None:
        """Stop gracefully and wait, without blocking the event loop."""
        if self._runner is not None:
            await self._runner.stop_async()
        _workers.discard(self)

    def _add_task(self, name: str) -> None:
        """Register (or re-register) the dispatcher of job type ``name`` in the worker's app."""
        tname = task_name(name)
        existing = self.app.tasks.get(tname)
        if existing is None or existing.handler != self._run:
            self.app.tasks.pop(tname, None)
            # the registered name itself answers too (app.enqueue("jobs.EmailJob", ...)),
            # when it is a valid task name that no other task uses
            alias = name if name != tname and _is_task_name(name) and (
                name not in self.app.tasks or self.app.tasks[name].handler == self._run) else None
            if alias:
                self.app.tasks.pop(alias, None)
            kwargs: dict[str, Any] = {"name": tname, "queue": self.queue,
                                      "aliases": (alias,) if alias else ()}
            if self.retry is not None:
                kwargs["retry"] = self.retry
            task = self.app.task(**kwargs)(self._run)
            if self.max_retries is not None:
                # max_retries above a job's stored max_attempts raises the job's cap
                task.min_attempts = self.max_retries + 1

    # ---- running one job -----------------------------------------------------------------
    def _final(self, job: Job, exc: BaseException) -> BaseException:
        """The exception to raise for a failed attempt: the error itself, or ``Fail`` once
        ``max_retries`` is used up."""
        if isinstance(exc, Outcome):
            return exc
        if self.max_retries is not None and job.attempt > self.max_retries:
            fail = Fail(f"{type(exc).__name__}: {exc} (after {job.attempt} attempts; "
                        f"max_retries={self.max_retries})")
            fail.__cause__ = exc
            return fail
        return exc

    def _run(self, job: Job, **_data: Any) -> Any:
        """Run one job: rebuild its object, call the handler, turn failures into outcomes."""
        try:
            obj = deserialise(job)
        except (UnknownTaskError, ValidationError) as exc:
            raise Fail(str(exc)) from exc
        try:
            result = self.handler(obj)
        except Exception as exc:
            raise self._final(job, exc)  # noqa: B904 - the cause is set by _final
        if inspect.isawaitable(result):
            return self._await(job, result)
        if isinstance(result, BaseException):
            raise self._final(job, result)
        return None

    async def _await(self, job: Job, awaitable: Awaitable[Any]) -> None:
        """Await an async handler's result, with the same failure rules as :meth:`_run`."""
        try:
            result = await awaitable
        except Exception as exc:
            raise self._final(job, exc)  # noqa: B904 - the cause is set by _final
        if isinstance(result, BaseException):
            raise self._final(job, result)

    def _dead_letter(self, job: Job, exc: BaseException) -> Any:
        """Call the job object's ``failed(err)`` with the error of its last attempt (an async
        ``failed`` returns an awaitable, which the executor awaits)."""
        cause = exc.__cause__ if isinstance(exc, Fail) and exc.__cause__ is not None else exc
        try:
            obj = deserialise(job)
        except (UnknownTaskError, ValidationError):
            return None
        failed = getattr(obj, "failed", None)
        return failed(cause) if callable(failed) else None


# ---- the default queue and module-level API -------------------------------------------------
def new_queue(settings: Settings | None = None, *, app: App | None = None) -> Queue:
    """A queue from ``settings`` (default: :func:`pgqueue.compat.default_settings`), or on
    ``app``."""
    cfg = settings if settings is not None else (
        default_settings() if app is None else Settings())
    return Queue(app if app is not None else App.from_settings(cfg), cfg)


def new_memory_queue(settings: Settings | None = None) -> Queue:
    """A queue on a fresh memory driver (for tests): in this process only, lost on exit."""
    cfg = settings if settings is not None else Settings()
    return Queue(App(driver=get_driver("memory")), cfg)


def set_default(queue: Queue) -> None:
    """Make ``queue`` the one the module-level functions use."""
    global _default, _default_owned
    if not isinstance(queue, Queue):
        raise ValidationError(f"set_default needs a velocity Queue, not {queue!r}")
    with _lock:
        _default, _default_owned = queue, False


def default_queue() -> Queue:
    """The default queue, built from settings on first use (``.env`` of the current
    directory, then the environment)."""
    global _default, _default_owned
    with _lock:
        if _default is None:
            _default, _default_owned = new_queue(), True
        return _default


def reset() -> None:
    """Stop every worker started here, forget the default queue (closing its connection pool
    if it was built here from settings) and the registered types. For tests."""
    global _default, _default_owned
    with _lock:
        for worker in list(_workers):
            worker.stop()
        _workers.clear()
        _factories.clear()
        _names.clear()
        _untyped.clear()
        if _default is not None and _default_owned:
            _default.app.close()
        _default, _default_owned = None, False


def push(job: Any, queue: str = DEFAULT_QUEUE, *, conn: SyncConn | None = None) -> int:
    """:meth:`Queue.push` on the default queue (``conn``: enqueue in your transaction)."""
    return default_queue().push(job, queue, conn=conn)


async def push_async(job: Any, queue: str = DEFAULT_QUEUE, *,
                     conn: AsyncConn | None = None) -> int:
    """Async twin of :func:`push` (on the default queue)."""
    return await default_queue().push_async(job, queue, conn=conn)


def later(delay: float | dt.timedelta, job: Any, queue: str = DEFAULT_QUEUE, *,
          conn: SyncConn | None = None) -> int:
    """:meth:`Queue.later` on the default queue (``conn``: enqueue in your transaction)."""
    return default_queue().later(delay, job, queue, conn=conn)


async def later_async(delay: float | dt.timedelta, job: Any, queue: str = DEFAULT_QUEUE, *,
                      conn: AsyncConn | None = None) -> int:
    """Async twin of :func:`later` (on the default queue)."""
    return await default_queue().later_async(delay, job, queue, conn=conn)


def work(queue: str, handler: Handler, *, concurrency: int = 1,
         interval: float | dt.timedelta | None = None, max_retries: int | None = None,
         retry: Backoff | None = None) -> VelocityWorker:
    """:meth:`Queue.work` on the default queue."""
    return default_queue().work(queue, handler, concurrency=concurrency, interval=interval,
                                max_retries=max_retries, retry=retry)


async def work_async(queue: str, handler: Handler, *, concurrency: int = 1,
                     interval: float | dt.timedelta | None = None,
                     max_retries: int | None = None,
                     retry: Backoff | None = None) -> VelocityWorker:
    """:meth:`Queue.work_async` on the default queue."""
    return await default_queue().work_async(queue, handler, concurrency=concurrency,
                                            interval=interval, max_retries=max_retries,
                                            retry=retry)


def size(queue: str = DEFAULT_QUEUE) -> int:
    """:meth:`Queue.size` on the default queue."""
    return default_queue().size(queue)


async def size_async(queue: str = DEFAULT_QUEUE) -> int:
    """Async twin of :func:`size` (on the default queue)."""
    return await default_queue().size_async(queue)


def clear(queue: str = DEFAULT_QUEUE) -> int:
    """:meth:`Queue.clear` on the default queue."""
    return default_queue().clear(queue)


async def clear_async(queue: str = DEFAULT_QUEUE) -> int:
    """Async twin of :func:`clear` (on the default queue)."""
    return await default_queue().clear_async(queue)


def pop(queue: str = DEFAULT_QUEUE) -> Any | None:
    """:meth:`Queue.pop` on the default queue."""
    return default_queue().pop(queue)


async def pop_async(queue: str = DEFAULT_QUEUE) -> Any | None:
    """Async twin of :func:`pop` (on the default queue)."""
    return await default_queue().pop_async(queue)
