"""Run one job and turn what happened into a state change.

Async handlers run on the event loop, sync handlers in a thread pool, so a blocking handler never
stalls other jobs, heartbeats or the LISTEN connection. A timeout cancels an async handler; a
sync handler's thread cannot be killed, so on timeout the attempt is failed and its slot freed
while the thread runs on (its late result is ignored: the job no longer belongs to it), and its
context's ``cancelled`` event is set so a cooperative handler can stop.

What a handler returns or raises decides the outcome:

=================================  =====================================================
returns a value                    succeeded (batched into ``job_history``)
returns/raises ``Snooze(s)``       back to waiting in ``s`` seconds, attempt not counted
returns/raises ``Cancel``          ``job_history`` as cancelled
returns/raises ``Fail``            ``failed_jobs`` now, no retry
raises anything else               retry after backoff, or ``failed_jobs`` on the last attempt
=================================  =====================================================
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pgqueue.drivers.base import Finish, Requeue
from pgqueue.job import AttemptError, Cancel, Fail, Job, Snooze
from pgqueue.worker.context import JobContext, reset_context, set_context

if TYPE_CHECKING:
    from pgqueue.app import App
    from pgqueue.worker.completer import Completer

log = logging.getLogger("pgqueue.worker")

__all__ = ["Executor", "attempt_error", "result_json"]


def result_json(value: Any) -> str | None:
    """A handler's return value as JSON, or None when it is None or not JSON-serialisable."""
    if value is None:
        return None
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        log.warning("job result of type %s is not JSON-serialisable; not stored",
                    type(value).__name__)
        return None


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ raises must not crash the worker
        text = "<unprintable exception>"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def attempt_error(job: Job, exc: BaseException | None,
                  message: str | None = None) -> AttemptError:
    """The record of one failed attempt (of ``job``'s current attempt, now)."""
    tb: str | None = None
    if exc is not None:
        try:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        except Exception:
            tb = None
    return AttemptError.now(
        job.attempt, message or (_describe(exc) if exc is not None else "unknown error"), tb)


