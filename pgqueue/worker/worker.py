"""The worker: a small composition of services with one lifecycle.

Who owns what (each is a service with ``start``/``stop``, see :mod:`pgqueue._service`):

- the **producer** (:mod:`._producer`) owns claiming, wake-ups and backpressure;
- the **executor** (:mod:`._executor`) owns running a job and deciding its outcome;
- the **completer** (:mod:`._completer`) owns writing outcomes (batched);
- the **listener** (the driver's) owns the LISTEN connection and turns notifications into
  wake-ups;
- the **maintenance duties** (:mod:`.maintenance`, one service each) own the lease heartbeat,
  cancel polling, rescue, the worker registry, vacuum, partitions and the summary line.

The worker itself owns only the lifecycle: it registers, starts the services, runs until
``stop()`` (or, in burst mode, until the producer finds nothing left), then shuts down in
reverse order. Shutdown (``stop()``, SIGTERM/SIGINT under :meth:`Worker.run_forever`): stop
claiming, let running jobs finish for up to ``shutdown_timeout`` seconds, then put the
unfinished ones back to waiting without counting the attempt, flush the completer and exit.

The worker never imports :mod:`pgqueue.app`: it takes a :class:`~._registry.TaskRegistry`
(which :class:`pgqueue.App` is) for the tasks, the dead-letter hooks and the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, wait_exponential, wait_random

from pgqueue._defaults import (
    DEFAULT_CONCURRENCY,
    DEFAULT_EVENT_LOOP,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_UNKNOWN_TASK_GRACE,
    EVENT_LOOPS,
)
from pgqueue._names import validate_name
from pgqueue._service import Clock, PeriodicService, Service
from pgqueue.drivers.base import Listener, Requeue
from pgqueue.errors import (
    CapabilityError,
    ConfigurationError,
    DatabaseUnavailableError,
    PgQueueError,
    ValidationError,
)
from pgqueue.job import Job
from pgqueue.worker._completer import Completer
from pgqueue.worker._executor import Executor
from pgqueue.worker._metrics import (
    DEFAULT_METRICS_HOST,
    MetricsService,
    WorkerMetrics,
    WorkerState,
    check_port,
    require_prometheus,
)
from pgqueue.worker._producer import Producer
from pgqueue.worker._registry import TaskRegistry
from pgqueue.worker.maintenance import DutyInputs, default_duties
from pgqueue.worker.maintenance.retention import DEFAULT_HISTORY_RETENTION
from pgqueue.worker.maintenance.summary import describe_counts

log = logging.getLogger("pgqueue.worker")

__all__ = ["Worker"]

#: how long :meth:`Worker.start_in_thread` waits for the worker to report that it started
STARTUP_TIMEOUT = 30.0


def loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``event_loop`` (None: asyncio's own loop). ``"uvloop"``
    needs uvloop installed (``pip install 'pgqueue-tx[uvloop]'``); ``"auto"`` takes it when it
    is installed and asyncio's loop otherwise."""
    if event_loop not in EVENT_LOOPS:
        raise ConfigurationError(f"must be one of {', '.join(EVENT_LOOPS)}, not {event_loop!r}",
                                 key="event_loop")
    if event_loop == "asyncio":
        return None
    try:  # optional: never a dependency of pgqueue itself
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if event_loop == "auto":
            return None
        raise ConfigurationError("uvloop is not installed: pip install 'pgqueue-tx[uvloop]', "
                                 "or use event_loop='asyncio' (or 'auto')",
                                 key="event_loop") from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


