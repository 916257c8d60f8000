"""What metrics and tracing cost a worker: drain at concurrency 100 with each off and on.

    python -m benchmarks.observability [--dsn URL] [--jobs 20000] [--rounds 5]
        [--concurrency 100] [--modes off,metrics,tracing[,sampled]]
        [--span-processor batch|simple] [--floor-spans 20000] [--other-tree DIR]

The acceptance point of issue 13: "drain at concurrency 100 with metrics and tracing on versus
off; the cost must stay under 5% with metrics on (tracing with a no-op exporter under 15%)".

Each round drains ``--jobs`` pre-enqueued no-op jobs with ONE worker process (the subprocess of
:mod:`benchmarks._worker`, as in :mod:`benchmarks.run`) once per mode, the modes interleaved and
their order rotated from round to round, so that other work on a shared box falls on every
mode alike:

- ``off``: no ``metrics_port``, no tracer provider;
- ``metrics``: ``metrics_port`` set (the worker's instruments and its HTTP endpoint);
- ``tracing``: the OpenTelemetry SDK's ``TracerProvider`` with an exporter that drops every
  span, behind a ``BatchSpanProcessor`` by default -- the processor the SDK documents for
  production (``SimpleSpanProcessor`` exports synchronously inside ``span.end()``, on the
  worker's event loop: with a real exporter that is a network call per job, so nobody runs it
  under load). ``--span-processor simple`` measures that one instead. Every job of these rounds
  carries a W3C trace context of its own in ``meta`` (a sampled one), as jobs enqueued inside a
  traced request do, so the worker decodes it and parents every consumer span to it;
- ``<mode>@other``, with ``--other-tree DIR``: the same mode run by the pgqueue in DIR (another
  commit), in the same rounds, so a change's effect is a ratio of one run;
- ``sampled`` (not in the default ``--modes``): the same provider, but only one job in ten
  carries a sampled context, the others one a root sampler (``ParentBased(TraceIdRatioBased
  (0.1))`` in the enqueuing service) decided not to sample; the worker's default sampler
  (``ParentBased(ALWAYS_ON)``) follows that decision.

Per run: jobs/s (``Worker.run()`` start to exit, burst mode) and the worker's CPU time per job
(``getrusage``: user + system, every thread of the process, so a span processor's export thread
counts). The cost of a mode is quoted per round against that round's ``off`` run, then as the
median over rounds. On a busy 2-core box both swing by tens of percent from round to round
(CPU per job less than throughput): run many rounds and read the per-round figures too.

Then, in this process and without a database (steadier than the drains on a shared box), the
SDK's own floor (``--floor-spans`` spans): what one consumer span costs the SDK alone
(``start_span`` with the seven attributes and a parent context, one attribute at the end,
``end()``), next to what pgqueue's tracing calls cost for the same span
(:func:`pgqueue._tracing.start_consume` ... ``end_consume``), so the difference is pgqueue's
part; and what the worker's metrics cost per job (``WorkerMetrics.on_event``, ``started`` and
``succeeded``).

Server: ``--dsn``, else ``PGQUEUE_DATABASE_URL`` / ``DATABASE_URL``, else 127.0.0.1:5432, else
the embedded server; a throwaway database is created, migrated and dropped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    Children,
    Db,
    choose_server,
    git_head,
    loadavg,
    log,
    sigterm_as_interrupt,
    throwaway_database,
)
from benchmarks.run import Bench

MODES = ("off", "metrics", "tracing", "sampled")
DEFAULT_MODES = ("off", "metrics", "tracing")
#: the share of traces the ``sampled`` mode's jobs carry as sampled
SAMPLED = 0.1
#: the trace context a traced enqueue stores in a job's meta (sampled)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def drain_round(b: Bench, mode: str, n: int, concurrency: int, processor: str,
                other_tree: Path | None = None) -> dict[str, Any]:
    """One drain of ``n`` jobs in ``mode`` (``<mode>@other``: by the pgqueue of
    ``other_tree``); the figures of :meth:`Bench.drain` and the load."""
    mode, _, where = mode.partition("@")
    b.args.worker_tree = other_tree if where else None
    b.args.metrics = mode == "metrics"
    b.args.tracing = mode in ("tracing", "sampled")
    b.args.span_processor = processor
    traced = {"tracing": 1.0, "sampled": SAMPLED}.get(mode)
    r = b.drain(n, concurrency, mode, traced=traced)
    r["loadavg"] = loadavg()
    return r


def drains(args: argparse.Namespace, dsn: str, workdir: Path) -> dict[str, Any]:
    children = Children()
    db = Db(dsn)
    bench_args = argparse.Namespace(quick=True, wait_quiet=args.wait_quiet, sync_handler=False,
                                    metrics=False, tracing=False, span_processor="batch")
    b = Bench(bench_args, dsn, db, children, workdir)
    rounds: list[dict[str, Any]] = []
    try:
        log("warm-up drain (not counted) ...")
        b.drain(min(args.jobs, 2_000), args.concurrency, "warmup")
        runs = args.modes + [f"{m}@other" for m in args.modes] if args.other_tree else args.modes
        for k in range(args.rounds):
            order = runs[k % len(runs):] + runs[:k % len(runs)]
            got: dict[str, Any] = {}
            for mode in order:
                r = drain_round(b, mode, args.jobs, args.concurrency, args.span_processor,
                                args.other_tree)
                got[mode] = r
                log(f"  round {k + 1} {mode:<8} {r['jobs_per_s']:8,.0f} jobs/s  worker "
                    f"{r['worker_cpu_us_per_job']:6.1f} us/job CPU  load {r['loadavg']}")
            rounds.append(got)
    finally:
        children.kill_all()
        db.close()
    return summarise(rounds, runs)


def summarise(rounds: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": [
        {m: {"jobs_per_s": round(r["jobs_per_s"]),
             "worker_cpu_us_per_job": round(r["worker_cpu_us_per_job"], 1),
             "loadavg": r["loadavg"], "counts": r.get("counts"),
             "spans_exported": r.get("spans_exported")} for m, r in got.items()}
        for got in rounds]}
    for m in modes:
        out[f"{m}_jobs_per_s_median"] = round(statistics.median(
            got[m]["jobs_per_s"] for got in rounds))
        out[f"{m}_cpu_us_per_job_median"] = round(statistics.median(
            got[m]["worker_cpu_us_per_job"] for got in rounds), 1)
        off = "off@other" if m.endswith("@other") else "off"
        if m == off or off not in modes:
            continue
        slower = [100 * (1 - got[m]["jobs_per_s"] / got[off]["jobs_per_s"]) for got in rounds]
        more = [100 * (got[m]["worker_cpu_us_per_job"] / got[off]["worker_cpu_us_per_job"]
                       - 1) for got in rounds]
        out[f"{m}_throughput_cost_pct_by_round"] = [round(x, 1) for x in slower]
        out[f"{m}_throughput_cost_pct_median"] = round(statistics.median(slower), 1)
        out[f"{m}_cpu_cost_pct_by_round"] = [round(x, 1) for x in more]
        out[f"{m}_cpu_cost_pct_median"] = round(statistics.median(more), 1)
    for m in modes:
        if f"{m}@other" in modes:  # this checkout vs the other tree, per round
            vs = [100 * (got[m]["worker_cpu_us_per_job"]
                         / got[f"{m}@other"]["worker_cpu_us_per_job"] - 1) for got in rounds]
            out[f"{m}_cpu_vs_other_pct_by_round"] = [round(x, 1) for x in vs]
            out[f"{m}_cpu_vs_other_pct_median"] = round(statistics.median(vs), 1)
    return out


# ---- the SDK's floor -------------------------------------------------------------------------
def _provider(processor: str) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()) if processor == "batch"
                                else SimpleSpanProcessor(Drop()))
    return provider


def _cpu_us_per(n: int, fn: Any, flush: Any) -> float:
    """Process CPU time (every thread: the batch processor's export thread too) per call of
    ``fn``, run ``n`` times in chunks of 256 with a ``flush`` after each, so that the export
    work is counted where it arises and the processor's queue (2,048 spans) never overflows
    (an overflowing queue drops spans unexported, which would flatter the figure)."""
    gc.collect()
    flush()
    t0 = time.process_time()
    for start in range(0, n, 256):
        fn(min(256, n - start))
        flush()
    return (time.process_time() - t0) / n * 1e6


def metrics_per_job(n: int) -> float:
    """CPU us per job of the worker's metrics (:meth:`WorkerMetrics.on_event` for ``started``
    and ``succeeded``, 100 jobs in flight as at concurrency 100), best of 5 passes."""
    from pgqueue.job import Job
    from pgqueue.worker._metrics import WorkerMetrics

    now = dt.datetime.now(dt.UTC)
    jobs = [Job(id=i, queue="bench", task="bench.noop", args={}, attempt=1, run_at=now,
                created_at=now) for i in range(100)]
    metrics = WorkerMetrics()
    on_event = metrics.on_event
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(max(1, n // 100)):
            for job in jobs:
                on_event("started", job)
            for job in jobs:
                on_event("succeeded", job)
        best = min(best, (time.process_time() - t0) / (max(1, n // 100) * 100) * 1e6)
    return round(best, 2)


def sdk_floor(n: int, processor: str) -> dict[str, float]:
    """CPU us per consumer span: the SDK's floor vs everything pgqueue does (see the module
    docstring)."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    from pgqueue import _tracing
    from pgqueue.job import Job

    now = dt.datetime.now(dt.UTC)

    def jobs(flags: str) -> list[Job]:
        """256 jobs, each with a context of its own (as each job of a drain has): pgqueue's
        decode never finds the one it decoded last."""
        return [Job(id=i, queue="bench", task="bench.noop", args={}, attempt=1, run_at=now,
                    created_at=now, meta={"otel": {
                        "traceparent": f"00-{i:032x}-{i:016x}-{flags}"}})
                for i in range(1, 257)]

    sampled, unsampled = jobs("01"), jobs("00")
    carrier = {"traceparent": TRACEPARENT}
    provider = _provider(processor)
    trace.set_tracer_provider(provider)
    tracer = provider.get_tracer("floor")
    parent = propagate.extract(carrier)

    def sdk_span(k: int) -> None:
        """The floor: the span with its seven attributes and parent, its outcome, its end."""
        for i in range(k):
            span = tracer.start_span("process bench", context=parent, kind=SpanKind.CONSUMER,
                                     attributes={
                "messaging.system": "pgqueue", "messaging.destination.name": "bench",
                "messaging.operation.type": "process", "messaging.operation.name": "process",
                "messaging.message.id": str(i), "pgqueue.task": "bench.noop",
                "pgqueue.attempt": 1})
            span.set_attribute("pgqueue.outcome", "succeeded")
            span.end()

    def bare(k: int) -> None:
        for _ in range(k):
            tracer.start_span("process bench").end()

    def extract(k: int) -> None:
        for _ in range(k):
            propagate.extract(carrier)

    def through_pgqueue(k: int, batch: list[Job] = sampled) -> None:
        for job in batch[:k]:  # k <= 256 (the chunks of _cpu_us_per)
            running = _tracing.start_consume(job)
            assert running is not None
            _tracing.set_outcome(running, "succeeded")
            _tracing.end_consume(running)

    measured = {"bare_span_us": bare, "sdk_span_us": sdk_span, "sdk_extract_us": extract,
                "pgqueue_span_us": through_pgqueue,
                "pgqueue_unsampled_span_us": lambda k: through_pgqueue(k, unsampled)}
    passes: dict[str, list[float]] = {k: [] for k in measured}
    for _ in range(5):  # interleaved passes, the best of each kept
        for key, fn in measured.items():
            passes[key].append(_cpu_us_per(n, fn, provider.force_flush))
    got = {k: min(v) for k, v in passes.items()}
    provider.shutdown()
    out = {k: round(v, 2) for k, v in got.items()}
    log(f"  SDK floor ({processor} processor): " + ", ".join(f"{k} {v}" for k, v in out.items()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.observability",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", default=None, help="server (a throwaway database is created on it)")
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (default 20,000)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--modes", default=",".join(DEFAULT_MODES),
                   help=f"comma-separated subset of {','.join(MODES)}, in round-1 order")
    p.add_argument("--span-processor", choices=("batch", "simple"), default="batch",
                   help="the tracing mode's span processor (default batch, see above)")
    p.add_argument("--floor-spans", type=int, default=20_000,
                   help="spans per pass of the SDK floor measurement (0: skip it)")
    p.add_argument("--other-tree", type=Path, default=None, metavar="DIR",
                   help="also run every mode with the pgqueue of DIR (a checkout of another "
                   "commit, e.g. `git archive <commit> | tar -x -C DIR`, with this checkout's "
                   "benchmarks/ copied in), interleaved: before/after in one run")
    p.add_argument("--no-drain", action="store_true", help="only the SDK floor")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="wait up to S s before each drain for the box to be < 25%% busy")
    args = p.parse_args(argv)
    args.modes = args.modes.split(",")
    if set(args.modes) - set(MODES) or args.rounds < 1 or args.jobs < 1:
        p.error(f"--modes: a subset of {MODES}; --rounds and --jobs >= 1")

    sigterm_as_interrupt()
    result: dict[str, Any] = {"commit": git_head(), "jobs": args.jobs,
                              "concurrency": args.concurrency, "rounds": args.rounds,
                              "span_processor": args.span_processor,
                              "loadavg_at_start": loadavg()}
    if not args.no_drain:
        server = choose_server(args.dsn)
        log(f"server: {server.source}")
        try:
            with tempfile.TemporaryDirectory(prefix="pgqueue-obs-") as tmp, \
                    throwaway_database(server.admin_dsn) as dsn:
                result["drain"] = drains(args, dsn, Path(tmp))
        finally:
            server.stop()
    if args.floor_spans:
        log(f"SDK floor: {args.floor_spans:,} consumer spans per pass ...")
        result["sdk_floor_us_per_span"] = sdk_floor(args.floor_spans, args.span_processor)
        result["metrics_us_per_job"] = metrics_per_job(args.floor_spans * 5)
        log(f"  metrics: {result['metrics_us_per_job']} us of CPU per job")
    result["loadavg_at_end"] = loadavg()
    print(render(result))
    print(json.dumps(result, separators=(",", ":"), default=str))
    return 0


