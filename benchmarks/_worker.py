"""The worker process of the benchmarks: ONE pgqueue worker, run in its own process so that its
memory and CPU can be measured on their own.

    python -m benchmarks._worker --dsn DSN --mode drain --concurrency 100 --out result.json

Modes:

- ``drain``: ``burst=True``; runs until the queue is empty and every outcome is written, then
  exits. ``t0`` is taken just before ``Worker.run()`` starts (imports done, no connection open
  yet), ``t_end`` just after it returns (which burst mode does only once the completer has
  flushed and a claim finds nothing left).
- ``pickup``: an idle, long-running worker; the handler records ``time.time()`` when it starts
  each job (keyed by the job's ``i`` argument) and the worker stops itself after ``--expect``
  jobs.

The result (timings, peak RSS from ``/proc/self/status`` VmHWM, CPU time, optional call counts)
is written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import resource
import signal
import sys
import time
from collections import defaultdict
from typing import Any

from benchmarks._tasks import QUEUE, make_app


def _die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGTERM when the benchmark driver dies, even by SIGKILL (no orphans)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent_pid and os.getppid() != parent_pid:
        sys.exit("benchmark driver is gone")


def proc_status() -> dict[str, int]:
    """VmHWM / VmRSS of this process in kB (Linux); empty elsewhere."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    if "VmHWM" not in out:  # not Linux: ru_maxrss (kB on Linux, bytes on macOS)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = rss // 1024 if sys.platform == "darwin" else rss
    return out


def _instrument(app: Any, worker: Any) -> dict[str, dict[str, float]]:
    """Count the driver calls the worker makes (profiling only; adds a few us per call)."""
    calls: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    drv = app.driver

    def wrap(name: str) -> None:
        orig = getattr(drv, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            result = await orig(*args, **kwargs)
            stat = calls[name]
            stat["calls"] += 1
            stat["wall_s"] += time.perf_counter() - t
            if name == "claim":
                stat["asked"] += args[1] if len(args) > 1 else kwargs.get("limit", 0)
                stat["rows"] += len(result)
                if not result:
                    stat["empty"] += 1
            elif name in ("finish_many", "requeue_many"):
                stat["rows"] += len(args[0])
            return result

        setattr(drv, name, wrapper)

    for name in ("claim", "finish_many", "requeue_many", "next_run_at", "heartbeat",
                 "cancel_requested", "rescue_expired", "prune_workers", "register_worker",
                 "unregister_worker", "ensure_partitions"):
        if hasattr(drv, name):
            wrap(name)
    orig_notify = worker._on_notify

    def on_notify(kind: str, payload: Any) -> None:
        calls["notifications"]["calls"] += 1
        orig_notify(kind, payload)

    worker._on_notify = on_notify
    return calls


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _noop_tracing(processor: str, exported: list[int]) -> Any:
    """A real SDK tracer provider whose spans go to an exporter that drops them (counting
    them in ``exported[0]``: a batch processor whose queue overflows drops spans unexported),
    behind a ``BatchSpanProcessor`` (``batch``) or a ``SimpleSpanProcessor`` (``simple``)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            exported[0] += len(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()) if processor == "batch"
                                else SimpleSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    return provider


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks._worker")
    p.add_argument("--dsn", required=True)
    p.add_argument("--mode", choices=("drain", "pickup"), required=True)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--expect", type=int, default=0, help="pickup: stop after this many jobs")
    p.add_argument("--out", required=True)
    p.add_argument("--sync-handler", action="store_true")
    p.add_argument("--count-calls", action="store_true")
    p.add_argument("--cprofile", default=None, help="write cProfile stats to this file")
    p.add_argument("--parent-pid", type=int, default=0)
    p.add_argument("--metrics", action="store_true",
                   help="serve /metrics on a free port (the worker's metrics service on)")
    p.add_argument("--tracing", action="store_true",
                   help="OpenTelemetry SDK with a no-op exporter: a span per attempt")
    p.add_argument("--uvloop", action="store_true",
                   help="run the worker on uvloop's event loop (pip install uvloop)")
    p.add_argument("--span-processor", choices=("simple", "batch"), default="simple",
                   help="--tracing: the SDK's span processor (default simple)")
    a = p.parse_args(argv)
    _die_with_parent(a.parent_pid)

    starts: dict[int, float] = {}
    worker: Any = None

    def record(i: int) -> None:
        starts[i] = time.time()
        if a.expect and len(starts) >= a.expect and worker is not None:
            worker.stop()

    app = make_app(a.dsn, record if a.mode == "pickup" else None, sync_handler=a.sync_handler)
    exported = [0]
    provider = _noop_tracing(a.span_processor, exported) if a.tracing else None
    observe: dict[str, Any] = {"metrics_port": _free_port()} if a.metrics else {}
    worker = app.worker(queues=[QUEUE], concurrency=a.concurrency, burst=a.mode == "drain",
                        **observe)
    calls = _instrument(app, worker) if a.count_calls else None
    times: dict[str, float] = {}

    async def run() -> None:
        times["t0"] = time.time()
        try:
            await worker.run()
        finally:
            times["t_end"] = time.time()
            await app.aclose()

    profiler = None
    if a.cprofile:
        import cProfile

        profiler = cProfile.Profile()
    rss_at_t0 = proc_status().get("VmRSS")  # after imports, before any connection
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    if profiler is not None:
        profiler.enable()
    try:
        if a.uvloop:
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(run())
        else:
            asyncio.run(run())
        if provider is not None:  # the batch processor's queued spans are part of the cost
            provider.shutdown()
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(a.cprofile)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    status = proc_status()
    result = {
        "t0": times.get("t0"),
        "t_end": times.get("t_end"),
        "elapsed_s": times["t_end"] - times["t0"],
        "vmhwm_kb": status.get("VmHWM"),
        "vmrss_kb_end": status.get("VmRSS"),
        "vmrss_kb_at_t0": rss_at_t0,
        "cpu_user_s": ru1.ru_utime - ru0.ru_utime,
        "cpu_sys_s": ru1.ru_stime - ru0.ru_stime,
        "gc_collections": [g["collections"] for g in gc.get_stats()],
        "spans_exported": exported[0] if provider is not None else None,
        "processed": worker.processed,
        "counts": worker.counts,
        "starts": {str(k): v for k, v in starts.items()} if a.mode == "pickup" else None,
        "calls": {k: dict(v) for k, v in calls.items()} if calls is not None else None,
    }
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
