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
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypedDict, Unpack, overload

from typing_extensions import ParamSpec, TypeVar

from pgqueue._defaults import DEFAULT_MAX_SNOOZES, DEFAULT_PRIORITY
from pgqueue._names import validate_name
from pgqueue.errors import ValidationError
from pgqueue.job import DEP_POLICIES, MAX_JSON_DEPTH, Dependency, Job, NewJob
from pgqueue.retry import Backoff, RetryPolicy

if TYPE_CHECKING:
    from pgqueue._conn import AsyncConn, SyncConn

__all__ = ["EARLIEST_RUN_AT", "LATEST_RUN_AT", "MAX_JSON_DEPTH", "ConfiguredTask",
           "EnqueueOptions", "Enqueuer", "Signature", "Task", "TaskDecorator",
           "check_concurrency_key", "check_dependencies",
           "check_json_text",
           "check_new_jobs", "check_run_time", "check_text", "check_unique_key",
           "derive_concurrency_key", "dumps_args",
           "to_json_object"]

#: The handler's parameters (what ``enqueue`` takes) and its return type. Defaults (PEP 696)
#: keep a bare ``Task`` annotation meaning "any task" (``Task[..., Any]``).
P = ParamSpec("P", default=...)
R = TypeVar("R", default=Any)

#: Highest (last-running) priority; 0 runs first.
MAX_PRIORITY = 1000

#: The latest time a job may be scheduled for (``run_at``, or now + ``delay``): a day before
#: Python's ``datetime.max``, so that the time reads back as a ``datetime`` in any time zone
#: (PostgreSQL could store later ones, and the redis driver's milliseconds too, but Python could
#: not read them back).
LATEST_RUN_AT = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)
#: The earliest ``run_at`` accepted (a day after ``datetime.min``, for the same reason).
EARLIEST_RUN_AT = dt.datetime(1, 1, 2, tzinfo=dt.UTC)


class EnqueueOptions(TypedDict, total=False):
    """The per-job options of every enqueue call. Each is optional; ``None`` or leaving it out
    means the task's default (else the app's).

    - ``queue``: queue name (default: the task's queue, else the app's ``default_queue``);
    - ``priority``: 0-1000, lower runs first (default: the task's, else 20);
    - ``delay``: seconds (or a timedelta) before the job may run; not with ``run_at``;
    - ``run_at``: a timezone-aware datetime before which the job does not run (the resulting
      time, of either, must not be after :data:`LATEST_RUN_AT`, 9999-12-30 UTC);
    - ``max_attempts``: runs before the job is dead-lettered (default: the task's, else 5);
    - ``unique_key``: while a live job holds this key, enqueueing again inserts nothing and
      returns that job's id;
    - ``timeout``: seconds per attempt (default: the task's, else none);
    - ``meta``: a JSON object stored with the job, not passed to the handler;
    - ``concurrency_key``: a string (a tenant, a customer id): at most the queue's
      ``key_concurrency`` jobs with the same key run at once, across every worker (default 1;
      see :meth:`pgqueue.App.queue`). Needs a driver with ``flow_control`` (postgres);
    - ``depends_on``: ids of jobs this one waits for: it is ``blocked`` (never claimed) until
      every one has succeeded. Needs a driver with ``workflows`` (postgres). An unknown id, or
      one that already failed or was cancelled (unless the policy is ``run``), is refused with
      :class:`pgqueue.DependencyError`;
    - ``on_dependency_failure``: what the job does when a dependency fails for good or is
      cancelled: ``"cancel"`` (default), ``"run"`` anyway, or ``"fail"``.

    Text that cannot be stored (a NUL character, a lone surrogate) in args, keys, ``meta`` or
    ``unique_key``, and args or ``meta`` nested more than :data:`MAX_JSON_DEPTH` levels, are
    refused with :class:`pgqueue.ValidationError` before anything is written.
    """

    queue: str | None
    priority: int | None
    delay: float | dt.timedelta | None
    run_at: dt.datetime | None
    max_attempts: int | None
    unique_key: str | None
    timeout: float | None
    meta: Mapping[str, Any] | None
    concurrency_key: str | None
    depends_on: Sequence[int] | None
    on_dependency_failure: str | None


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


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: compact, strict JSON (no NaN), non-ASCII kept: the C encoder of :mod:`json` made once
#: (``json.dumps`` and ``JSONEncoder.encode`` build one per call, which costs more than encoding
#: a small object); without a circular-reference check, so a cycle ends as a RecursionError,
#: which :func:`dumps_args` reports as nesting too deep
_ENCODE: Callable[[Any, int], Sequence[str]] = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else lambda value, _: [json.dumps(value, allow_nan=False, separators=(",", ":"),
                                      ensure_ascii=False, check_circular=False)])

