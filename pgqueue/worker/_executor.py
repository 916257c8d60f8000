"""Run one job and turn what happened into a state change.

Async handlers run on the event loop, sync handlers in a thread pool, so a blocking handler never
stalls other jobs, heartbeats or the LISTEN connection. A timeout cancels an async handler; a
sync handler's thread cannot be killed, so on timeout the attempt is failed and its slot freed
while the thread runs on (its late result is ignored: the job no longer belongs to it), and its
context's ``cancelled`` event is set so a cooperative handler can stop.

What a handler returns or raises decides the outcome:

=================================  =====================================================
returns a value                    succeeded (batched into ``job_history``)
returns/raises ``Snooze(s)``       back to waiting in ``s`` seconds, attempt not counted,
                                   ``snoozes`` + 1 (past the task's ``max_snoozes``: failed)
returns/raises ``Cancel``          ``job_history`` as cancelled
returns/raises ``Fail``            ``failed_jobs`` now, no retry
returns/raises ``Await(ids)``      blocked until those jobs finish, then run again (attempt not
                                   counted; their results in ``current_job().awaited``)
raises anything else               retry after backoff, or ``failed_jobs`` on the last attempt
=================================  =====================================================

A job whose task this worker does not know (a rolling deploy: a newer producer enqueued a task
that only the newer workers have) is not run and not failed while it is younger than
``unknown_task_grace`` seconds (from its enqueue): it is put back, its attempt not counted, a
warning logged, to be claimed again after :func:`unknown_task_delay` -- by a worker that knows
it, once one runs. Past the grace it is archived, saying why.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import inspect
import logging
import queue
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor as FuturesExecutor
from concurrent.futures import Future
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any

from pgqueue import _tracing
from pgqueue._codec import ERROR_TEXT_LIMIT, TRACEBACK_LIMIT, cap_text, result_json
from pgqueue._defaults import DEFAULT_UNKNOWN_TASK_GRACE
from pgqueue.drivers.base import Finish, Requeue
from pgqueue.errors import CapabilityError
from pgqueue.job import AttemptError, Await, Cancel, Fail, Job, Snooze
from pgqueue.worker._completer import Completer
from pgqueue.worker._registry import RunnableTask, TaskRegistry
from pgqueue.worker.context import JobContext, reset_context, set_context

log = logging.getLogger("pgqueue.worker")

__all__ = ["Executor", "attempt_error", "unknown_task_delay"]


def unknown_task_delay(grace: float) -> float:
    """How long a job of an unknown task waits before it is claimed again: a fiftieth of the
    grace, between 0.05 and 30 s (300 s of grace: every 6 s), so that an old worker does not
    spin on it, and a new worker, which wakes on the put-back's NOTIFY anyway, is not kept
    waiting long."""
    return min(30.0, max(0.05, grace / 50))


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, storable and capped (see :mod:`pgqueue._codec`)."""
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ raises must not crash the worker
        text = "<unprintable exception>"
    name = type(exc).__name__
    return cap_text(f"{name}: {text}" if text else name, ERROR_TEXT_LIMIT)


class HandlerExit(Exception):
    """A job's code raised ``SystemExit`` or ``KeyboardInterrupt``: that job's failure (it is
    retried like any error), never the worker's exit."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"the job raised {type(exc).__name__}({exc}); a job cannot stop its "
                         "worker")
        self.original = exc


async def _guarded(awaitable: Awaitable[Any]) -> Any:
    """Await a job's (or hook's) coroutine so that SystemExit/KeyboardInterrupt it raises stays
    an ordinary exception (asyncio lets those two escape a task and stop the event loop)."""
    try:
        return await awaitable
    except (SystemExit, KeyboardInterrupt) as exc:
        raise HandlerExit(exc) from exc


class _DaemonThreadPool(FuturesExecutor):
    """Runs sync handlers on daemon threads (at most ``max_workers`` at once).

    Unlike :class:`concurrent.futures.ThreadPoolExecutor`, whose threads the interpreter joins
    at exit, a handler that never returns cannot keep the worker process alive after shutdown:
    its job was already released, and the process exits once the worker has stopped.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self._max = max_workers
        self._name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue())
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)  # released by a thread each time it goes idle
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot run a job after the worker shut down")
            self._work.put((fut, lambda: fn(*args, **kwargs)))
            if not self._idle.acquire(timeout=0) and len(self._threads) < self._max:
                t = threading.Thread(target=self._loop, daemon=True,
                                     name=f"{self._name}_{len(self._threads)}")
                self._threads.append(t)
                t.start()
        return fut

    def _loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            fut, fn = item
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # a job's SystemExit is that job's failure
                    fut.set_exception(exc)
            del item, fut, fn
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            for t in threads:
                t.join()


