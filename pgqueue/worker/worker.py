"""The worker: a small composition of a fetch loop, an executor, a completer, a listener and a
maintenance loop, with one lifecycle.

Who owns what:

- the **fetch loop** (``_fetch_loop``) owns claiming: it claims as many jobs as there are free
  slots, in one statement, and sleeps until a wake-up (NOTIFY for its queues, a freed slot, the
  next known ``run_at``) or the poll interval, whichever comes first;
- the **executor** owns running a job and deciding its outcome;
- the **completer** owns writing outcomes (batched);
- the **listener** owns the LISTEN connection and turns notifications into wake-ups;
- the **maintenance loop** owns the lease heartbeat, cancel polling, rescue of expired leases of
  dead workers, and history partitions.

Shutdown (``stop()``, SIGTERM/SIGINT under :meth:`Worker.run_forever`): stop claiming, let
running jobs finish for up to ``shutdown_timeout`` seconds, then put the unfinished ones back to
waiting without counting the attempt, flush the completer and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pgqueue._names import validate_name
from pgqueue.drivers.base import Requeue
from pgqueue.errors import DatabaseUnavailableError, PgQueueError, ValidationError
from pgqueue.job import Job
from pgqueue.worker.completer import Completer
from pgqueue.worker.executor import Executor

if TYPE_CHECKING:
    from pgqueue.app import App

log = logging.getLogger("pgqueue.worker")

__all__ = ["Worker"]


class Worker:
    """Runs the jobs of one or more queues.

    Args:
        app: the :class:`pgqueue.App` whose tasks this worker runs.
        queues: the queues to consume (default: every queue of the app's tasks, else
            ``["default"]``).
        concurrency: jobs run at once (default 1).
        poll_interval: seconds between database checks when no wake-up arrives (default 1.0);
            a fallback for lost notifications.
        lease_s: how long a claimed job's lease lasts without a heartbeat (default 30). A job
            whose worker stops heartbeating is rescued after this.
        shutdown_timeout: seconds running jobs get to finish on stop (default 30).
        burst: exit once no job is ready, running or scheduled in the queues.
        listen: use LISTEN/NOTIFY wake-ups (default true; false = polling only, e.g. behind
            PgBouncer in transaction mode).
        summary_interval: seconds between INFO summary lines (default 60).
        on_event: ``(event, job)`` callback for ``started``, ``succeeded``, ``retried``,
            ``failed``, ``cancelled``, ``snoozed`` (runs on the event loop; keep it quick).
    """

    def __init__(self, app: App, queues: Sequence[str] | None = None, *, concurrency: int = 1,
                 poll_interval: float = 1.0, lease_s: float = 30.0,
                 shutdown_timeout: float = 30.0, burst: bool = False, listen: bool = True,
                 completer_batch: int = 200, flush_interval: float = 0.005,
                 rescue_interval: float | None = None, summary_interval: float = 60.0,
                 on_event: Callable[[str, Job], None] | None = None) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        for name, value in (("poll_interval", poll_interval), ("lease_s", lease_s),
                            ("shutdown_timeout", shutdown_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValidationError(f"{name} must be a positive number of seconds, "
                                      f"not {value!r}")
        self.app = app
        if not queues:
            queues = sorted({t.queue for t in app.tasks.values()}) or [app.default_queue]
        self.queues = [validate_name(q, "queue") for q in dict.fromkeys(queues)]
        self.concurrency = concurrency
        self.poll_interval = float(poll_interval)
        self.lease_s = float(lease_s)
        self.shutdown_timeout = float(shutdown_timeout)
        self.burst = burst
        self.listen = listen
        self.rescue_interval = rescue_interval or max(0.5, self.lease_s / 2)
        self.summary_interval = summary_interval
        self.on_event = on_event
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._completer_opts = {"batch_size": completer_batch, "flush_interval": flush_interval}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.processed = 0
        self.counts: dict[str, int] = {}
        self._stop_requested = False
        self.listener: Any = None

    def __repr__(self) -> str:
        return f"<pgqueue.Worker {self.id} queues={self.queues} concurrency={self.concurrency}>"

    # ---- public lifecycle ------------------------------------------------------------------
    async def run(self) -> None:
        """Run until :meth:`stop` (or, in burst mode, until the queues are empty)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        driver = self.app.driver
        await self._retry_db(lambda: driver.register_worker(
            worker_id=self.id, queues=self.queues, concurrency=self.concurrency))
        completer = Completer(driver, worker_id=self.id, **self._completer_opts)  # type: ignore[arg-type]
        executor = Executor(self.app, completer, worker_id=self.id,
                            concurrency=self.concurrency, on_event=self._event)
        listener = driver.listener(self._on_notify) if self.listen else None
        self.listener = listener
        await completer.start()
        if listener is not None:
            await listener.start()
        maintenance = asyncio.create_task(self._maintenance(executor), name="pgqueue-maint")
        log.info("worker %s started: queues=%s concurrency=%d", self.id, ",".join(self.queues),
                 self.concurrency, extra={"event": "worker_started"})
        self.started.set()
        try:
            await self._fetch_loop(executor)
        finally:
            await self._shutdown(executor, completer)
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await maintenance
            if listener is not None:
                await listener.stop()
            with contextlib.suppress(PgQueueError):
                await driver.unregister_worker(worker_id=self.id)
            executor.shutdown()
            log.info("worker %s stopped: %d jobs processed %s", self.id, self.processed,
                     self.counts, extra={"event": "worker_stopped"})
            self.stopped.set()

    def stop(self) -> None:
        """Ask the worker to stop gracefully (thread-safe, idempotent)."""
        self._stop_requested = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    def run_forever(self) -> int:
        """Run in this thread with SIGTERM/SIGINT handling; returns the exit code.

        The first signal stops gracefully; a second one exits at once (exit code 1), leaving
        running jobs to be rescued when their leases expire.
        """
        async def main() -> None:
            loop = asyncio.get_running_loop()
            signals = 0

            def on_signal(signame: str) -> None:
                nonlocal signals
                signals += 1
                if signals == 1:
                    log.info("%s received: stopping gracefully (send again to exit now)",
                             signame, extra={"event": "signal"})
                    self.stop()
                else:
                    log.warning("%s received again: exiting now", signame)
                    os._exit(1)

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal, sig.name)
            try:
                await self.run()
            finally:
                await self.app.aclose()

        asyncio.run(main())
        return 0

    def start_in_thread(self) -> Worker:
        """Run the worker on its own event loop in a daemon thread; returns at once."""
        async def main() -> None:
            try:
                await self.run()
            finally:  # this loop's connections die with it
                await self.app.driver.aclose()

        def target() -> None:
            try:
                asyncio.run(main())
            except Exception:
                log.exception("worker %s crashed", self.id)
                self.stopped.set()

        self._thread = threading.Thread(target=target, name=f"pgqueue-worker-{self.id}",
                                        daemon=True)
        self._thread.start()
        self.started.wait(30)
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a worker started with :meth:`start_in_thread` to stop."""
        return self.stopped.wait(timeout)

    # ---- wake-ups ----------------------------------------------------------------------------
    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _on_notify(self, kind: str, payload: Any) -> None:
        if kind == "job":
            if payload in self.queues:
                self.wake()
        elif kind == "control":
            op = payload.get("op") if isinstance(payload, dict) else None
            if op == "pause" and payload.get("queue") in self.queues:
                self.wake()
            elif op == "cancel" and payload.get("worker") == self.id:
                self._cancel_local(int(payload["id"]))
        elif kind == "reconnected":
            self.wake()

    def _event(self, event: str, job: Job) -> None:
        if event != "started":
            self.processed += 1
            self.counts[event] = self.counts.get(event, 0) + 1
        if self.on_event is not None:
            self.on_event(event, job)

    # ---- fetch loop ----------------------------------------------------------------------------
    async def _fetch_loop(self, executor: Executor) -> None:
        assert self._wake is not None and self._stop is not None
        driver = self.app.driver
        completer = executor.completer
        # outcomes not yet written keep their jobs "running" in the database: claim no more
        # while that backlog is large, so the database never holds far more claimed jobs than
        # the worker runs (and heartbeats stay small)
        max_backlog = 3 * max(self.concurrency, completer.batch_size)
        while not self._stop.is_set():
            if completer.backlog >= max_backlog:
                await completer.drain()
            free = self.concurrency - len(self._running)
            claimed: list[Job] = []
            if free > 0:
                self._wake.clear()
                try:
                    claimed = await driver.claim(self.queues, free, worker_id=self.id,
                                                 lease_s=self.lease_s)
                except PgQueueError as exc:  # unavailable, or a transient conflict
                    log.warning("cannot claim jobs: %s; retrying", exc,
                                extra={"event": "db_unavailable"})
                    await self._sleep(min(self.poll_interval, 2.0))
                    continue
                for job in claimed:
                    t = asyncio.create_task(executor.run(job))
                    self._running[job.id] = t
                    t.add_done_callback(lambda _t, i=job.id: self._done(i))  # type: ignore[misc]
                if len(claimed) == free:
                    await asyncio.sleep(0)  # let jobs start; claim again when a slot frees
                    if self.concurrency - len(self._running) <= 0:
                        await self._wait_wake(None)
                    continue
            else:
                await self._wait_wake(None)
                continue
            # fewer jobs than free slots: sleep until something can change
            timeout = self.poll_interval
            try:
                nxt = await driver.next_run_at(self.queues)
            except PgQueueError:
                nxt = None
            if nxt is not None:
                now = dt.datetime.now(dt.UTC)
                timeout = min(timeout, max(0.0, (nxt - now).total_seconds()))
            elif self.burst and not self._running and not claimed:
                await completer.drain()
                if await driver.next_run_at(self.queues) is None and not self._running:
                    log.info("burst: queues empty, stopping", extra={"event": "burst_done"})
                    return
            if timeout > 0:
                await self._wait_wake(timeout)

    def _done(self, job_id: int) -> None:
        self._running.pop(job_id, None)
        self.wake()

    async def _wait_wake(self, timeout: float | None) -> None:
        assert self._wake is not None and self._stop is not None
        waiters = [asyncio.ensure_future(self._wake.wait()),
                   asyncio.ensure_future(self._stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # ---- cancellation and maintenance ------------------------------------------------------
    def _cancel_local(self, job_id: int) -> None:
        task = self._running.get(job_id)
        executor_ctx = self._executor_ctx(job_id)
        if executor_ctx is not None:
            executor_ctx.cancelled.set()
        if task is not None:
            task.cancel()

    def _executor_ctx(self, job_id: int) -> Any:
        ex = self._executor
        return ex.contexts.get(job_id) if ex is not None else None

    _executor: Executor | None = None

    async def _maintenance(self, executor: Executor) -> None:
        """Heartbeat leases, poll cancel requests, rescue dead workers' jobs, keep partitions."""
        self._executor = executor
        driver = self.app.driver
        # wake often enough for the heartbeat, the rescue schedule and the vacuum check
        heartbeat_every = max(0.1, min(self.lease_s / 3, self.rescue_interval, 2.0))
        last_rescue = 0.0
        last_partitions = 0.0
        last_summary, summarised = time.monotonic(), dict(self.counts)
        while True:
            try:
                if time.monotonic() - last_summary >= self.summary_interval:
                    delta = {k: v - summarised.get(k, 0) for k, v in self.counts.items()
                             if v - summarised.get(k, 0)}
                    log.info("worker %s: last %.0f s %s, running %d", self.id,
                             time.monotonic() - last_summary, delta or "idle",
                             len(self._running), extra={"event": "summary", **delta})
                    last_summary, summarised = time.monotonic(), dict(self.counts)
                held = [*self._running, *executor.completer.held_ids()]
                await driver.heartbeat(worker_id=self.id, lease_s=self.lease_s, job_ids=held)
                for job_id in await driver.cancel_requested(worker_id=self.id):
                    self._cancel_local(job_id)
                now = time.monotonic()
                if now - last_rescue >= self.rescue_interval:
                    last_rescue = now
                    rescued, failed = await driver.rescue_expired()
                    if rescued or failed:
                        log.warning("rescued %d jobs of dead workers (%d archived as poison)",
                                    len(rescued), len(failed), extra={"event": "rescue"})
                    await driver.prune_workers(older_than_s=self.lease_s * 3)
                if await driver.vacuum_if_needed():
                    log.info("vacuumed the jobs table", extra={"event": "vacuum"})
                if now - last_partitions >= 3600:
                    last_partitions = now
                    await driver.ensure_partitions(7)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("maintenance failed: %s", exc, extra={"event": "maintenance_error"})
            await asyncio.sleep(heartbeat_every)

    # ---- shutdown ------------------------------------------------------------------------------
    async def _shutdown(self, executor: Executor, completer: Completer) -> None:
        if self._running:
            log.info("waiting up to %.0f s for %d running jobs", self.shutdown_timeout,
                     len(self._running), extra={"event": "shutdown_wait"})
            _, pending = await asyncio.wait(list(self._running.values()),
                                            timeout=self.shutdown_timeout)
            leftover = [jid for jid, t in self._running.items() if t in pending]
            if leftover:
                log.warning("putting %d unfinished jobs back to waiting", len(leftover),
                            extra={"event": "shutdown_release"})
                executor.released.update(leftover)
                for jid in leftover:
                    ctx = executor.contexts.get(jid)
                    if ctx is not None:
                        ctx.cancelled.set()
                    self._running[jid].cancel()
                await asyncio.wait(list(self._running.values()), timeout=1.0)
                for jid in leftover:
                    await completer.requeue(Requeue(jid, 0.0, count_attempt=False))
        await completer.stop()

    async def _retry_db(self, fn: Callable[[], Any]) -> None:
        delay = 0.1
        while True:
            try:
                await fn()
                return
            except DatabaseUnavailableError as exc:
                if self._stop is not None and self._stop.is_set():
                    raise
                log.warning("database unavailable: %s; retrying in %.1f s", exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
