"""Prometheus metrics and health probes over HTTP: the worker's ``--metrics-port``.

Three parts, each usable alone:

- :class:`WorkerMetrics` -- the worker's own instruments, fed by its events (``started``,
  ``succeeded``, ``retried``, ``failed``, ``cancelled``, ``snoozed``) and by gauges read at
  scrape time (busy/free slots, completer backlog, listener connected, last claim);
- :class:`QueueMetrics` -- queue-level gauges from the database: ONE query (the
  ``queue_stats`` view) per scrape, cached for ``ttl`` seconds, so frequent scrapes do not
  each query. The standalone ``pgqueue metrics`` exporter serves these; a worker only with
  ``--queue-metrics`` (50 workers should not run 50 copies of the query);
- :class:`HttpEndpoint` -- a small HTTP server on its own thread serving ``/metrics``,
  ``/livez`` and ``/readyz`` (JSON bodies; 200 when fine, 503 when not).

:class:`MetricsService` composes them into a worker :class:`~pgqueue._service.Service`: it binds
the port when it starts (a port in use is a :class:`~pgqueue.errors.ConfigurationError` before
the worker registers), and its task beats every ``beat_interval`` seconds on the worker's event
loop: ``/livez`` answers 503 once the last beat is older than ``live_bound`` seconds (a blocked
event loop: a sync handler run on the loop, a CPU-bound coroutine).

Label cardinality is bounded: the labels are queue and task names (and the outcome, a fixed
set), never job ids or arguments. ``prometheus_client`` is imported only when metrics are asked
for; without it :func:`require_prometheus` says which extra to install.

Example::

    worker = app.worker(["emails"], concurrency=10, metrics_port=9464)
    worker.run_forever()          # curl http://127.0.0.1:9464/metrics
"""

from __future__ import annotations

import asyncio
import bisect
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pgqueue._service import Clock, Service
from pgqueue.backend import QueueStats
from pgqueue.errors import ConfigurationError, PgQueueError, ValidationError
from pgqueue.job import Job

__all__ = ["DEFAULT_METRICS_HOST", "DURATION_BUCKETS", "OUTCOMES", "HttpEndpoint",
           "MetricsService", "QueueMetrics", "WorkerMetrics", "WorkerState", "check_port",
           "require_prometheus"]

#: where ``--metrics-port`` listens unless ``--metrics-host`` says otherwise (this host only)
DEFAULT_METRICS_HOST = "127.0.0.1"
#: the outcomes counted by ``pgqueue_jobs_total`` (the worker's events other than ``started``)
OUTCOMES = ("succeeded", "retried", "failed", "cancelled", "snoozed")
#: histogram buckets (seconds) of run time, pickup latency and end-to-end time: 5 ms to 1 h
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0, 600.0, 1800.0, 3600.0)
_bucket = bisect.bisect_left
_monotonic = time.monotonic
#: outcomes after which a job is done for good (end-to-end time is observed then)
_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_OUTCOME_SET = frozenset(OUTCOMES)


def require_prometheus() -> Any:
    """The ``prometheus_client`` module, or a :class:`ConfigurationError` naming the extra."""
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigurationError(
            "metrics need the prometheus-client package: pip install 'pgqueue-tx[metrics]'"
        ) from exc
    return prometheus_client