def attempt_error(job: Job, exc: BaseException | None,
                  message: str | None = None) -> AttemptError:
    """The record of one failed attempt (of ``job``'s current attempt, now)."""
    tb: str | None = None
    if exc is not None:
        try:
            tb = cap_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                          TRACEBACK_LIMIT)
        except Exception:
            tb = None
    return AttemptError.now(
        job.attempt, (cap_text(message, ERROR_TEXT_LIMIT) if message else
                      _describe(exc) if exc is not None else "unknown error"), tb)


class Executor:
    """Runs jobs for one worker: looks the task up in ``registry``, runs it, and hands the
    outcome to ``completer``. ``on_event(event, job)`` is called for every state change.

    Who owns what: ``contexts`` (the running jobs' contexts) and ``released`` (jobs given back
    at shutdown, whose late outcome must be ignored) belong to the executor; the worker reads
    them to cancel or release jobs.
    """

    def __init__(self, registry: TaskRegistry, completer: Completer, *, worker_id: str,
                 concurrency: int, on_event: Callable[[str, Job], None] | None = None,
                 max_delay_s: float | None = None,
                 unknown_task_grace: float = DEFAULT_UNKNOWN_TASK_GRACE) -> None:
        self.registry = registry
        #: the driver's longest delay (``Capabilities.max_delay_s``): a longer Snooze fails
        self.max_delay_s = max_delay_s
        self.unknown_task_grace = unknown_task_grace
        self.completer = completer
        #: the driver a job's context gets (its durable steps write there)
        self._driver = getattr(completer, "driver", None)
        self.worker_id = worker_id
        self.pool = _DaemonThreadPool(concurrency, "pgqueue-job")
        self.on_event = on_event
        #: whether ``on_event`` wants the ``started`` events (the worker says no when nothing
        #: listens to them: one call less per job); the DEBUG line is written either way
        self.started_events = True
        self.contexts: dict[int, JobContext] = {}
        self.released: set[int] = set()
        self._t0: dict[int, float] = {}  # when each running attempt started (monotonic)
        self._traces: dict[int, _tracing.Running] = {}  # spans of running attempts (tracing on)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _emit(self, event: str, job: Job) -> None:
        if log.isEnabledFor(logging.DEBUG):  # one structured line per state change
            self._debug_line(event, job)
        if event != "started" and self._traces:
            running = self._traces.get(job.id)
            if running is not None:
                _tracing.set_outcome(running, event)
        if self.on_event is not None:
            try:
                self.on_event(event, job)
            except Exception:
                log.exception("on_event callback failed")

    def _record_error(self, job: Job, exc: BaseException | None, message: str) -> None:
        running = self._traces.get(job.id)
        if running is not None:
            _tracing.record_error(running, exc, message)

    def _debug_line(self, event: str, job: Job) -> None:
        """The DEBUG line of a state change, with the attempt's duration once it ends (known
        for attempts that started while DEBUG was on)."""
        if event == "started":
            self._t0[job.id] = time.monotonic()
            duration = None
        else:
            t0 = self._t0.pop(job.id, None)
            duration = None if t0 is None else round(time.monotonic() - t0, 6)
        fields: dict[str, Any] = {"event": event, "worker": self.worker_id, "job_id": job.id,
                                  "queue": job.queue, "task": job.task, "attempt": job.attempt}
        if duration is not None:
            fields["duration"] = duration
        log.debug("job %s %s", job.id, event, extra=fields)

    async def run(self, job: Job) -> None:
        """Run ``job`` to an outcome and hand the state change to the completer."""
        ctx = JobContext(job, self.worker_id, self._driver)
        self.contexts[job.id] = ctx
        # (tracing off, the usual: one call per job to learn it)
        traced = _tracing.start_consume(job) if _tracing.active() is not None else None
        if traced is not None:
            self._traces[job.id] = traced
        try:
            await self._run(job, ctx)
        finally:
            if traced is not None:
                del self._traces[job.id]
                _tracing.end_consume(traced)
            self.contexts.pop(job.id, None)
            if self._t0:
                self._t0.pop(job.id, None)

    async def _run(self, job: Job, ctx: JobContext) -> None:
        if job.decode_error is not None:  # its stored args cannot be read: it cannot run
            await self._fail(job, None, job.decode_error, final=True)
            return
        task = self.registry.tasks.get(job.task)
        if task is None:
            await self._unknown(job)
            return
        if self.started_events or log.isEnabledFor(logging.DEBUG):
            self._emit("started", job)
        timeout = job.timeout_s if job.timeout_s is not None else task.timeout
        failed_hook: Any = None
        try:
            failed_hook, call = task.invoke(job)
            result = await self._call(call, ctx, timeout)
        except asyncio.CancelledError:
            if job.id in self.released:
                return  # shutdown: the job was released back to waiting
            if ctx.cancelled.is_set():
                self._finish(job, "cancelled", None)
                return
            raise
        except TimeoutError as exc:
            if timeout is not None:
                ctx.cancelled.set()
                await self._error(job, task, exc, failed_hook,
                                  message=f"timed out after {timeout:g} s")
            else:
                await self._error(job, task, exc, failed_hook)
            return
        except Snooze as s:
            await self._snooze(job, task, s, failed_hook)
            return
        except Cancel:
            self._finish(job, "cancelled", None)
            return
        except Fail as f:
            await self._fail(job, f, f.reason, final=True, failed_hook=failed_hook)
            return
        except Await as a:
            await self._await(job, a, failed_hook)
            return
        except Exception as exc:
            await self._error(job, task, exc, failed_hook)
            return
        except BaseException as exc:  # SystemExit/KeyboardInterrupt inside a handler
            await self._error(job, task, exc, failed_hook)
            return
        if job.id in self.released:
            return
        if result is None:  # the usual: succeeded, no result to store
            if ctx.completed_in_tx:
                self._emit("succeeded", job)
            else:
                self._finish(job, "succeeded", None)
        elif isinstance(result, Snooze):
            await self._snooze(job, task, result, failed_hook)
        elif isinstance(result, Cancel):
            self._finish(job, "cancelled", None)
        elif isinstance(result, Fail):
            await self._fail(job, result, result.reason, final=True, failed_hook=failed_hook)
        elif isinstance(result, Await):
            await self._await(job, result, failed_hook)
        elif ctx.completed_in_tx:
            self._emit("succeeded", job)
        else:
            self._finish(job, "succeeded", result_json(result))

    async def _call(self, call: Callable[[], Any], ctx: JobContext, timeout: float | None) -> Any:
        token = set_context(ctx)
        try:
            if (call.__code__.co_flags & CO_COROUTINE if type(call) is FunctionType
                    else _is_async(call)):  # (_is_async, its usual case inlined)
                if timeout is None:  # _guarded, inlined: one coroutine less per job
                    try:
                        result = await call()
                    except (SystemExit, KeyboardInterrupt) as exc:
                        raise HandlerExit(exc) from exc
                else:
                    result = await asyncio.wait_for(_guarded(call()), timeout)
            else:
                loop = asyncio.get_running_loop()
                context = contextvars.copy_context()
                fut = loop.run_in_executor(self.pool, context.run, call)
                result = await asyncio.wait_for(fut, timeout)
            # a sync callable that returned a coroutine
            if result is not None and inspect.isawaitable(result):
                result = await asyncio.wait_for(_guarded(result), timeout)
            return result
        finally:
            reset_context(token)

    async def _unknown(self, job: Job) -> None:
        """A job of a task this worker does not know: put back within the grace (see the
        module docstring), archived after it."""
        known = ", ".join(sorted(self.registry.tasks)) or "none"
        created = job.created_at or dt.datetime.now(dt.UTC)  # (always set by the drivers)
        age = (dt.datetime.now(dt.UTC) - created).total_seconds()
        fields = {"event": "unknown_task", "worker": self.worker_id, "job_id": job.id,
                  "queue": job.queue, "task": job.task}
        if age < self.unknown_task_grace:
            delay = unknown_task_delay(self.unknown_task_grace)
            log.warning("job %s: task %r is unknown to this worker (registered: %s); put back "
                        "for %.1f s -- a worker that knows it may be on its way (rolling "
                        "deploy); archived %.0f s after its enqueue if none runs it",
                        job.id, job.task, known, delay, self.unknown_task_grace, extra=fields)
            await self.completer.requeue(Requeue(job.id, delay, count_attempt=False,
                                                    attempt=job.attempt))
            self._emit("deferred", job)
            return
        await self._fail(job, None, f"unknown task {job.task!r}: no worker that knows it ran "
                                    f"it within unknown_task_grace ({self.unknown_task_grace:g}"
                                    f" s after its enqueue); this worker registers: {known}",
                         final=True)

    def _finish(self, job: Job, state: str, result: str | None) -> None:
        """Hand a finished job to the completer (buffered: nothing to wait for)."""
        self.completer.add(Finish(job.id, state, result, job.attempt))
        self._emit(state, job)

    async def _await(self, job: Job, wait: Await, failed_hook: Any = None) -> None:
        """Park the job until the awaited jobs finish (its slot is free at once), or fail it
        if one of them does not exist (or the driver has no workflows)."""
        try:
            parked, missing = await self.completer.park(job.id, wait.job_ids,
                                                        attempt=job.attempt)
        except CapabilityError as exc:
            await self._fail(job, exc, str(exc), final=True, failed_hook=failed_hook)
            return
        if missing:
            await self._fail(job, wait, f"Await: no job {missing[0]} (not live, not in the "
                                        "history nor the archive)", final=True,
                             failed_hook=failed_hook)
            return
        if parked:
            self._emit("awaiting", job)

    async def _snooze(self, job: Job, task: RunnableTask, snooze: Snooze,
                      failed_hook: Any = None) -> None:
        """Put the job back for ``snooze.seconds`` (attempt given back, ``snoozes`` + 1), or --
        once it has used the task's ``max_snoozes`` -- archive it, saying why."""
        cap = task.max_snoozes
        if cap is not None and job.snoozes >= cap:
            reason = (f"snoozed too often: {job.snoozes} snoozes already, the task's "
                      f"max_snoozes is {cap} (raise it with @app.task(max_snoozes=...), or "
                      f"None for no limit)")
            await self._fail(job, snooze, reason, final=True, failed_hook=failed_hook)
            return
        longest = self.max_delay_s
        if longest is not None and snooze.seconds > longest:
            reason = (f"snoozed for {snooze.seconds:.0f} s, longer than the driver's "
                      f"{longest:.0f} s delay limit (snooze for less, or use the postgres "
                      "driver)")
            await self._fail(job, snooze, reason, final=True, failed_hook=failed_hook)
            return
        await self.completer.requeue(Requeue(job.id, snooze.seconds, count_attempt=False,
                                                attempt=job.attempt, snooze=True))
        self._emit("snoozed", job)

    async def _error(self, job: Job, task: RunnableTask, exc: BaseException, failed_hook: Any,
                     message: str | None = None) -> None:
        floor = task.min_attempts
        cap = job.max_attempts if floor is None else max(job.max_attempts, floor)
        if job.attempt >= cap:
            await self._fail(job, exc, message or _describe(exc), final=True,
                             failed_hook=failed_hook, exhausted=True)
            return
        delay = float(task.retry(job.attempt))
        err = attempt_error(job, exc, message)
        self._record_error(job, exc, err.error)
        await self.completer.requeue(Requeue(job.id, delay, count_attempt=True, error=err,
                                                attempt=job.attempt,
                                                max_attempts=None if cap == job.max_attempts
                                                else cap))
        log.info("job %s attempt %s failed: %s; retry in %.1f s", job.id, job.attempt,
                 err.error, delay, extra={"event": "retry", "worker": self.worker_id,
                                          "job_id": job.id, "queue": job.queue,
                                          "task": job.task, "attempt": job.attempt})
        self._emit("retried", job)

    async def _fail(self, job: Job, exc: BaseException | None, reason: str, *, final: bool,
                    failed_hook: Any = None, exhausted: bool = False) -> None:
        reason = cap_text(reason, ERROR_TEXT_LIMIT)
        err = attempt_error(job, exc, reason)
        self._record_error(job, exc, reason)
        archived = await self.completer.archive(job.id, err, reason, attempt=job.attempt)
        log.warning("job %s (%s) moved to failed_jobs: %s", job.id, job.task, reason,
                    extra={"event": "failed", "worker": self.worker_id, "job_id": job.id,
                           "queue": job.queue, "task": job.task, "attempt": job.attempt})
        self._emit("failed", job)
        if archived:
            await self._dead_letter(job, exc if exc is not None else RuntimeError(reason),
                                    failed_hook)

    async def _dead_letter(self, job: Job, exc: BaseException, instance: Any) -> None:
        """Run the queue's dead-letter hook and the job class's ``failed(exc)``; log errors."""
        hooks: list[Callable[[], Any]] = []
        handler = self.registry.dead_letter_handlers.get(job.queue)
        if handler is not None:
            hooks.append(lambda: handler(job, exc))
        if instance is not None and callable(getattr(instance, "failed", None)):
            hooks.append(lambda: instance.failed(exc))
        for hook in hooks:
            try:
                result = await asyncio.get_running_loop().run_in_executor(self.pool, hook)
                if inspect.isawaitable(result):  # an async hook: run it on the loop, guarded
                    await _guarded(result)
            except asyncio.CancelledError:
                raise
            except BaseException:  # SystemExit in a hook is the hook's failure, not ours
                log.exception("dead-letter hook for job %s raised; ignored", job.id)


def _is_async(fn: Callable[[], Any]) -> bool:
    """Whether calling ``fn`` makes a coroutine to await (else it runs in the thread pool).
    A plain function (what :meth:`pgqueue.Task.invoke` returns) is answered from its code
    flags; anything else by :mod:`inspect` (partials, methods, objects with ``async __call__``).
    """
    if type(fn) is FunctionType:
        return bool(fn.__code__.co_flags & CO_COROUTINE)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))  # noqa: B004