class Executor:
    """Runs jobs for one worker. ``on_done(job, outcome)`` is called after each job."""

    def __init__(self, app: App, completer: Completer, *, worker_id: str, concurrency: int,
                 on_event: Callable[[str, Job], None] | None = None) -> None:
        self.app = app
        self.completer = completer
        self.worker_id = worker_id
        self.pool = ThreadPoolExecutor(max_workers=concurrency,
                                       thread_name_prefix="pgqueue-job")
        self.on_event = on_event
        self.contexts: dict[int, JobContext] = {}
        self.released: set[int] = set()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _emit(self, event: str, job: Job) -> None:
        if log.isEnabledFor(logging.DEBUG):  # one structured line per state change
            log.debug("job %s %s", job.id, event,
                      extra={"event": event, "job_id": job.id, "task": job.task,
                             "queue": job.queue, "attempt": job.attempt})
        if self.on_event is not None:
            try:
                self.on_event(event, job)
            except Exception:
                log.exception("on_event callback failed")

    async def run(self, job: Job) -> None:
        """Run ``job`` to an outcome and hand the state change to the completer."""
        ctx = JobContext(job=job, worker_id=self.worker_id)
        self.contexts[job.id] = ctx
        try:
            await self._run(job, ctx)
        finally:
            self.contexts.pop(job.id, None)

    async def _run(self, job: Job, ctx: JobContext) -> None:
        task = self.app.get_task(job.task)
        if task is None:
            known = ", ".join(sorted(self.app.tasks)) or "none"
            await self._fail(job, None, f"unknown task {job.task!r}: no handler is registered "
                                        f"for it in this worker (registered: {known})",
                             final=True)
            return
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
                await self._finish(job, "cancelled", None)
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
            await self._snooze(job, s.seconds)
            return
        except Cancel:
            await self._finish(job, "cancelled", None)
            return
        except Fail as f:
            await self._fail(job, f, f.reason, final=True, failed_hook=failed_hook)
            return
        except Exception as exc:
            await self._error(job, task, exc, failed_hook)
            return
        except BaseException as exc:  # SystemExit/KeyboardInterrupt inside a handler
            await self._error(job, task, exc, failed_hook)
            return
        if job.id in self.released:
            return
        if isinstance(result, Snooze):
            await self._snooze(job, result.seconds)
        elif isinstance(result, Cancel):
            await self._finish(job, "cancelled", None)
        elif isinstance(result, Fail):
            await self._fail(job, result, result.reason, final=True, failed_hook=failed_hook)
        elif ctx.completed_in_tx:
            self._emit("succeeded", job)
        else:
            await self._finish(job, "succeeded", result_json(result))

    async def _call(self, call: Callable[[], Any], ctx: JobContext, timeout: float | None) -> Any:
        token = set_context(ctx)
        try:
            if inspect.iscoroutinefunction(call) or _is_async_callable(call):
                result = await (call() if timeout is None else asyncio.wait_for(call(), timeout))
            else:
                loop = asyncio.get_running_loop()
                context = contextvars.copy_context()
                fut = loop.run_in_executor(self.pool, context.run, call)
                result = await asyncio.wait_for(fut, timeout)
            if inspect.isawaitable(result):  # a sync callable that returned a coroutine
                result = await asyncio.wait_for(result, timeout)
            return result
        finally:
            reset_context(token)

    async def _finish(self, job: Job, state: str, result: str | None) -> None:
        await self.completer.finish(Finish(job.id, state, result, attempt=job.attempt))
        self._emit(state, job)

    async def _snooze(self, job: Job, seconds: float) -> None:
        await self.completer.requeue(Requeue(job.id, seconds, count_attempt=False,
                                                attempt=job.attempt))
        self._emit("snoozed", job)

    async def _error(self, job: Job, task: Any, exc: BaseException, failed_hook: Any,
                     message: str | None = None) -> None:
        if job.attempt >= job.max_attempts:
            await self._fail(job, exc, message or _describe(exc), final=True,
                             failed_hook=failed_hook, exhausted=True)
            return
        delay = float(task.retry(job.attempt))
        err = attempt_error(job, exc, message)
        await self.completer.requeue(Requeue(job.id, delay, count_attempt=True, error=err,
                                                attempt=job.attempt))
        log.info("job %s attempt %s failed: %s; retry in %.1f s", job.id, job.attempt,
                 err.error, delay, extra={"event": "retry", "job_id": job.id})
        self._emit("retried", job)

    async def _fail(self, job: Job, exc: BaseException | None, reason: str, *, final: bool,
                    failed_hook: Any = None, exhausted: bool = False) -> None:
        err = attempt_error(job, exc, reason)
        archived = await self.completer.archive(job.id, err, reason, attempt=job.attempt)
        log.warning("job %s (%s) moved to failed_jobs: %s", job.id, job.task, reason,
                    extra={"event": "failed", "job_id": job.id, "task": job.task})
        self._emit("failed", job)
        if archived:
            await self._dead_letter(job, exc if exc is not None else RuntimeError(reason),
                                    failed_hook)

    async def _dead_letter(self, job: Job, exc: BaseException, instance: Any) -> None:
        """Run the queue's dead-letter hook and the job class's ``failed(exc)``; log errors."""
        hooks: list[Callable[[], Any]] = []
        handler = self.app.dead_letter_handlers.get(job.queue)
        if handler is not None:
            hooks.append(lambda: handler(job, exc))
        if instance is not None and callable(getattr(instance, "failed", None)):
            hooks.append(lambda: instance.failed(exc))
        for hook in hooks:
            try:
                if _is_async_callable(hook) or inspect.iscoroutinefunction(hook):
                    await hook()
                else:
                    result = await asyncio.get_running_loop().run_in_executor(self.pool, hook)
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                log.exception("dead-letter hook for job %s raised; ignored", job.id)


def _is_async_callable(fn: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004

