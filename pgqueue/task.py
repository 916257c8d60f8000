"""Tasks: a stable name bound to a handler, its defaults, and its argument validation.

A task is registered with :meth:`pgqueue.App.task` on a function or on a class-based job (a class
with ``handle()`` and optionally ``failed(exc)``, as in the velocity seed)::

    @app.task(name="send_email", queue="emails")
    def send_email(to: str, subject: str) -> None: ...

    @app.task(name="emails.welcome")
    @dataclass
    class WelcomeEmail:
        to: str
        def handle(self) -> None: ...
        def failed(self, exc: BaseException) -> None: ...

Arguments are JSON objects. A function's keyword arguments are checked against its signature at
enqueue; a function whose only parameter is annotated with a dataclass or pydantic model, and a
class-based job, are validated by building that type at enqueue.

A task needs only the two enqueue calls of its app (:class:`Enqueuer`), not the whole
:class:`pgqueue.App`; its defaults (queue, priority, attempts, timeout) are its own attributes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import json
import math
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack

from pgqueue._defaults import DEFAULT_MAX_SNOOZES, DEFAULT_PRIORITY
from pgqueue._names import validate_name
from pgqueue.errors import ValidationError
from pgqueue.job import Job
from pgqueue.retry import Backoff, RetryPolicy

if TYPE_CHECKING:
    from pgqueue._conn import AsyncConn, SyncConn

__all__ = ["ConfiguredTask", "EnqueueOptions", "Enqueuer", "Task", "dumps_args",
           "to_json_object"]

#: Highest (last-running) priority; 0 runs first.
MAX_PRIORITY = 1000


class EnqueueOptions(TypedDict, total=False):
    """The per-job options of every enqueue call. Each is optional; ``None`` or leaving it out
    means the task's default (else the app's).

    - ``queue``: queue name (default: the task's queue, else the app's ``default_queue``);
    - ``priority``: 0-1000, lower runs first (default: the task's, else 20);
    - ``delay``: seconds (or a timedelta) before the job may run; not with ``run_at``;
    - ``run_at``: a timezone-aware datetime before which the job does not run;
    - ``max_attempts``: runs before the job is dead-lettered (default: the task's, else 5);
    - ``unique_key``: while a live job holds this key, enqueueing again inserts nothing and
      returns that job's id;
    - ``timeout``: seconds per attempt (default: the task's, else none);
    - ``meta``: a JSON object stored with the job, not passed to the handler.
    """

    queue: str | None
    priority: int | None
    delay: float | dt.timedelta | None
    run_at: dt.datetime | None
    max_attempts: int | None
    unique_key: str | None
    timeout: float | None
    meta: Mapping[str, Any] | None


class Enqueuer(Protocol):
    """What a :class:`Task` uses of its app: enqueue by task name, sync and async.

    :class:`pgqueue.App` is one; a test can pass any object with these two methods.
    """

    def enqueue(self, task: str, args: Any = None, *, conn: SyncConn | None = None,
                **options: Unpack[EnqueueOptions]) -> int:
        """Enqueue one job of ``task`` with ``args``; returns its id."""
        ...

    async def enqueue_async(self, task: str, args: Any = None, *, conn: AsyncConn | None = None,
                            **options: Unpack[EnqueueOptions]) -> int:
        """Async twin of :meth:`enqueue`."""
        ...


def _is_model(tp: Any) -> bool:
    """True for a dataclass or pydantic model class (a type arguments are validated into)."""
    return isinstance(tp, type) and (
        dataclasses.is_dataclass(tp) or hasattr(tp, "model_validate"))


def to_json_object(value: Any, what: str = "args") -> dict[str, Any]:
    """Turn a mapping, dataclass instance or pydantic model into a JSON-ready dict.

    A plain ``dict`` is returned as is (not copied); anything else that is not a mapping raises
    :class:`pgqueue.ValidationError` naming ``what``.
    """
    if type(value) is dict:  # the common case, first
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif hasattr(value, "model_dump") and not isinstance(value, type):
        value = value.model_dump(mode="json")
    if not isinstance(value, Mapping):
        raise ValidationError(f"{what} must be a JSON object (a dict, dataclass or pydantic "
                              f"model), not {type(value).__name__}")
    return dict(value)


_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def dumps_args(value: Mapping[str, Any], what: str = "args") -> str:
    """Serialise ``value`` to compact JSON text, strictly: no NaN/Infinity, only JSON types,
    string keys, no NUL character (PostgreSQL's jsonb cannot hold one). Raises
    :class:`pgqueue.ValidationError` naming ``what`` otherwise."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} are not JSON-serialisable: {exc}. Pass only dicts, lists, "
                              "strings, numbers, booleans and None (convert dates to ISO "
                              "strings, decimals to str)") from exc
    if "\\u0000" in text:
        raise ValidationError(f"{what} contain a NUL character (\\x00), which PostgreSQL "
                              "cannot store in jsonb; remove it")
    return text


class Task:
    """A registered task (made by :meth:`pgqueue.App.task`, not directly).

    Call ``task(...)`` to run the handler directly (no queue); ``task.enqueue(...)`` /
    ``await task.enqueue_async(...)`` to enqueue it; ``task.options(delay=5).enqueue(...)`` for
    per-job options.

    Attributes:
        app: where :meth:`enqueue` sends jobs (an :class:`Enqueuer`, usually the App).
        handler: the function or class-based job class.
        name: the stable name stored with each job; ``aliases``: older names it also answers to.
        queue, priority, max_attempts, timeout: defaults of its jobs (``timeout`` None: none).
        retry: the backoff between attempts (default :class:`pgqueue.RetryPolicy`: ~1, 2, 4 s).
        max_snoozes: snoozes (:class:`pgqueue.Snooze`) a job may take; the next one archives it
            in ``failed_jobs`` (default 100; None: no limit).
        is_class: the handler is a class with ``handle()``; is_async: it runs as a coroutine.
    """

    def __init__(self, app: Enqueuer, handler: Callable[..., Any], *, name: str, queue: str,
                 priority: int, max_attempts: int, retry: Backoff | None,
                 timeout: float | None, aliases: tuple[str, ...] = (),
                 max_snoozes: int | None = DEFAULT_MAX_SNOOZES) -> None:
        self.app = app
        self.handler = handler
        self.name = validate_name(name, "task")
        self.queue = validate_name(queue, "queue")
        self.priority = check_priority(priority)
        self.max_attempts = check_max_attempts(max_attempts)
        self.retry: Backoff = retry if retry is not None else RetryPolicy()
        self.timeout = check_timeout(timeout)
        self.max_snoozes = check_max_snoozes(max_snoozes)
        #: attempts a job of this task may take even if enqueued with fewer (set by a worker
        #: option such as velocity's ``max_retries``); None: the job's own ``max_attempts``
        self.min_attempts: int | None = None
        self.aliases = tuple(validate_name(a, "task alias") for a in aliases)
        self.is_class = isinstance(handler, type)
        self._good_names: set[frozenset[str]] = set()
        self.model: type | None = None
        self.wants_job = False
        self.is_async = False
        if self.is_class:
            if not callable(getattr(handler, "handle", None)):
                raise ValidationError(f"class-based job {handler.__name__} needs a handle() "
                                      "method")
            self.model = typing.cast(type, handler)
            self.is_async = inspect.iscoroutinefunction(handler.handle)  # type: ignore[attr-defined]
            self._signature = None
        else:
            self.is_async = inspect.iscoroutinefunction(handler)
            sig = inspect.signature(handler)
            try:
                hints = typing.get_type_hints(handler)
            except Exception:  # an annotation that cannot be resolved here: use the raw ones
                hints = {p.name: p.annotation for p in sig.parameters.values()}
            params = [p for p in sig.parameters.values() if p.name != "job"]
            self.wants_job = "job" in sig.parameters
            if len(params) == 1 and _is_model(hints.get(params[0].name)):
                self.model = hints[params[0].name]
                self._model_param = params[0].name
            self._signature = sig.replace(parameters=params)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} queue={self.queue!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the handler now, in this process, with these arguments (nothing is queued)."""
        return self.handler(*args, **kwargs)

    # -- arguments ---------------------------------------------------------------------------
    def serialise(self, args: Any) -> str:
        """Validate ``args`` for this task and return their JSON text (raises ValidationError)."""
        if self.model is not None:
            if not isinstance(args, self.model):
                args = self._build(to_json_object(args) if args is not None else {})
            if self.is_class and not (dataclasses.is_dataclass(args)
                                      or hasattr(args, "model_dump")):
                # a plain class: its public attributes are its arguments
                return dumps_args({k: v for k, v in vars(args).items()
                                   if not k.startswith("_")})
            return dumps_args(to_json_object(args))
        obj = to_json_object(args if args is not None else {})
        assert self._signature is not None
        names = frozenset(obj)
        if names not in self._good_names:  # binding checks names only: remember good sets
            try:
                self._signature.bind(**obj)
            except TypeError as exc:
                raise ValidationError(f"arguments for task {self.name!r} do not match "
                                      f"{self.handler.__name__}{self._signature}: {exc}") from exc
            if len(self._good_names) < 64:
                self._good_names.add(names)
        return dumps_args(obj)

    def _build(self, data: Mapping[str, Any]) -> Any:
        """An instance of the task's model built from ``data`` (raises ValidationError)."""
        model = self.model
        assert model is not None
        try:
            if hasattr(model, "model_validate"):
                return model.model_validate(dict(data))  # type: ignore[attr-defined]
            return model(**data)
        except Exception as exc:  # TypeError (dataclass) or pydantic's ValidationError
            raise ValidationError(f"arguments for task {self.name!r} are not a valid "
                                  f"{model.__name__}: {exc}") from exc

    def invoke(self, job: Job) -> tuple[Any, Callable[..., Any]]:
        """The callable to run for ``job`` and the object to call ``failed(exc)`` on (if any)."""
        if self.is_class:
            instance = self._build(job.args)
            return instance, instance.handle
        if self.model is not None:
            value = self._build(job.args)
            kwargs: dict[str, Any] = {self._model_param: value}
        else:
            kwargs = dict(job.args)
        if self.wants_job:
            kwargs["job"] = job
        handler = self.handler
        if self.is_async:
            async def acall() -> Any:
                return await handler(**kwargs)

            return None, acall

        def call() -> Any:
            return handler(**kwargs)

        return None, call

    # -- enqueue -------------------------------------------------------------------------------
    def enqueue(self, *args: Any, conn: SyncConn | None = None, **kwargs: Any) -> int:
        """Enqueue this task with the task's default options; returns the job id.

        Arguments are keyword arguments of the handler, or one dataclass / pydantic instance.
        ``conn`` (optional): your psycopg or SQLAlchemy connection or session, whose
        transaction the job joins. For per-job options use :meth:`options`::

            send_email.enqueue(to="a@b.c", subject="hi")
        """
        return self.options().enqueue(*args, conn=conn, **kwargs)

    async def enqueue_async(self, *args: Any, conn: AsyncConn | None = None,
                            **kwargs: Any) -> int:
        """Async twin of :meth:`enqueue` (``conn``: an async connection or session)."""
        return await self.options().enqueue_async(*args, conn=conn, **kwargs)

    def options(self, **opts: Unpack[EnqueueOptions]) -> ConfiguredTask:
        """This task with per-job options (see :class:`EnqueueOptions`; the rest keep the
        task's defaults)::

            send_email.options(delay=5, priority=1).enqueue(to="a@b.c")
        """
        return ConfiguredTask(self, opts)

    def _payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The job arguments: keyword arguments, or one dataclass/pydantic instance."""
        if args:
            if len(args) != 1 or kwargs:
                raise ValidationError(f"task {self.name!r}: pass keyword arguments, or a single "
                                      "dataclass/pydantic instance")
            return args[0]
        return kwargs


class ConfiguredTask:
    """A task with per-job options, from :meth:`Task.options`; enqueue it like the task."""

    def __init__(self, task: Task, opts: EnqueueOptions) -> None:
        self.task = task
        self.opts = opts

    def __repr__(self) -> str:
        return f"<ConfiguredTask {self.task.name!r} {dict(self.opts)!r}>"

    def enqueue(self, *args: Any, conn: SyncConn | None = None, **kwargs: Any) -> int:
        """Enqueue the task with these options; returns the job id (see :meth:`Task.enqueue`)."""
        payload = self.task._payload(args, kwargs)
        return self.task.app.enqueue(self.task.name, payload, conn=conn, **self.opts)

    async def enqueue_async(self, *args: Any, conn: AsyncConn | None = None,
                            **kwargs: Any) -> int:
        """Async twin of :meth:`enqueue` (``conn``: an async connection or session)."""
        payload = self.task._payload(args, kwargs)
        return await self.task.app.enqueue_async(self.task.name, payload, conn=conn,
                                                 **self.opts)


def check_priority(priority: object) -> int:
    """``priority`` if it is an integer from 0 to 1000, else ValidationError."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not (
            0 <= priority <= MAX_PRIORITY):
        raise ValidationError(f"priority must be an integer from 0 (runs first) to "
                              f"{MAX_PRIORITY}, not {priority!r}; the default is "
                              f"{DEFAULT_PRIORITY}")
    return priority


def check_max_attempts(value: object) -> int:
    """``value`` if it is an integer from 1 to 1000, else ValidationError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ValidationError(f"max_attempts must be an integer from 1 to 1000, not {value!r}")
    return value


def check_max_snoozes(value: object) -> int | None:
    """None (no limit), or ``value`` if it is an integer >= 0, else ValidationError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"max_snoozes must be an integer >= 0 (or None for no limit), "
                              f"not {value!r}; the default is {DEFAULT_MAX_SNOOZES}")
    return value


def check_timeout(value: object) -> float | None:
    """None (no timeout), or ``value`` as float seconds if positive and finite, else
    ValidationError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            0 < value < math.inf):
        raise ValidationError(f"timeout must be a positive number of seconds, not {value!r}")
    return float(value)


def check_delay(value: object, what: str = "delay") -> float:
    """``value`` as float seconds if a finite number >= 0, else ValidationError naming
    ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or (
            value < 0) or value == math.inf:
        raise ValidationError(f"{what} must be a number of seconds >= 0, not {value!r}")
    return float(value)