#: a lone surrogate: valid in a Python str, not encodable as UTF-8 (so never storable)
_SURROGATE = re.compile("[\ud800-\udfff]")
#: the JSON escape of a real NUL character: ``\u0000`` after an even number of backslashes (an
#: odd number means the backslash itself was escaped: the text ``"\\u0000"`` is no NUL)
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
#: a JSON string literal, and a bracket (for measuring nesting outside strings)
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _json_depth(text: str) -> int:
    """How deeply the JSON ``text`` nests objects and arrays (``{}`` is 1)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def check_text(value: str, what: str) -> str:
    """``value`` if PostgreSQL (and Redis) can store it as text: no NUL character, no lone
    surrogate (a ``str`` such as ``"\\ud800"`` that has no UTF-8 encoding). Else
    ValidationError naming ``what``."""
    if "\x00" in value:
        raise ValidationError(f"{what} contains a NUL character (\\x00), which PostgreSQL "
                              "cannot store; remove it")
    found = _SURROGATE.search(value)
    if found:
        raise ValidationError(f"{what} contains a lone surrogate ({found.group()!r} at "
                              f"position {found.start()}), which has no UTF-8 encoding; it "
                              "usually comes from text decoded with errors='surrogateescape': "
                              "decode it properly or remove it")
    return value


def check_json_text(text: str, what: str = "args") -> str:
    """``text`` (JSON, as :func:`dumps_args` writes it) if it can be stored and read back: no
    real NUL character (a backslash followed by ``u0000`` in a string is text, and fine), no
    lone surrogate, at most :data:`MAX_JSON_DEPTH` levels of nesting. Else ValidationError
    naming ``what``::

        check_json_text('{"a":1}')   # '{"a":1}'
    """
    found = None if text.isascii() else _SURROGATE.search(text)  # isascii: O(1)
    if found:
        raise ValidationError(f"{what} contain a lone surrogate ({found.group()!r}), which has "
                              "no UTF-8 encoding (in a key or a string value); it usually "
                              "comes from text decoded with errors='surrogateescape': decode "
                              "it properly or remove it")
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise ValidationError(f"{what} contain a NUL character (\\x00), which PostgreSQL "
                              "cannot store in jsonb; remove it")
    # cheap tests first: a short text, or one with few brackets, cannot nest deeply
    if len(text) > 2 * MAX_JSON_DEPTH and text.count("{") + text.count("[") > MAX_JSON_DEPTH and (
            _json_depth(text) > MAX_JSON_DEPTH):
        raise _too_deep(what)
    return text


def _too_deep(what: str) -> ValidationError:
    return ValidationError(f"{what} nest objects/arrays more than {MAX_JSON_DEPTH} levels deep, "
                           "which pgqueue refuses (a worker could not decode them); flatten "
                           "them")


def dumps_args(value: Mapping[str, Any], what: str = "args") -> str:
    """Serialise ``value`` to compact JSON text, strictly: no NaN/Infinity, only JSON types,
    string keys, no NUL character (PostgreSQL's jsonb cannot hold one), no lone surrogate, at
    most :data:`MAX_JSON_DEPTH` levels of nesting (see :func:`check_json_text`). Raises
    :class:`pgqueue.ValidationError` naming ``what`` otherwise::

        dumps_args({"to": "a@b.c"})   # '{"to":"a@b.c"}'
    """
    try:
        text = "".join(_ENCODE(value, 0))
    except RecursionError as exc:
        raise _too_deep(what) from exc
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} are not JSON-serialisable: {exc}. Pass only dicts, lists, "
                              "strings, numbers, booleans and None (convert dates to ISO "
                              "strings, decimals to str)") from exc
    return check_json_text(text, what)


class Task(Generic[P, R]):
    """A registered task (made by :meth:`pgqueue.App.task`, not directly).

    Call ``task(...)`` to run the handler directly (no queue); ``task.enqueue(...)`` /
    ``await task.enqueue_async(...)`` to enqueue it; ``task.options(delay=5).enqueue(...)`` for
    per-job options.

    Typed: ``Task[P, R]`` carries the handler's parameters ``P`` and return type ``R``, so a
    type checker checks ``enqueue``'s arguments against the handler's signature
    (``send_email.enqueue(to=1)`` or a missing argument is an error). With ``conn=`` only the
    connection's kind is checked (sync for ``enqueue``, async for ``enqueue_async``); the
    arguments are then checked at enqueue, as always. A bare ``Task`` annotation means any task.

    Attributes:
        app: where :meth:`enqueue` sends jobs (an :class:`Enqueuer`, usually the App).
        handler: the function or class-based job class.
        name: the stable name stored with each job; ``aliases``: older names it also answers to.
        queue, priority, max_attempts, timeout: defaults of its jobs (``timeout`` None: none).
        retry: the backoff between attempts (default :class:`pgqueue.RetryPolicy`: ~1, 2, 4 s).
        max_snoozes: snoozes (:class:`pgqueue.Snooze`) a job may take; the next one archives it
            in ``failed_jobs`` (default 100; None: no limit).
        is_class: the handler is a class with ``handle()``; is_async: it runs as a coroutine.
        concurrency_key: derives each job's concurrency key from its arguments (the decoded
            JSON object), e.g. ``lambda args: str(args["tenant_id"])``; None: no key unless the
            enqueue call gives one (which wins).
    """

    def __init__(self, app: Enqueuer, handler: Callable[P, R], *, name: str, queue: str,
                 priority: int, max_attempts: int, retry: Backoff | None,
                 timeout: float | None, aliases: tuple[str, ...] = (),
                 max_snoozes: int | None = DEFAULT_MAX_SNOOZES,
                 concurrency_key: Callable[[dict[str, Any]], str] | None = None) -> None:
        if concurrency_key is not None and not callable(concurrency_key):
            raise ValidationError(f"task {name!r}: concurrency_key must be a function of the "
                                  "job's arguments returning a string, e.g. "
                                  "lambda args: str(args['tenant_id'])")
        self.concurrency_key = concurrency_key
        self.app = app
        self.handler: Callable[..., Any] = handler
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

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the handler now, in this process, with these arguments (nothing is queued)."""
        return typing.cast(R, self.handler(*args, **kwargs))

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
                return model.model_validate(dict(data))
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
    @overload
    def enqueue(self, *args: Any, conn: SyncConn, **kwargs: Any) -> int: ...
    @overload
    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> int: ...

    def enqueue(self, *args: Any, **kwargs: Any) -> int:
        """Enqueue this task with the task's default options; returns the job id.

        Arguments are keyword arguments of the handler, or one dataclass / pydantic instance.
        ``conn`` (optional): your psycopg or SQLAlchemy connection or session, whose
        transaction the job joins. For per-job options use :meth:`options`::

            send_email.enqueue(to="a@b.c", subject="hi")
        """
        return self.options().enqueue(*args, **kwargs)

    @overload
    async def enqueue_async(self, *args: Any, conn: AsyncConn, **kwargs: Any) -> int: ...
    @overload
    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> int: ...

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> int:
        """Async twin of :meth:`enqueue` (``conn``: an async connection or session)."""
        return await self.options().enqueue_async(*args, **kwargs)

    def options(self, **opts: Unpack[EnqueueOptions]) -> ConfiguredTask[P, R]:
        """This task with per-job options (see :class:`EnqueueOptions`; the rest keep the
        task's defaults)::

            send_email.options(delay=5, priority=1).enqueue(to="a@b.c")
        """
        return ConfiguredTask(self, opts)

    def s(self, **kwargs: Any) -> Signature:
        """This task with these keyword arguments, as a workflow member (a
        :class:`Signature`; see :func:`pgqueue.chain`)::

            chain(fetch.s(url="https://..."), parse.s(), store.s())
        """
        return Signature(self, dict(kwargs))

    def _payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The job arguments: keyword arguments, or one dataclass/pydantic instance."""
        if args:
            if len(args) != 1 or kwargs:
                raise ValidationError(f"task {self.name!r}: pass keyword arguments, or a single "
                                      "dataclass/pydantic instance")
            return args[0]
        return kwargs


@dataclasses.dataclass(frozen=True)
class Signature:
    """A task with its arguments and options, not enqueued yet: a member of a workflow
    (:func:`pgqueue.chain`, :func:`pgqueue.group`). Made by :meth:`Task.s` (or
    ``task.options(...).s(...)``). In a workflow, the result of what runs before goes to the
    handler's first parameter that ``kwargs`` leaves unset (a list of results, in order, after a
    group); a handler without such a parameter does not receive it."""

    task: Task[..., Any]
    kwargs: Mapping[str, Any]
    options: EnqueueOptions = dataclasses.field(default_factory=lambda: EnqueueOptions())

    def result_param(self) -> str | None:
        """The parameter that receives the previous result: the first one of the handler
        that ``kwargs`` leaves unset (None for class-based and model tasks, or when every
        parameter is given)."""
        sig = self.task._signature
        if sig is None or self.task.model is not None:
            return None
        for p in sig.parameters.values():
            if p.name not in self.kwargs and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                         p.KEYWORD_ONLY):
                return p.name
        return None


class TaskDecorator(Protocol):
    """What ``@app.task(name=...)`` returns: registers a function (or class-based job) and
    returns its :class:`Task`, typed by the function's parameters."""

    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]:
        """Register ``fn``; returns its task."""
        ...


