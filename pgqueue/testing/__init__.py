"""Test your jobs: run them at once (``inline``), or record them and run them when asked
(``manual``), on the memory driver or on PostgreSQL, through the worker's real executor.

::

    import pgqueue.testing

    def test_signup_sends_a_welcome_email():
        with pgqueue.testing.manual(app) as q:
            signup("a@b.c")                       # calls send_email.enqueue(to="a@b.c")
            q.assert_enqueued(send_email, args={"to": "a@b.c"}, queue="emails")
            result = q.drain()
            assert result.succeeded == 1

    def test_inline():
        with pgqueue.testing.inline(app) as q:
            send_email.enqueue(to="a@b.c")        # has run when enqueue returns
            assert q.outcomes[-1].state == "succeeded"

Modes (:class:`TestQueue`):

- ``manual``: every enqueue goes to the app's driver as usual (in your transaction when you pass
  ``conn=``) and is recorded; nothing runs until :meth:`TestQueue.drain` or
  :meth:`TestQueue.run_job`. Jobs you enqueue are real rows: on PostgreSQL you can also look at
  them with SQL.
- ``inline``: enqueue runs the job at once, in this process, through the worker's executor, to a
  final outcome: a retry or a snooze runs the next attempt at once (no backoff wait), so a job
  ends ``succeeded``, ``failed`` (archived, dead-letter hooks run) or ``cancelled``. Nothing is
  written to the driver (``conn=`` is accepted and not used). Job ids are the harness's own
  (from 10**15 up, never a driver's).

Time travel: :meth:`TestQueue.advance` brings delayed jobs and retries forward without
sleeping; ``drain(with_scheduled=True, with_retries=True)`` runs them all.

Outcomes are the executor's (see :mod:`pgqueue.worker._executor`): a handler returning a value
succeeds; :class:`pgqueue.Snooze`, :class:`pgqueue.Cancel` and :class:`pgqueue.Fail` do what
they do in a worker; an exception is retried after the task's backoff, or archived on the last
attempt; a task's ``timeout`` applies; :func:`pgqueue.current_job` works in the handler.

The pytest plugin (:mod:`pgqueue.testing.pytest_plugin`) gives you these as fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import threading
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from pgqueue.app import App
from pgqueue.drivers.base import Driver, Finish, Requeue
from pgqueue.errors import CapabilityError, PgQueueError, ValidationError
from pgqueue.job import AttemptError, Job, NewJob
from pgqueue.task import Task
from pgqueue.worker._completer import Completer
from pgqueue.worker._executor import Executor

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["DrainResult", "EnqueuedJob", "Mode", "Outcome", "TestQueue", "inline", "manual"]

T = TypeVar("T")

#: ``"inline"``: enqueue runs the job at once; ``"manual"``: jobs wait until drained.
Mode = Literal["inline", "manual"]


@dataclasses.dataclass(frozen=True, slots=True)
class EnqueuedJob:
    """One job enqueued while a :class:`TestQueue` was active (what the app asked to insert).

    ``run_at`` is when it may first run (UTC; the enqueue time for an immediate job, on the
    harness's clock: see :meth:`TestQueue.now`); ``args`` and ``meta`` are the stored JSON,
    decoded.
    """

    id: int
    task: str
    args: dict[str, Any]
    queue: str
    priority: int
    run_at: dt.datetime
    max_attempts: int
    unique_key: str | None
    timeout_s: float | None
    meta: dict[str, Any]

    def describe(self) -> str:
        """One line: ``#3 send_email on 'emails' priority 20 args {'to': 'a@b.c'}``."""
        return (f"#{self.id} {self.task} on {self.queue!r} priority {self.priority} "
                f"run_at {self.run_at:%Y-%m-%d %H:%M:%S} args {self.args!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt of a job came to.

    ``state``: ``succeeded``, ``failed`` (archived in ``failed_jobs``), ``retried`` (back to
    waiting after its backoff), ``snoozed`` or ``cancelled``. ``result``: the handler's return
    value as stored (JSON, decoded), for ``succeeded``. ``error``: the failure's
    ``"Type: message"`` for ``failed`` and ``retried``. ``delay_s``: the wait before the next
    attempt, for ``retried`` and ``snoozed``.
    """

    job: Job
    state: str
    result: Any = None
    error: str | None = None
    delay_s: float | None = None

    @property
    def job_id(self) -> int:
        return self.job.id

    @property
    def task(self) -> str:
        return self.job.task


@dataclasses.dataclass(slots=True)
class DrainResult:
    """What :meth:`TestQueue.drain` ran: how many attempts came to each outcome, and each
    :class:`Outcome` in the order they happened::

        result = q.drain(with_retries=True)
        assert (result.succeeded, result.retried, result.failed) == (1, 2, 0)
    """

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    snoozed: int = 0
    cancelled: int = 0
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)

    @property
    def ran(self) -> int:
        """Attempts run (each retry and snooze counts)."""
        return len(self.outcomes)

    def _add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        setattr(self, outcome.state, getattr(self, outcome.state) + 1)


class _TimeTravel:
    """The driver method time travel needs (memory and postgres drivers have it)."""

    @staticmethod
    def of(driver: Driver) -> Any:
        if not callable(getattr(driver, "advance_waiting", None)):
            raise CapabilityError(f"the {driver.name} driver cannot move jobs in time; "
                                  "pgqueue.testing's time travel works on the memory and "
                                  "postgres drivers")
        return driver


#: ids of jobs run in process (inline, run_job) start above this: never a driver's id
_INLINE_IDS = 10**15

_Decision = tuple[str, "Finish | Requeue | AttemptError"]


class _RecordingCompleter:
    """Stands in for the worker's :class:`Completer` in inline mode and :meth:`run_job`: keeps
    the executor's decision instead of writing it."""

    def __init__(self) -> None:
        self.decisions: dict[int, _Decision] = {}

    def add(self, item: Finish) -> None:
        self.decisions[item.job_id] = (item.state, item)

    async def finish(self, item: Finish) -> None:
        self.add(item)

    async def requeue(self, item: Requeue) -> None:
        self.decisions[item.job_id] = ("snoozed" if item.snooze else "retried", item)

    async def archive(self, job_id: int, error: AttemptError, reason: str,
                      attempt: int | None = None) -> bool:
        self.decisions[job_id] = ("failed", error)
        return True

    async def park(self, job_id: int, awaited: list[int],
                   attempt: int | None = None) -> tuple[bool, list[int]]:
        """Inline runs have no store to park a job in: the executor fails the job saying so."""
        raise CapabilityError("pgqueue.testing runs a job inline: it cannot park it for "
                              "Await; drain it with a database or memory app instead")


class _WritingCompleter(Completer):
    """The worker's completer (outcomes written to the driver, batched as usual), which also
    keeps each decision for :class:`DrainResult`."""

    def __init__(self, driver: Driver, **kwargs: Any) -> None:
        super().__init__(driver, **kwargs)
        self.decisions: dict[int, _Decision] = {}

    def add(self, item: Finish) -> None:  # (finish() comes here too)
        self.decisions[item.job_id] = (item.state, item)
        super().add(item)

    async def requeue(self, item: Requeue) -> None:
        self.decisions[item.job_id] = ("snoozed" if item.snooze else "retried", item)
        await super().requeue(item)

    async def archive(self, job_id: int, error: AttemptError, reason: str,
                      attempt: int | None = None) -> bool:
        self.decisions[job_id] = ("failed", error)
        return await super().archive(job_id, error, reason, attempt)


def _outcome(job: Job, decision: _Decision | None) -> Outcome:
    """The :class:`Outcome` of the executor's decision on ``job`` (None: the handler completed
    the job in its own transaction, :meth:`pgqueue.App.complete`)."""
    if decision is None:
        return Outcome(job, "succeeded")
    state, item = decision
    if isinstance(item, Finish):
        return Outcome(job, state, result=_decode(item.result_json))
    if isinstance(item, Requeue):
        return Outcome(job, state, error=item.error.error if item.error else None,
                       delay_s=item.delay_s)
    return Outcome(job, state, error=item.error)


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class _Interceptor:
    """Wraps the app's driver while a :class:`TestQueue` is active: records every insert, and
    in inline mode runs the jobs instead of inserting them. Everything else is the driver's."""

    def __init__(self, inner: Driver, harness: TestQueue) -> None:
        self._inner = inner
        self._harness = harness

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def insert_many(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[int]:
        h = self._harness
        if h.mode == "inline":
            return _run_sync(h._run_inline(list(jobs)))
        ids = self._inner.insert_many(jobs, conn=conn)
        h._record(jobs, ids)
        return ids

    async def insert_many_async(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[int]:
        h = self._harness
        if h.mode == "inline":
            return await h._run_inline(list(jobs))
        ids = await self._inner.insert_many_async(jobs, conn=conn)
        h._record(jobs, ids)
        return ids


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code: on a new event loop, in a thread of its own
    when this thread already runs one (a sync enqueue inside an async test)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="pgqueue-testing")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return cast(T, box["value"])


class TestQueue:
    """The test harness of one :class:`pgqueue.App` (use :func:`inline` or :func:`manual`).

    As a context manager it intercepts the app's enqueues (``App.enqueue``, ``Task.enqueue``,
    ``enqueue_many``, ``insert``, sync and async) until it exits, then puts the app's driver
    back. Attributes: ``app``; ``mode`` (changeable: ``q.mode = "inline"``); ``enqueued``: every
    job enqueued meanwhile, in order; ``outcomes``: every attempt run (inline, drain, run_job).

    Args:
        app: the app under test (its driver: memory, or PostgreSQL).
        mode: ``"manual"`` (default) or ``"inline"``.
        max_runs: the most attempts one :meth:`drain` (or inline enqueue) runs before it stops
            with :class:`pgqueue.PgQueueError` (default 10,000): a job that reschedules itself
            for ever fails the test instead of hanging it.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, app: App, mode: Mode = "manual", *, max_runs: int = 10_000) -> None:
        if mode not in ("inline", "manual"):
            raise ValidationError(f"mode must be 'inline' or 'manual', not {mode!r}")
        self.app = app
        self.mode: Mode = mode
        self.max_runs = max_runs
        self.enqueued: list[EnqueuedJob] = []
        self.outcomes: list[Outcome] = []
        self._finished: set[int] = set()
        self._offset = dt.timedelta(0)
        self._inline_ids = _INLINE_IDS
        self._original: Driver | None = None
        self._worker_id = f"pgqueue-testing:{uuid.uuid4().hex[:8]}"

    def __repr__(self) -> str:
        return f"<pgqueue.testing.TestQueue mode={self.mode} enqueued={len(self.enqueued)}>"

    # ---- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> TestQueue:
        if self._original is not None:
            raise PgQueueError("this TestQueue is already active")
        driver = self.app.driver
        if isinstance(driver, _Interceptor):
            raise PgQueueError("another pgqueue.testing harness is already active on this app")
        self._original = driver
        self.app.use_driver(cast(Driver, _Interceptor(driver, self)))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._original is not None:
            self.app.use_driver(self._original)
            self._original = None

    @property
    def driver(self) -> Driver:
        """The app's own driver (not the harness's wrapper)."""
        return self._original if self._original is not None else self.app.driver

    # ---- time --------------------------------------------------------------------------------
    def now(self) -> dt.datetime:
        """The harness's clock: the current UTC time plus every :meth:`advance` so far."""
        return dt.datetime.now(dt.UTC) + self._offset

    def advance(self, by: float | dt.timedelta) -> int:
        """Travel forward in time by ``by`` (seconds or a timedelta): delayed jobs and retries
        that would be due by then become due now (on the driver: their ``run_at`` moves
        back by ``by``, never before now). Returns how many jobs moved. No sleeping::

            send_report.options(delay=3600).enqueue()
            q.advance(dt.timedelta(hours=1))
            assert q.drain().succeeded == 1
        """
        seconds = by.total_seconds() if isinstance(by, dt.timedelta) else by
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValidationError(f"advance takes a number of seconds >= 0 or a timedelta, "
                                  f"not {by!r}")
        driver = _TimeTravel.of(self.driver)
        self._offset += dt.timedelta(seconds=seconds)
        return int(driver.advance_waiting(float(seconds), self._queues(None)))

    # ---- recording ----------------------------------------------------------------------------
    def _record(self, jobs: Sequence[NewJob], ids: Sequence[int]) -> None:
        now = self.now()
        seen = {j.id for j in self.enqueued}
        for job, job_id in zip(jobs, ids, strict=True):
            if job_id in seen:  # a unique_key that was already held: nothing new
                continue
            seen.add(job_id)
            run_at = job.run_at if job.run_at is not None else now + dt.timedelta(
                seconds=job.delay_s or 0.0)
            self.enqueued.append(EnqueuedJob(
                id=job_id, task=job.task, args=json.loads(job.args_json), queue=job.queue,
                priority=job.priority, run_at=run_at.astimezone(dt.UTC),
                max_attempts=job.max_attempts, unique_key=job.unique_key,
                timeout_s=job.timeout_s, meta=json.loads(job.meta_json)))

    def enqueued_jobs(self, task: Task | str | None = None, *,
                      queue: str | None = None, include_finished: bool = False,
                      ) -> list[EnqueuedJob]:
        """The jobs enqueued while this harness was active, oldest first: of ``task`` (a
        :class:`pgqueue.Task` or its name) and ``queue`` when given. Jobs that reached a final
        outcome (succeeded, failed, cancelled) through :meth:`drain` or inline mode are left
        out unless ``include_finished``::

            [job.args for job in q.enqueued_jobs(send_email)]
        """
        name = _task_name(task)
        return [j for j in self.enqueued
                if (name is None or j.task == name) and (queue is None or j.queue == queue)
                and (include_finished or j.id not in self._finished)]

    def assert_enqueued(self, task: Task | str, *,
                        args: dict[str, Any] | None = None, queue: str | None = None,
                        priority: int | None = None,
                        within: float | dt.timedelta | None = None,
                        count: int | None = None) -> list[EnqueuedJob]:
        """Assert that a waiting job of ``task`` matches; return the matching jobs.

        ``args``: the keys given must have these values (other keys may exist); ``queue``,
        ``priority``: equal; ``within``: the job may run at most this long (seconds or
        timedelta) after the harness's :meth:`now`; ``count``: exactly this many match (default:
        at least one). On failure the AssertionError lists what was enqueued instead, with each
        difference::

            q.assert_enqueued(send_email, args={"to": "a@b.c"}, queue="emails", within=60)
        """
        want = _Want(_task_name(task) or "", args, queue, priority, _seconds(within), self.now())
        live = self.enqueued_jobs()
        found = [j for j in live if not want.differences(j)]
        if (count is None and found) or (count is not None and len(found) == count):
            return found
        expected = want.describe() + ("" if count is None else f", {count} times")
        head = (f"expected {expected}; found {len(found)} matching"
                if count is not None else f"no enqueued job matches {expected}")
        raise AssertionError(head + "\n" + _listing(live, want))

    def refute_enqueued(self, task: Task | str, *,
                        args: dict[str, Any] | None = None, queue: str | None = None,
                        priority: int | None = None,
                        within: float | dt.timedelta | None = None) -> None:
        """Assert that no waiting job of ``task`` matches (the filters of
        :meth:`assert_enqueued`); the AssertionError lists the ones that do."""
        want = _Want(_task_name(task) or "", args, queue, priority, _seconds(within), self.now())
        found = [j for j in self.enqueued_jobs() if not want.differences(j)]
        if found:
            raise AssertionError(f"expected no job matching {want.describe()}, found "
                                 f"{len(found)}:\n" + "\n".join(f"  {j.describe()}"
                                                                 for j in found))

    # ---- running -------------------------------------------------------------------------------
    def _queues(self, queues: Sequence[str] | None) -> list[str]:
        if queues is not None:
            return list(dict.fromkeys(queues))
        names = [t.queue for t in self.app.tasks.values()]
        names += [j.queue for j in self.enqueued]
        return list(dict.fromkeys([*names, self.app.default_queue]))

    def drain(self, queues: Sequence[str] | None = None, *, with_scheduled: bool = False,
              with_retries: bool = False) -> DrainResult:
        """Run the waiting jobs that are due, one at a time, through the worker's executor and
        completer (outcomes written to the driver as a worker writes them), until none is left;
        return what happened.

        ``queues``: default every queue of the app's tasks and of the jobs enqueued here.
        ``with_scheduled``: also run jobs scheduled for later (``delay``/``run_at``), at once.
        ``with_retries``: also run retries and snoozed jobs at once, again and again, until each
        job ends (succeeds, is archived after its last attempt, or is cancelled); without it a
        retried job stays waiting for its backoff (``result.retried`` counts it).
        """
        return _run_sync(self._drain(queues, with_scheduled, with_retries, close=True))

    async def drain_async(self, queues: Sequence[str] | None = None, *,
                          with_scheduled: bool = False,
                          with_retries: bool = False) -> DrainResult:
        """Async twin of :meth:`drain` (runs on the current event loop)."""
        return await self._drain(queues, with_scheduled, with_retries, close=False)

    async def _drain(self, queues: Sequence[str] | None, with_scheduled: bool,
                     with_retries: bool, *, close: bool) -> DrainResult:
        driver = self.driver
        names = self._queues(queues)
        result = DrainResult()
        travel = _TimeTravel.of(driver) if (with_scheduled or with_retries) else None
        kind = "all" if with_scheduled and with_retries else (
            "scheduled" if with_scheduled else "retries")
        completer = _WritingCompleter(driver, worker_id=self._worker_id, flush_interval=0.0)
        executor = Executor(self.app, completer, worker_id=self._worker_id, concurrency=1)
        await driver.register_worker(worker_id=self._worker_id, queues=names, concurrency=1)
        await completer.start()
        try:
            while True:
                if travel is not None:
                    await travel.advance_waiting_async(None, names, kind)
                jobs = await driver.claim(names, 1, worker_id=self._worker_id, lease_s=300.0)
                if not jobs:
                    break
                if result.ran >= self.max_runs:
                    raise PgQueueError(f"drain ran {self.max_runs} attempts and jobs are still "
                                       "due: a job that reschedules itself for ever? (raise "
                                       "TestQueue(max_runs=...))")
                job = jobs[0]
                await executor.run(job)
                await completer.drain()
                outcome = _outcome(job, completer.decisions.pop(job.id, None))
                result._add(outcome)
                self._note(outcome)
        finally:
            await completer.stop()
            executor.shutdown()
            with contextlib.suppress(PgQueueError):
                await driver.unregister_worker(worker_id=self._worker_id)
            if close:
                await driver.aclose()
        return result

    def _note(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if outcome.state in ("succeeded", "failed", "cancelled"):
            self._finished.add(outcome.job.id)

    # ---- one job, in process -------------------------------------------------------------------
    def _new_job(self, new: NewJob, attempt: int = 1) -> Job:
        self._inline_ids += 1
        return Job(id=self._inline_ids, queue=new.queue, task=new.task,
                   args=json.loads(new.args_json), priority=new.priority, attempt=attempt,
                   max_attempts=new.max_attempts, run_at=new.run_at or self.now(),
                   created_at=self.now(), unique_key=new.unique_key, timeout_s=new.timeout_s,
                   meta=json.loads(new.meta_json), state="running")

    async def _attempt(self, job: Job) -> Outcome:
        """Run one attempt of ``job`` through the executor; the decision, not written."""
        completer = _RecordingCompleter()
        executor = Executor(self.app, cast(Completer, completer), worker_id=self._worker_id,
                            concurrency=1)
        try:
            await executor.run(job)
        finally:
            executor.shutdown()
        return _outcome(job, completer.decisions.get(job.id))

    async def _run_inline(self, jobs: list[NewJob]) -> list[int]:
        ids = []
        for new in jobs:
            job = self._new_job(new)
            self._record([new], [job.id])
            runs = 0
            while True:
                runs += 1
                if runs > self.max_runs:
                    raise PgQueueError(f"job {job.id} ({job.task}) ran {self.max_runs} "
                                       "attempts inline without ending")
                outcome = await self._attempt(job)
                self._note(outcome)
                if outcome.state == "retried":
                    err = AttemptError.now(job.attempt, outcome.error or "error")
                    job = dataclasses.replace(job, attempt=job.attempt + 1,
                                              errors=[*job.errors, err])
                elif outcome.state == "snoozed":
                    job = dataclasses.replace(job, snoozes=job.snoozes + 1)
                else:
                    break
            ids.append(job.id)
        return ids

    def run_job(self, task: Task | str, args: Any = None, *, attempt: int = 1,
                **options: Any) -> Outcome:
        """Run one attempt of a job of ``task`` with ``args`` now, in this process, through the
        worker's executor, and return its :class:`Outcome` (nothing is enqueued or written).

        ``args`` are checked as at enqueue; ``options`` are enqueue options (``timeout``,
        ``max_attempts``, ``meta``...); ``attempt`` is the attempt number the handler sees
        (``current_job().attempt``; with ``attempt == max_attempts`` an error archives)::

            outcome = q.run_job(send_email, {"to": "a@b.c"})
            assert outcome.state == "succeeded"
        """
        return _run_sync(self.run_job_async(task, args, attempt=attempt, **options))

    async def run_job_async(self, task: Task | str, args: Any = None, *,
                            attempt: int = 1, **options: Any) -> Outcome:
        """Async twin of :meth:`run_job`."""
        name = _task_name(task)
        assert name is not None
        new = self.app.build(name, args, **options)
        outcome = await self._attempt(self._new_job(new, attempt=attempt))
        self._note(outcome)
        return outcome


# ---- matching and messages ------------------------------------------------------------------
_MISSING = object()


@dataclasses.dataclass(frozen=True, slots=True)
class _Want:
    task: str
    args: dict[str, Any] | None
    queue: str | None
    priority: int | None
    within_s: float | None
    now: dt.datetime

    def differences(self, job: EnqueuedJob) -> list[str]:
        out = []
        if job.task != self.task:
            out.append(f"task: expected {self.task!r}, got {job.task!r}")
        for key, value in (self.args or {}).items():
            got = job.args.get(key, _MISSING)
            if got is _MISSING:
                out.append(f"args[{key!r}]: expected {value!r}, missing")
            elif got != value:
                out.append(f"args[{key!r}]: expected {value!r}, got {got!r}")
        if self.queue is not None and job.queue != self.queue:
            out.append(f"queue: expected {self.queue!r}, got {job.queue!r}")
        if self.priority is not None and job.priority != self.priority:
            out.append(f"priority: expected {self.priority}, got {job.priority}")
        if self.within_s is not None:
            late = (job.run_at - self.now).total_seconds()
            if late > self.within_s:
                out.append(f"run_at: expected within {self.within_s:g} s, runs in {late:.0f} s")
        return out

    def describe(self) -> str:
        parts = [f"task={self.task!r}"]
        if self.args is not None:
            parts.append(f"args={self.args!r}")
        if self.queue is not None:
            parts.append(f"queue={self.queue!r}")
        if self.priority is not None:
            parts.append(f"priority={self.priority}")
        if self.within_s is not None:
            parts.append(f"within={self.within_s:g}s")
        return ", ".join(parts)


def _listing(live: list[EnqueuedJob], want: _Want) -> str:
    """The diff-like part of a failed assertion: each waiting job and how it differs, jobs of
    the expected task first."""
    if not live:
        return "enqueued instead: nothing"
    ordered = sorted(live, key=lambda j: j.task != want.task)
    lines = [f"enqueued instead ({len(live)} waiting):"]
    for job in ordered[:20]:
        lines.append(f"  {job.describe()}")
        lines.extend(f"      - {d}" for d in want.differences(job)[:5])
    if len(live) > 20:
        lines.append(f"  ... and {len(live) - 20} more")
    return "\n".join(lines)


def _task_name(task: Task | str | None) -> str | None:
    if task is None or isinstance(task, str):
        return task
    if isinstance(task, Task):
        return task.name
    raise ValidationError(f"expected a pgqueue Task or a task name, not {type(task).__name__}")


def _seconds(value: float | dt.timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


@contextlib.contextmanager
def inline(app: App, *, max_runs: int = 10_000) -> Iterator[TestQueue]:
    """A :class:`TestQueue` in ``inline`` mode for the ``with`` block: every enqueue runs its
    job at once, to its final outcome::

        with pgqueue.testing.inline(app) as q:
            send_email.enqueue(to="a@b.c")
            assert [o.state for o in q.outcomes] == ["succeeded"]
    """
    with TestQueue(app, "inline", max_runs=max_runs) as q:
        yield q


@contextlib.contextmanager
def manual(app: App, *, max_runs: int = 10_000) -> Iterator[TestQueue]:
    """A :class:`TestQueue` in ``manual`` mode for the ``with`` block: jobs are enqueued and
    recorded; nothing runs until :meth:`TestQueue.drain`::

        with pgqueue.testing.manual(app) as q:
            send_email.enqueue(to="a@b.c")
            q.assert_enqueued(send_email, args={"to": "a@b.c"})
    """
    with TestQueue(app, "manual", max_runs=max_runs) as q:
        yield q