def check_port(port: object, *, flag: str = "--metrics-port") -> int:
    """``port`` as an int if it is a TCP port (1-65535), else a :class:`ValidationError`."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValidationError(f"{flag} must be a TCP port between 1 and 65535, not {port!r}")
    return port


@dataclass(frozen=True)
class WorkerState:
    """What the worker's gauges read at scrape time (each a cheap callable, called from the
    HTTP thread: they only read attributes)."""

    busy: Callable[[], int]
    concurrency: int
    completer_backlog: Callable[[], int]
    listener_connected: Callable[[], bool | None]
    last_claim: Callable[[], float | None]
    stopping: Callable[[], bool]


class WorkerMetrics:
    """The instruments of one worker, in a registry of their own (``registry``).

    - ``pgqueue_jobs_total{queue,task,outcome}`` (counter): attempts ended by outcome;
    - ``pgqueue_job_run_seconds{queue,task}`` (histogram): an attempt's run time;
    - ``pgqueue_job_pickup_latency_seconds{queue,task}`` (histogram): start minus due time;
    - ``pgqueue_job_end_to_end_seconds{queue,task}`` (histogram): final outcome minus enqueue;
    - gauges ``pgqueue_worker_busy_slots``, ``pgqueue_worker_free_slots``,
      ``pgqueue_worker_completer_backlog``, ``pgqueue_worker_listener_connected`` and
      ``pgqueue_worker_last_claim_timestamp_seconds`` (from ``state`` at scrape time).

    ``on_event(event, job)`` is the worker's event hook (called on its event loop). It only
    adds to plain counters (a few microseconds a job); the metric families are built when
    scraped, from a snapshot.
    """

    def __init__(self, state: WorkerState | None = None, *,
                 now: Callable[[], float] = time.time) -> None:
        prom = require_prometheus()
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        self._now = now  # Unix time
        self._series: dict[tuple[str, str], _Series] = {}
        #: running attempts: job id -> (its series, monotonic start)
        self._starts: dict[int, tuple[_Series, float]] = {}
        self.registry.register(self)
        if state is not None:
            self.registry.register(_StateCollector(prom, state))

    def on_event(self, event: str, job: Job) -> None:
        """Count/observe one worker event for ``job`` (unknown events are ignored).

        The (queue, task) series is looked up once per attempt, at ``started``, and kept with
        the start time until the outcome (about 1 us a job for both events on a 2-core box)."""
        if event == "started":
            key = (job.queue, job.task)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series()
            self._starts[job.id] = (series, _monotonic())
            if job.run_at is not None:
                series.pickup.observe(self._now() - job.run_at.timestamp())
            return
        if event not in _OUTCOME_SET:
            return
        running = self._starts.pop(job.id, None)
        if running is None:  # an outcome without a start (a job that never ran: unknown task)
            key = (job.queue, job.task)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series()
        else:
            series = running[0]
            series.run_time.observe(_monotonic() - running[1])
        series.outcomes[event] += 1
        if event in _TERMINAL and job.created_at is not None:
            series.end_to_end.observe(self._now() - job.created_at.timestamp())

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        """The counter and histogram families, from a snapshot of the counts."""
        core = self._prom.metrics_core
        jobs = core.CounterMetricFamily("pgqueue_jobs", "Job attempts ended, by outcome",
                                        labels=("queue", "task", "outcome"))
        hists = {name: core.HistogramMetricFamily(f"pgqueue_job_{name}_seconds", doc,
                                                  labels=("queue", "task"))
                 for name, doc in (("run", "Run time of one attempt"),
                                   ("pickup_latency",
                                    "Start of an attempt minus the time it was due"),
                                   ("end_to_end", "Final outcome minus enqueue time"))}
        for (queue, task), series in list(self._series.items()):
            for outcome, n in list(series.outcomes.items()):
                if n:
                    jobs.add_metric((queue, task, outcome), n)
            for name, hist in (("run", series.run_time), ("pickup_latency", series.pickup),
                               ("end_to_end", series.end_to_end)):
                counts, total = list(hist.counts), hist.sum
                if not sum(counts):
                    continue
                cumulative, buckets = 0, []
                for bound, n in zip((*DURATION_BUCKETS, float("inf")), counts, strict=True):
                    cumulative += n
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound),
                                    cumulative))
                hists[name].add_metric((queue, task), buckets, total)
        yield jobs
        yield from hists.values()


class _Histogram:
    """Bucket counts (:data:`DURATION_BUCKETS`, then +Inf) and the sum of observations."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        if value < 0.0:  # clock skew: count as 0 (no max(): this runs three times a job)
            value = 0.0
        self.counts[_bucket(DURATION_BUCKETS, value)] += 1
        self.sum += value


class _Series:
    """The counts of one (queue, task)."""

    __slots__ = ("end_to_end", "outcomes", "pickup", "run_time")

    def __init__(self) -> None:
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.run_time = _Histogram()
        self.pickup = _Histogram()
        self.end_to_end = _Histogram()


class _StateCollector:
    """The worker's gauges, read from :class:`WorkerState` when scraped."""

    def __init__(self, prom: Any, state: WorkerState) -> None:
        self._gauge = prom.metrics_core.GaugeMetricFamily
        self.state = state

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        g, s = self._gauge, self.state
        busy = s.busy()
        yield g("pgqueue_worker_busy_slots", "Jobs running on this worker", value=busy)
        yield g("pgqueue_worker_free_slots", "Free slots of this worker",
                value=max(0, s.concurrency - busy))
        yield g("pgqueue_worker_completer_backlog", "Outcomes not yet written to the database",
                value=s.completer_backlog())
        connected = s.listener_connected()
        if connected is not None:
            yield g("pgqueue_worker_listener_connected",
                    "1 when the LISTEN connection is up (absent when polling only)",
                    value=1 if connected else 0)
        last = s.last_claim()
        if last is not None:
            yield g("pgqueue_worker_last_claim_timestamp_seconds",
                    "Unix time of the last claim query that succeeded", value=last)