class Worker:
    """Runs the jobs of one or more queues.

    Args:
        app: the :class:`pgqueue.App` whose tasks this worker runs (any
            :class:`~pgqueue.worker._registry.TaskRegistry`: tasks, dead-letter hooks, driver).
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
        completer_batch: outcomes written per statement (default 200).
        flush_interval: seconds the completer lets a batch build up (default 0.005).
        rescue_interval: seconds between rescues of expired leases (default ``lease_s / 2``,
            at least 0.5).
        summary_interval: seconds between INFO summary lines (default 60).
        on_event: ``(event, job)`` callback for ``started``, ``succeeded``, ``retried``,
            ``failed``, ``cancelled``, ``snoozed``, ``awaiting``, ``deferred`` (a job of an
            unknown task put back) (runs on the event loop; keep it quick).
        unknown_task_grace: seconds after its enqueue during which a job of a task this worker
            does not know is put back (attempt not counted, a warning logged) instead of
            archived: during a rolling deploy, a newer worker that knows it runs it (default
            300; 0 archives at once).
        clock: the services' clock (default: the system clock; tests inject a
            :class:`pgqueue._service.ManualClock`).
        duties: build the maintenance duties from a :class:`~.maintenance.DutyInputs`
            (default :func:`~.maintenance.default_duties`; a test can add or replace one).
        periodic: fire the app's periodic jobs (default true; every worker may, the database
            makes each tick fire once). False (``pgqueue worker --no-periodic``) opts this
            worker out.
        leader_lease_s: the cluster leader's lease period (default ``lease_s``): when the
            leader dies, another worker takes over within this many seconds.
        history_retention: finished jobs older than this (seconds or timedelta; default 14
            days) are dropped by the leader, a whole daily partition at a time; None keeps them.
        failed_retention: failed (archived) jobs older than this are deleted by the leader
            (default None: kept until purged).
        metrics_port: serve Prometheus ``/metrics`` and the ``/livez``/``/readyz`` probes on
            this port (default None: no endpoint; the endpoint is :attr:`metrics_service`).
            Needs ``pip install 'pgqueue-tx[metrics]'``; see
            :mod:`pgqueue.worker._metrics` and docs/observability.md.
        metrics_host: the address the endpoint binds (default ``127.0.0.1``: this host only;
            ``0.0.0.0`` opens it to the network).
        queue_metrics: also serve the queue-level gauges (one database query per scrape,
            cached); default false, as the ``pgqueue metrics`` exporter serves them once for
            the cluster.
        event_loop: the event loop :meth:`run_forever` and :meth:`start_in_thread` run the
            worker on: ``"asyncio"`` (default), ``"uvloop"`` (``pip install
            'pgqueue-tx[uvloop]'``: less CPU per job, see docs/performance.md) or ``"auto"``
            (uvloop when installed). :meth:`run` runs on the caller's loop, whatever it is.

    Example::

        worker = app.worker(["emails"], concurrency=10)
        worker.run_forever()          # until SIGTERM/SIGINT
    """

    def __init__(self, app: TaskRegistry, queues: Sequence[str] | None = None, *,
                 concurrency: int = DEFAULT_CONCURRENCY,
                 poll_interval: float = DEFAULT_POLL_INTERVAL, lease_s: float = 30.0,
                 shutdown_timeout: float = 30.0, burst: bool = False, listen: bool = True,
                 completer_batch: int = 200, flush_interval: float = 0.005,
                 rescue_interval: float | None = None, summary_interval: float = 60.0,
                 on_event: Callable[[str, Job], None] | None = None,
                 unknown_task_grace: float = DEFAULT_UNKNOWN_TASK_GRACE,
                 clock: Clock | None = None,
                 duties: Callable[[DutyInputs], list[PeriodicService]] = default_duties,
                 periodic: bool = True, leader_lease_s: float | None = None,
                 history_retention: float | dt.timedelta | None = DEFAULT_HISTORY_RETENTION,
                 failed_retention: float | dt.timedelta | None = None,
                 metrics_port: int | None = None, metrics_host: str = DEFAULT_METRICS_HOST,
                 queue_metrics: bool = False, event_loop: str = DEFAULT_EVENT_LOOP,
                 ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        for name, value in (("poll_interval", poll_interval), ("lease_s", lease_s),
                            ("shutdown_timeout", shutdown_timeout),
                            ("summary_interval", summary_interval)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValidationError(f"{name} must be a positive number of seconds, "
                                      f"not {value!r}")
        if leader_lease_s is not None:
            _check_seconds("leader_lease_s", leader_lease_s)
        self._loop_factory = loop_factory(event_loop)  # a bad choice stops us here
        self.event_loop = event_loop
        self.history_retention_s = _retention("history_retention", history_retention)
        self.failed_retention_s = _retention("failed_retention", failed_retention)
        self.periodic = bool(periodic)
        self.leader_lease_s = leader_lease_s
        self.metrics_port = None if metrics_port is None else check_port(metrics_port)
        self.metrics_host = metrics_host
        self.queue_metrics = bool(queue_metrics)
        #: the worker's instruments and endpoint (when ``metrics_port`` is set and it runs)
        self.metrics: WorkerMetrics | None = None
        self.metrics_service: MetricsService | None = None
        if self.metrics_port is not None:
            require_prometheus()  # say which extra is missing before anything starts
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
        if (isinstance(unknown_task_grace, bool)
                or not isinstance(unknown_task_grace, int | float) or unknown_task_grace < 0):
            raise ValidationError("unknown_task_grace must be a number of seconds >= 0, not "
                                  f"{unknown_task_grace!r}")
        self.unknown_task_grace = float(unknown_task_grace)
        self.rescue_interval = rescue_interval or max(0.5, self.lease_s / 2)
        self.summary_interval = float(summary_interval)
        self._executor: Executor | None = None
        self.on_event = on_event
        self.clock = clock
        self._duties_factory = duties
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._completer_opts = {"batch_size": completer_batch, "flush_interval": flush_interval}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        self._retry_startup = True
        #: set once the worker runs (all services started) / once it has stopped
        self.started = threading.Event()
        self.stopped = threading.Event()
        #: why the worker ended, if it ended on an error (see :meth:`start_in_thread`)
        self.error: BaseException | None = None
        self.processed = 0
        self.counts: dict[str, int] = {}
        # the running composition (None outside run()); the worker's task owns these
        self.producer: Producer | None = None
        self.listener: Listener | None = None
        self.duties: list[PeriodicService] = []
        self._completer: Completer | None = None

    def __repr__(self) -> str:
        return f"<pgqueue.Worker {self.id} queues={self.queues} concurrency={self.concurrency}>"

    # ---- public lifecycle ------------------------------------------------------------------
    async def run(self) -> None:
        """Run until :meth:`stop` (or, in burst mode, until the queues are empty)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        driver = self.app.driver
        schedules = self.app.schedules if self.periodic else {}
        try:
            if self.metrics_port is not None:  # bind first: a port in use stops us here
                await self._start_metrics()
            if schedules and not driver.capabilities.periodic:
                raise CapabilityError(
                    f"the {driver.name} driver has no periodic jobs, and this app declares "
                    f"{len(schedules)}; use the postgres driver, or run the worker with "
                    "periodic=False (--no-periodic)")
            await self._register()
            # the queue limits the app declares (App.queue), written before the first claim
            apply_limits = getattr(self.app, "apply_queue_limits_async", None)
            if apply_limits is not None:
                await apply_limits()
        except BaseException:
            if self.metrics_service is not None:
                await self.metrics_service.stop()
            self.stopped.set()
            raise
        completer = Completer(driver, worker_id=self.id, clock=self.clock,
                              **self._completer_opts)  # type: ignore[arg-type]
        executor = Executor(self.app, completer, worker_id=self.id,
                            unknown_task_grace=self.unknown_task_grace,
                            concurrency=self.concurrency, on_event=self._event,
                            max_delay_s=driver.capabilities.max_delay_s)
        self._executor = executor
        self._started_events()
        producer = Producer(driver, executor, completer, worker_id=self.id,
                            queues=self.queues, concurrency=self.concurrency,
                            poll_interval=self.poll_interval, lease_s=self.lease_s,
                            burst=self.burst, clock=self.clock)
        self.producer = producer
        self._completer = completer
        self.listener = driver.listener(self._on_notify) if self.listen else None
        self.duties = self._duties_factory(DutyInputs(
            driver=driver, worker_id=self.id, lease_s=self.lease_s,
            rescue_interval=self.rescue_interval, summary_interval=self.summary_interval,
            held=producer.held_ids, cancel=producer.cancel_local, counts=lambda: self.counts,
            running=lambda: len(producer.running), clock=self.clock,
            schedules=schedules, periodic=self.periodic, leader_lease_s=self.leader_lease_s,
            history_retention_s=self.history_retention_s,
            failed_retention_s=self.failed_retention_s))
        services: list[Service | Listener] = [
            completer, *([self.listener] if self.listener else []), *self.duties]
        started: list[Service | Listener] = []
        try:
            for service in services:
                await service.start()
                started.append(service)
            await producer.start()
            log.info("worker %s started: queues=%s concurrency=%d", self.id,
                     ",".join(self.queues), self.concurrency, extra={"event": "worker_started"})
            self.started.set()
            await self._until_stopped(producer)
        finally:
            await self._shutdown(producer, executor, completer)
            for service in reversed(started):
                if service is not completer:
                    with contextlib.suppress(Exception):
                        await service.stop()
            with contextlib.suppress(PgQueueError):
                await driver.unregister_worker(worker_id=self.id)
            executor.shutdown()
            if self.metrics_service is not None:
                with contextlib.suppress(Exception):
                    await self.metrics_service.stop()
            log.info("worker %s stopped: %s", self.id, describe_counts(self.counts),
                     extra={"event": "worker_stopped", "worker": self.id, **self.counts})
            self.stopped.set()

    async def _start_metrics(self) -> None:
        """Build the instruments and start the endpoint (see :mod:`._metrics`)."""
        def listener_connected() -> bool | None:
            event = getattr(self.listener, "connected", None) if self.listen else None
            return event.is_set() if isinstance(event, asyncio.Event) else None

        state = WorkerState(
            busy=lambda: len(self.producer.running) if self.producer is not None else 0,
            concurrency=self.concurrency,
            completer_backlog=lambda: self._completer.backlog if self._completer else 0,
            listener_connected=listener_connected,
            last_claim=lambda: self.producer.last_claim if self.producer else None,
            stopping=lambda: self._stop_requested)
        self.metrics = WorkerMetrics(state)
        assert self.metrics_port is not None
        self.metrics_service = MetricsService(
            self.metrics, state, port=self.metrics_port, host=self.metrics_host,
            queue_metrics=self.queue_metrics, stats=self.app.driver.stats,
            ping=self.app.driver.check)
        await self.metrics_service.start()

    async def _register(self) -> None:
        """Register this worker, retrying while the database is unavailable (until stopped;
        not at all when started by :meth:`start_in_thread`, whose caller wants to know)."""
        assert self._stop is not None
        stop, retry = self._stop, self._retry_startup
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, DatabaseUnavailableError)
                                     and retry and not stop.is_set()),
            wait=wait_exponential(multiplier=0.1, max=5.0) + wait_random(0, 0.05),
            before_sleep=lambda rs: log.warning(
                "database unavailable: %s; retrying in %.1f s",
                rs.outcome.exception() if rs.outcome else None, rs.upcoming_sleep),
            reraise=True,
        ):
            with attempt:
                await self.app.driver.register_worker(
                    worker_id=self.id, queues=self.queues, concurrency=self.concurrency)

    async def _until_stopped(self, producer: Producer) -> None:
        """Wait for a stop request or for the producer to end by itself (burst mode)."""
        assert self._stop is not None
        stop = asyncio.ensure_future(self._stop.wait())
        done = asyncio.ensure_future(producer.wait())
        try:
            await asyncio.wait((stop, done), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if done.done() and not done.cancelled() and done.exception() is not None:
                raise done.exception()  # type: ignore[misc]
            done.cancel()
        await producer.stop()

    def stop(self) -> None:
        """Ask the worker to stop gracefully (thread-safe, idempotent)."""
        self._stop_requested = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
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
                await self.app.driver.aclose()
                self.app.driver.close()

        with asyncio.Runner(loop_factory=self._loop_factory) as runner:
            runner.run(main())
        return 0

    def start_in_thread(self) -> Worker:
        """Run the worker on its own event loop in a daemon thread; return once it runs.

        If the worker cannot start -- the database (or Redis) is unreachable, a configuration
        error -- that error is raised here at once, and nothing is left running. Once started,
        an outage is ridden out (the worker retries). A worker that later ends on an error
        keeps it in :attr:`error` and logs it.
        """
        self._retry_startup = False
        async def main() -> None:
            try:
                await self.run()
            finally:  # this loop's connections die with it
                await self.app.driver.aclose()

        def target() -> None:
            try:
                with asyncio.Runner(loop_factory=self._loop_factory) as runner:
                    runner.run(main())
            except BaseException as exc:
                self.error = exc
                if self.started.is_set():
                    log.exception("worker %s crashed", self.id)
            finally:
                self.stopped.set()

        self._thread = threading.Thread(target=target, name=f"pgqueue-worker-{self.id}",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.started.wait(0.01):
            if self.stopped.is_set():  # ended before it started: say why
                if isinstance(self.error, Exception):
                    raise self.error
                raise PgQueueError(f"worker {self.id} stopped while starting")
            if time.monotonic() > deadline:
                log.warning("worker %s has not started after %.0f s (database down?); it "
                            "keeps trying in the background", self.id, STARTUP_TIMEOUT)
                break
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a worker started with :meth:`start_in_thread` to stop."""
        return self.stopped.wait(timeout)

    # ---- wake-ups ----------------------------------------------------------------------------
    def wake(self) -> None:
        """Make the producer claim again at once (thread-unsafe: call on the worker's loop)."""
        if self.producer is not None:
            self.producer.wake()

    def _on_notify(self, kind: str, payload: Any) -> None:
        if self.producer is not None:
            self.producer.on_notify(kind, payload)

    @property
    def on_event(self) -> Callable[[str, Job], None] | None:
        """The ``(event, job)`` callback (see the class docstring); may be replaced while the
        worker runs."""
        return self._on_event

    @on_event.setter
    def on_event(self, callback: Callable[[str, Job], None] | None) -> None:
        self._on_event = callback
        self._started_events()

    def _started_events(self) -> None:
        """Tell the executor whether anything listens to ``started`` events (the metrics or
        ``on_event``): when nothing does, it does not call :meth:`_event` for them."""
        if self._executor is not None:
            self._executor.started_events = (self.metrics is not None
                                             or self._on_event is not None)

    def _event(self, event: str, job: Job) -> None:
        if self.metrics is not None:
            self.metrics.on_event(event, job)
        if event != "started":
            self.processed += 1
            self.counts[event] = self.counts.get(event, 0) + 1
        if self._on_event is not None:
            self._on_event(event, job)

    # ---- shutdown ------------------------------------------------------------------------------
    async def _shutdown(self, producer: Producer, executor: Executor,
                        completer: Completer) -> None:
        """Let running jobs finish (up to ``shutdown_timeout``), release the rest without
        counting the attempt, then flush and stop the completer."""
        await producer.stop()
        running = producer.running
        if running:
            log.info("waiting up to %.0f s for %d running jobs", self.shutdown_timeout,
                     len(running), extra={"event": "shutdown_wait"})
            _, pending = await asyncio.wait(list(running.values()),
                                            timeout=self.shutdown_timeout)
            leftover = [jid for jid, t in running.items() if t in pending]
            if leftover:
                log.warning("putting %d unfinished jobs back to waiting", len(leftover),
                            extra={"event": "shutdown_release"})
                executor.released.update(leftover)
                for jid in leftover:
                    producer.cancel_local(jid)
                if running:
                    await asyncio.wait(list(running.values()), timeout=1.0)
                for jid in leftover:
                    await completer.requeue(Requeue(jid, 0.0, count_attempt=False))
        await completer.stop()


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValidationError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _retention(name: str, value: float | dt.timedelta | None) -> float | None:
    """A retention setting in seconds (None: keep for ever)."""
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    return _check_seconds(name, value)