def render(res: dict[str, Any]) -> str:
    lines = ["", f"observability cost at {res['commit']}: {res['jobs']:,} no-op jobs per drain, "
             f"concurrency {res['concurrency']}, one worker process, {res['rounds']} interleaved "
             f"rounds, tracing = SDK + {res['span_processor']} span processor + no-op exporter",
             f"load average at start {res['loadavg_at_start']}, at end {res['loadavg_at_end']}"]
    d = res.get("drain")
    if d:
        modes = list(d["rounds"][0])
        lines += ["", f"{'round':<7}" + "".join(f"{m + ' jobs/s':>{max(16, len(m) + 9)}}"
                                               f"{'us CPU/job':>12}" for m in modes)
                  + "   load average (1, 5, 15)"]
        for k, got in enumerate(d["rounds"]):
            lines.append(f"{k + 1:<7}" + "".join(
                f"{got[m]['jobs_per_s']:>{max(16, len(m) + 9)},}"
                f"{got[m]['worker_cpu_us_per_job']:>12.1f}" for m in modes)
                + f"   {got[modes[-1]]['loadavg']}")
        lines.append(f"{'median':<7}" + "".join(
            f"{d[m + '_jobs_per_s_median']:>{max(16, len(m) + 9)},}"
            f"{d[m + '_cpu_us_per_job_median']:>12.1f}" for m in modes))
        for m in modes:
            spans = [got[m]["spans_exported"] for got in d["rounds"]
                     if got[m].get("spans_exported") is not None]
            if spans:
                lines.append(f"{m}: spans exported per drain {min(spans):,}-{max(spans):,} of "
                             f"{res['jobs']:,} jobs (a batch processor whose queue overflows "
                             "drops spans)")
        for m in modes:
            if f"{m}_cpu_cost_pct_median" in d:
                base = "off@other" if m.endswith("@other") else "off"
                lines.append(f"{m} vs {base}: throughput -{d[m + '_throughput_cost_pct_median']}% "
                             f"(by round {d[m + '_throughput_cost_pct_by_round']}), worker CPU "
                             f"per job +{d[m + '_cpu_cost_pct_median']}% (by round "
                             f"{d[m + '_cpu_cost_pct_by_round']})")
    if d:
        for m in modes:
            if f"{m}_cpu_vs_other_pct_median" in d:
                lines.append(f"{m}, this checkout vs the other tree: worker CPU per job "
                             f"{d[m + '_cpu_vs_other_pct_median']:+}% (by round "
                             f"{d[m + '_cpu_vs_other_pct_by_round']})")
    f = res.get("sdk_floor_us_per_span")
    if f:
        lines += ["", f"CPU us per consumer span ({res['span_processor']} processor, no database):"
                  f" the SDK's floor (start_span with 7 attributes and a parent, 1 attribute, "
                  f"end) {f['sdk_span_us']}; a bare span {f['bare_span_us']}; the SDK's "
                  f"propagate.extract {f['sdk_extract_us']}; everything pgqueue does "
                  f"(start_consume, set_outcome, end_consume) {f['pgqueue_span_us']}, of which "
                  f"pgqueue's own {f['pgqueue_span_us'] - f['sdk_span_us']:.2f}; an unsampled "
                  f"job through pgqueue {f['pgqueue_unsampled_span_us']}"]
    if res.get("metrics_us_per_job") is not None:
        lines.append(f"CPU us per job of the worker's metrics (started + succeeded, no "
                     f"database): {res['metrics_us_per_job']}")
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    sys.exit(main())