class ConfiguredTask(Generic[P, R]):
    """A task with per-job options, from :meth:`Task.options`; enqueue it like the task (typed
    the same way)."""

    def __init__(self, task: Task[P, R], opts: EnqueueOptions) -> None:
        self.task = task
        self.opts = opts

    def __repr__(self) -> str:
        return f"<ConfiguredTask {self.task.name!r} {dict(self.opts)!r}>"

    @overload
    def enqueue(self, *args: Any, conn: SyncConn, **kwargs: Any) -> int: ...
    @overload
    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> int: ...

    def enqueue(self, *args: Any, **kwargs: Any) -> int:
        """Enqueue the task with these options; returns the job id (see :meth:`Task.enqueue`)."""
        conn: SyncConn | None = kwargs.pop("conn", None)
        payload = self.task._payload(args, kwargs)
        return self.task.app.enqueue(self.task.name, payload, conn=conn, **self.opts)

    def s(self, **kwargs: Any) -> Signature:
        """The task with these options and keyword arguments as a workflow member (see
        :meth:`Task.s`)."""
        return Signature(self.task, dict(kwargs), self.opts)

    @overload
    async def enqueue_async(self, *args: Any, conn: AsyncConn, **kwargs: Any) -> int: ...
    @overload
    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> int: ...

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> int:
        """Async twin of :meth:`enqueue` (``conn``: an async connection or session)."""
        conn: AsyncConn | None = kwargs.pop("conn", None)
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