class QueueMetrics:
    """Queue-level gauges from ONE ``stats()`` call per scrape, cached for ``ttl`` seconds
    (default 5): ``pgqueue_queue_jobs{queue,state}`` (waiting, scheduled, running, failed),
    ``pgqueue_queue_oldest_waiting_age_seconds{queue}`` and ``pgqueue_queue_paused{queue}``.

    ``stats`` is a sync callable such as :meth:`pgqueue.App.stats`. ``queries`` counts the
    calls made (a test checks the cache). A failing query raises at scrape time (the scrape
    fails, which Prometheus records as ``up == 0`` for an exporter).
    """

    def __init__(self, stats: Callable[[], Sequence[QueueStats]], *, ttl: float = 5.0) -> None:
        self._prom = require_prometheus()
        self._stats = stats
        self.ttl = float(ttl)
        self.queries = 0
        self._lock = threading.Lock()
        self._cached: tuple[float, Sequence[QueueStats]] | None = None

    def describe(self) -> list[Any]:
        return []

    def current(self) -> Sequence[QueueStats]:
        """The stats, from the cache when younger than ``ttl``."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.ttl:
                self.queries += 1
                self._cached = (now, list(self._stats()))
            return self._cached[1]

    def collect(self) -> Iterator[Any]:
        g = self._prom.metrics_core.GaugeMetricFamily
        stats = self.current()
        jobs = g("pgqueue_queue_jobs", "Jobs of a queue by state (from the database)",
                 labels=("queue", "state"))
        oldest = g("pgqueue_queue_oldest_waiting_age_seconds",
                   "Age of the oldest job ready to run (0 when none waits)", labels=("queue",))
        paused = g("pgqueue_queue_paused", "1 when the queue is paused", labels=("queue",))
        for s in stats:
            for state in ("waiting", "scheduled", "running", "failed"):
                jobs.add_metric((s.queue, state), getattr(s, state))
            oldest.add_metric((s.queue,), s.oldest_wait_s or 0.0)
            paused.add_metric((s.queue,), 1 if s.paused else 0)
        yield jobs
        yield oldest
        yield paused


Probe = Callable[[], tuple[bool, dict[str, Any]]]


class HttpEndpoint:
    """``/metrics`` (``registry`` in the text format), ``/livez`` and ``/readyz`` (``live`` and
    ``ready`` probes: ``(ok, details)``; 200 or 503 with ``{"status": "ok"|"fail", ...}``),
    served by a :class:`ThreadingHTTPServer` on a daemon thread.

    :meth:`start` binds ``host:port`` (port 0: any free port, see :attr:`port`) or raises a
    :class:`ConfigurationError` saying why it cannot.
    """

    def __init__(self, registry: Any, *, host: str = DEFAULT_METRICS_HOST, port: int,
                 live: Probe | None = None, ready: Probe | None = None) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.live = live or (lambda: (True, {}))
        self.ready = ready or (lambda: (True, {}))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None  # stop() -> _serve()

    def start(self) -> None:
        """Bind and serve on a daemon thread; returns once bound."""
        prom = require_prometheus()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = prom.generate_latest(endpoint.registry)
                    self._reply(200, body, prom.CONTENT_TYPE_LATEST)
                elif path in ("/livez", "/readyz"):
                    probe = endpoint.live if path == "/livez" else endpoint.ready
                    try:
                        ok, details = probe()
                    except Exception as exc:  # a probe that raises is a failed probe
                        ok, details = False, {"error": str(exc)}
                    payload = {"status": "ok" if ok else "fail", **details}
                    self._reply(200 if ok else 503, json.dumps(payload).encode(),
                                "application/json")
                else:
                    self._reply(404, b'{"error": "not found: try /metrics, /livez, /readyz"}',
                                "application/json")

            def _reply(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes are not worth a log line

        try:
            server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OverflowError as exc:
            raise ValidationError(f"port {self.port} is out of range (1-65535)") from exc
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}; "
                "choose another port (--metrics-port) or stop what uses it") from exc
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, args=(server, self._wake[0]),
                                        daemon=True, name=f"pgqueue-metrics-{self.port}")
        self._thread.start()

    @staticmethod
    def _serve(server: ThreadingHTTPServer, wake: socket.socket) -> None:
        """Serve until :meth:`stop` writes to ``wake``. (``serve_forever`` polls for its
        shutdown every 0.5 s: each stop of a worker waited for that poll, up to half a
        second added to every burst run with metrics on.)"""
        with selectors.DefaultSelector() as selector:
            selector.register(server, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while True:
                events = selector.select()
                if any(key.fileobj is wake for key, _ in events):
                    return
                server.handle_request()  # a connection is waiting: accepted at once

    def stop(self) -> None:
        """Stop serving and release the port at once (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            wake, self._wake = self._wake, None
            if wake is not None:
                wake[1].send(b"\0")
            if self._thread is not None:
                self._thread.join()
            server.server_close()
            if wake is not None:
                wake[0].close()
                wake[1].close()

    def wait(self) -> None:
        """Block until interrupted (the standalone exporter, after :meth:`start`), then stop."""
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(1.0)
        finally:
            self.stop()


class MetricsService(Service):
    """The worker's metrics and health endpoint as a service (see the module docstring).

    Args:
        metrics: the worker's instruments (their registry is served).
        state: what readiness reads (stopping, listener connected).
        port/host: where to listen (host default 127.0.0.1).
        queue_metrics: also serve :class:`QueueMetrics` from ``stats`` (``--queue-metrics``).
        ping: a sync database check for ``/readyz`` (e.g. the driver's ``check``); its result
            is cached for ``ping_ttl`` seconds (default 1).
        live_bound: ``/livez`` fails once the event loop has not beaten for this long
            (default 10 s).
    """

    name = "metrics"

    def __init__(self, metrics: WorkerMetrics, state: WorkerState, *, port: int,
                 host: str = DEFAULT_METRICS_HOST, queue_metrics: bool = False,
                 stats: Callable[[], Sequence[QueueStats]] | None = None,
                 ping: Callable[[], None] | None = None, ping_ttl: float = 1.0,
                 live_bound: float = 10.0, beat_interval: float = 0.5,
                 clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        self.metrics = metrics
        self.state = state
        self.live_bound = live_bound
        self.beat_interval = beat_interval
        self._ping = ping
        self._ping_ttl = ping_ttl
        self._ping_cache: tuple[float, str | None] | None = None
        self._ping_lock = threading.Lock()
        self._beat = time.monotonic()
        self.queue_metrics: QueueMetrics | None = None
        if queue_metrics and stats is not None:
            self.queue_metrics = QueueMetrics(stats)
            metrics.registry.register(self.queue_metrics)
        self.endpoint = HttpEndpoint(metrics.registry, host=host, port=port,
                                     live=self.livez, ready=self.readyz)

    async def start(self) -> None:
        """Bind the port (raising if it cannot), then start beating."""
        if self._task is None:
            self._beat = time.monotonic()
            await asyncio.to_thread(self.endpoint.start)
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        await asyncio.to_thread(self.endpoint.stop)

    async def run(self) -> None:
        while not self.stopping:
            self._beat = time.monotonic()
            await self.sleep(self.beat_interval)

    def livez(self) -> tuple[bool, dict[str, Any]]:
        """Live while the event loop has beaten within ``live_bound`` seconds."""
        age = time.monotonic() - self._beat
        return age <= self.live_bound, {"loop_lag_s": round(age, 3),
                                         "bound_s": self.live_bound}

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the database answers, the listener is connected (or the worker polls
        only) and the worker is not shutting down."""
        details: dict[str, Any] = {}
        error = self._database_error()
        details["database"] = "ok" if error is None else "unreachable"
        if error is not None:
            details["error"] = error
        connected = self.state.listener_connected()
        details["listener"] = ("polling" if connected is None else
                               "connected" if connected else "disconnected")
        stopping = self.state.stopping()
        details["shutting_down"] = stopping
        ok = error is None and connected is not False and not stopping
        return ok, details

    def _database_error(self) -> str | None:
        if self._ping is None:
            return None
        with self._ping_lock:
            now = time.monotonic()
            if self._ping_cache is None or now - self._ping_cache[0] >= self._ping_ttl:
                try:
                    self._ping()
                    result: str | None = None
                except PgQueueError as exc:
                    result = str(exc)
                except Exception as exc:  # a driver error not translated: still unready
                    result = f"{type(exc).__name__}: {exc}"
                self._ping_cache = (time.monotonic(), result)
            return self._ping_cache[1]