def check_run_time(*, delay_s: float | None = None, run_at: dt.datetime | None = None,
                   now: dt.datetime | None = None) -> None:
    """Check that a job's run time can be stored and read back: ``run_at`` (an aware datetime)
    between :data:`EARLIEST_RUN_AT` and :data:`LATEST_RUN_AT`, or ``now + delay_s`` (``now``:
    default the current UTC time) not after :data:`LATEST_RUN_AT`. Raises ValidationError naming
    ``run_at`` or ``delay``::

        check_run_time(delay_s=1e12)   # ValidationError: delay of 1e+12 s ...
    """
    if run_at is not None:
        try:
            utc = run_at.astimezone(dt.UTC)
        except OverflowError:
            utc = None
        if utc is None or not EARLIEST_RUN_AT <= utc <= LATEST_RUN_AT:
            raise ValidationError(f"run_at {run_at.isoformat()} is outside the times pgqueue "
                                  f"can store and read back ({EARLIEST_RUN_AT:%Y-%m-%d} to "
                                  f"{LATEST_RUN_AT:%Y-%m-%d} UTC); pick a time in that range")
    if delay_s is not None:
        start = now if now is not None else dt.datetime.now(dt.UTC)
        if delay_s > (LATEST_RUN_AT - start).total_seconds():
            raise ValidationError(f"delay of {delay_s:g} s puts the job after "
                                  f"{LATEST_RUN_AT:%Y-%m-%d} UTC, the latest time pgqueue can "
                                  "store and read back; use a smaller delay (or run_at)")


def check_new_jobs(jobs: object) -> list[NewJob]:
    """Check a batch of :class:`pgqueue.NewJob` (as :meth:`pgqueue.App.insert` takes it) before
    anything is written: every row, so that a batch is inserted whole or not at all. Jobs made by
    :meth:`pgqueue.App.build` always pass; a hand-made one may not. A ValidationError names the
    first bad row's index (``jobs[3]: ...``)."""
    if isinstance(jobs, NewJob) or not isinstance(jobs, Iterable):
        raise ValidationError("jobs must be a sequence of NewJob (see App.build), not "
                              f"{type(jobs).__name__}")
    out = list(jobs)
    for i, job in enumerate(out):
        try:
            _check_new_job(job)
        except ValidationError as exc:
            raise type(exc)(f"jobs[{i}]: {exc}") from exc
    return out


def _check_new_job(job: object) -> None:
    if not isinstance(job, NewJob):
        raise ValidationError(f"expected a NewJob (see App.build), not {type(job).__name__}")
    validate_name(job.queue, "queue")
    validate_name(job.task, "task")
    for text, what in ((job.args_json, "args"), (job.meta_json, "meta")):
        if not isinstance(text, str):
            raise ValidationError(f"{what}_json must be JSON text (a str), not "
                                  f"{type(text).__name__}")
        check_json_text(text, what)
    check_priority(job.priority)
    check_max_attempts(job.max_attempts)
    check_timeout(job.timeout_s)
    check_unique_key(job.unique_key)
    check_concurrency_key(job.concurrency_key)
    if job.run_at is not None and job.delay_s is not None:
        raise ValidationError("pass delay or run_at, not both")
    if job.run_at is not None and (not isinstance(job.run_at, dt.datetime)
                                   or job.run_at.tzinfo is None):
        raise ValidationError("run_at must be a timezone-aware datetime")
    check_run_time(delay_s=None if job.delay_s is None else check_delay(job.delay_s),
                   run_at=job.run_at)
    check_dependencies([d.job_id for d in job.depends_on if d.job_id is not None] or None,
                       job.on_dependency_failure)


def check_dependencies(depends_on: object, policy: object) -> tuple[tuple[Dependency, ...], str]:
    """The validated ``depends_on`` (distinct positive job ids, at most 10,000) and
    ``on_dependency_failure`` (one of :data:`pgqueue.job.DEP_POLICIES`, default ``cancel``)."""
    if policy is None:
        policy = "cancel"
    if policy not in DEP_POLICIES:
        raise ValidationError(f"on_dependency_failure must be one of {', '.join(DEP_POLICIES)}, "
                              f"not {policy!r}")
    if depends_on is None:
        return (), str(policy)
    if isinstance(depends_on, (str, bytes, int)) or not isinstance(depends_on, Iterable):
        raise ValidationError("depends_on must be a list of job ids, e.g. depends_on=[a, b]")
    ids = list(depends_on)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or i < 1:
            raise ValidationError(f"depends_on: job ids are positive integers, not {i!r}")
    if len(set(ids)) != len(ids):
        raise ValidationError("depends_on lists a job id twice")
    if len(ids) > 10_000:
        raise ValidationError("depends_on: at most 10,000 job ids (group them in a workflow)")
    return tuple(Dependency(job_id=i) for i in ids), str(policy)


def check_concurrency_key(value: object, *, required: bool = False) -> str | None:
    """None (unless ``required``), or ``value`` if it is a non-empty string of at most 1,000
    characters that can be stored (see :func:`check_text`); else ValidationError (an int key is
    refused: pass ``str(customer_id)``, so that 1 and "1" cannot silently differ)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 1000:
        raise ValidationError(f"concurrency_key must be a non-empty string of at most 1000 "
                              f"characters (e.g. str(customer_id)), got {value!r:.60}")
    return check_text(value, "concurrency_key")


def derive_concurrency_key(task: Task, args_json: str) -> str:
    """The concurrency key ``task.concurrency_key`` gives for a job with these arguments;
    ValidationError naming the task if it fails or returns something else than a string."""
    assert task.concurrency_key is not None
    try:
        key = task.concurrency_key(json.loads(args_json))
    except Exception as exc:
        raise ValidationError(f"task {task.name!r}: its concurrency_key function failed on "
                              f"these arguments: {exc!r}") from exc
    try:
        checked = check_concurrency_key(key, required=True)
    except ValidationError as exc:
        raise ValidationError(f"task {task.name!r}: {exc}") from None
    assert checked is not None
    return checked


def check_unique_key(value: object) -> str | None:
    """None, or ``value`` if it is a non-empty string of at most 1,000 characters that can be
    stored (no NUL, no lone surrogate, see :func:`check_text`); else ValidationError."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 1000:
        raise ValidationError("unique_key must be a non-empty string of at most 1000 "
                              "characters without NUL")
    return check_text(value, "unique_key")
