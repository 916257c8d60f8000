"""pgqueue's benchmark, measured against PostgreSQL's own ceiling on the same box, in one run.

    python -m benchmarks.run [--quick] [--runs N] [--dsn URL] [--metrics] [--tracing]

Server: ``--dsn``, else ``PGQUEUE_DATABASE_URL`` / ``DATABASE_URL``, else a server on
127.0.0.1:5432 (user postgres), else the embedded server (``durable=True``, so fsync and
synchronous_commit are on). On it a throwaway database ``pgqueue_bench_<hex>`` is created,
migrated, and dropped at the end.

Figures (each the median of ``--runs`` runs, with min and max):

- ``bulk_enqueue_per_s``: 100,000 jobs through ``app.enqueue_many`` (one call);
- ``single_enqueue_per_s``: 2,000 jobs, one per transaction on one psycopg connection
  (``with conn.transaction(): app.enqueue(..., conn=conn)``);
- ``bulk_enqueue_async_per_s`` / ``single_enqueue_async_per_s``: the same through
  ``enqueue_many_async`` and ``enqueue_async`` (an ``AsyncConnection``), on one event loop;
- ``drain_per_s_c{1,10,100}``: 50,000 pre-enqueued no-op jobs, ONE worker process
  (a subprocess) at that concurrency, from ``Worker.run()`` start until the worker exits in burst
  mode, after which the database is checked to show all done (jobs empty, job_history = N);
- ``drain_1m_per_s``: the same at concurrency 100 with 1,000,000 jobs queued;
- ``pickup_p50_ms`` / ``p95`` / ``p99``: an idle worker; 500 jobs enqueued one per transaction,
  20 ms apart; latency = handler start (``time.time()`` in the worker) minus the moment the
  enqueuing transaction's COMMIT returned (``time.time()`` in this process);
- ``worker_rss_mb``: peak RSS (VmHWM) of the worker process in the 50k drain at concurrency 100;
- the ceilings: ``pgbench`` with the same SQL shapes (see :mod:`benchmarks._ceiling`), and
  every pgqueue figure as a ratio of its ceiling.

``--quick`` uses smaller sizes (printed with the figures), ``pgbench -T 5`` and one run of the
large-backlog drain; it finishes in under two minutes on a 2-core box. Progress goes to stderr;
stdout gets the table and, as its last line, one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks._ceiling import Ceiling, CeilingRunner, find_pgbench
from benchmarks._common import (
    REPO,
    Children,
    Db,
    Figure,
    Quiet,
    choose_server,
    loadavg,
    log,
    machine_cpu,
    machine_info,
    percentile,
    rnd,
    server_cpu,
    sigterm_as_interrupt,
    source_digest,
    throwaway_database,
)
from benchmarks._tasks import TASK, make_app

FULL = {"bulk": 100_000, "single": 2_000, "drain": 50_000, "drain_big": 1_000_000,
        "drain_c1": 50_000, "pickup": 500, "pgbench_T": 20}
QUICK = {"bulk": 20_000, "single": 500, "drain": 10_000, "drain_big": 100_000,
         "drain_c1": 5_000, "pickup": 100, "pgbench_T": 5}
PICKUP_SPACING_S = 0.020
PICKUP_WARMUP = 20
PICKUP_CONCURRENCY = 10
GROUPS = ("ceiling", "bulk", "single", "drain", "drain1m", "pickup")

#: Issue 6's absolute drain target is twice this (pgqueuer's best drain on that box); the
#: other targets (issue 16) are ratios within one run (see :func:`targets`).
PGQUEUER_BEST_DRAIN = 9_600


class Bench:
    def __init__(self, args: argparse.Namespace, dsn: str, db: Db, children: Children,
                 workdir: Path) -> None:
        self.args = args
        self.dsn = dsn
        self.db = db
        self.children = children
        self.workdir = workdir
        self.sizes = QUICK if args.quick else FULL
        self.app = make_app(dsn)
        self.quiet = Quiet(args.wait_quiet)
        #: the directory worker processes run in (and import pgqueue from): this checkout,
        #: or another tree to compare with (see benchmarks/claim_overlap.py)
        self.worker_tree = REPO
        #: more arguments for every worker process (e.g. ``--count-calls``)
        self.worker_extra: list[str] = []

    # ---- enqueue ---------------------------------------------------------------------------
    def bulk_enqueue(self, n: int) -> float:
        self.db.reset()
        self.app.enqueue_many(TASK, [{"i": i} for i in range(10)])  # open the pool
        self.db.reset()
        self.db.settle()
        args = [{"i": i} for i in range(n)]
        self.quiet.before()
        t = time.perf_counter()
        ids = self.app.enqueue_many(TASK, args)
        elapsed = time.perf_counter() - t
        left, _ = self.db.counts()
        if len(ids) != n or left != n:
            raise RuntimeError(f"bulk enqueue: {len(ids)} ids, {left} rows, expected {n}")
        return n / elapsed

    def bulk_enqueue_async(self, n: int) -> float:
        """:meth:`bulk_enqueue` through ``enqueue_many_async`` (the app's async pool)."""
        async def go() -> float:
            await self.app.enqueue_many_async(TASK, [{"i": i} for i in range(10)])  # the pool
            self.db.reset()
            self.db.settle()
            args = [{"i": i} for i in range(n)]
            self.quiet.before()
            t = time.perf_counter()
            ids = await self.app.enqueue_many_async(TASK, args)
            elapsed = time.perf_counter() - t
            if len(ids) != n:
                raise RuntimeError(f"async bulk enqueue: {len(ids)} ids, expected {n}")
            return n / elapsed

        self.db.reset()
        rate = self._on_loop(go())
        left, _ = self.db.counts()
        if left != n:
            raise RuntimeError(f"async bulk enqueue: {left} rows, expected {n}")
        return rate

    def single_enqueue_async(self, n: int) -> float:
        """:meth:`single_enqueue` through ``enqueue_async`` on one ``AsyncConnection``."""
        async def go() -> float:
            async with await psycopg.AsyncConnection.connect(self.dsn,
                                                             autocommit=True) as conn:
                for i in range(10):  # warm up: connection, prepared statements
                    async with conn.transaction():
                        await self.app.enqueue_async(TASK, {"i": -i}, conn=conn)
                self.quiet.before()
                t = time.perf_counter()
                for i in range(n):
                    async with conn.transaction():
                        await self.app.enqueue_async(TASK, {"i": i}, conn=conn)
                return n / (time.perf_counter() - t)

        self.db.reset()
        self.db.settle()
        rate = self._on_loop(go())
        left, _ = self.db.counts()
        if left != n + 10:
            raise RuntimeError(f"async single enqueue: {left} rows, expected {n + 10}")
        return rate

    def _on_loop(self, coro: Any) -> float:
        """Run ``coro`` on a new event loop, closing the app's async pools (bound to that
        loop) before it ends."""
        async def main() -> float:
            try:
                result: float = await coro
                return result
            finally:
                await self.app.driver.aclose()

        return asyncio.run(main())

    def single_enqueue(self, n: int) -> float:
        self.db.reset()
        self.db.settle()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for i in range(10):  # warm up: connection, prepared statements
                with conn.transaction():
                    self.app.enqueue(TASK, {"i": -i}, conn=conn)
            self.quiet.before()
            t = time.perf_counter()
            for i in range(n):
                with conn.transaction():
                    self.app.enqueue(TASK, {"i": i}, conn=conn)
            elapsed = time.perf_counter() - t
        left, _ = self.db.counts()
        if left != n + 10:
            raise RuntimeError(f"single enqueue: {left} rows, expected {n + 10}")
        return n / elapsed

    # ---- worker subprocess ---------------------------------------------------------------------
    def spawn_worker(self, mode: str, concurrency: int, out: Path, expect: int = 0,
                     extra: list[str] | None = None) -> tuple[Any, Path]:
        cmd = [sys.executable, "-m", "benchmarks._worker", "--dsn", self.dsn, "--mode", mode,
               "--concurrency", str(concurrency), "--out", str(out),
               "--parent-pid", str(os.getpid())]
        if expect:
            cmd += ["--expect", str(expect)]
        if self.args.sync_handler:
            cmd.append("--sync-handler")
        if self.args.metrics:
            cmd.append("--metrics")
        if getattr(self.args, "uvloop", False):
            cmd.append("--uvloop")
        if self.args.tracing:
            cmd += ["--tracing", "--span-processor", getattr(self.args, "span_processor",
                                                             "simple")]
        cmd += [*(extra or []), *self.worker_extra]
        env = dict(os.environ)
        # the pgqueue the worker runs: benchmarks.observability's --other-tree, else the one
        # benchmarks.claim_overlap sets, else this checkout
        tree = getattr(self.args, "worker_tree", None) or self.worker_tree
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH")) if p)
        logf = out.with_suffix(".log")
        with open(logf, "w") as lf:
            proc = self.children.popen(cmd, cwd=tree, env=env, stdout=lf, stderr=lf)
        return proc, logf

    def wait_worker(self, proc: Any, logf: Path, out: Path, timeout: float) -> dict[str, Any]:
        try:
            proc.wait(timeout=timeout)
        except Exception:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"worker did not finish within {timeout:.0f} s; its log ends:\n"
                               f"{logf.read_text()[-3000:]}") from None
        finally:
            self.children.forget(proc)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"worker exited with code {proc.returncode}; its log ends:\n"
                               f"{logf.read_text()[-3000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    # ---- drain -------------------------------------------------------------------------------
    def drain(self, n: int, concurrency: int, tag: str,
              traced: float | None = None) -> dict[str, Any]:
        self.db.reset()
        self.db.prefill(n, traced=traced)
        self.db.settle()
        out = self.workdir / f"drain-{tag}-{time.monotonic_ns()}.json"
        busy_before = self.quiet.before()
        s0, cpu0 = self.db.stats(), machine_cpu()
        pg0 = server_cpu(self.db.conn.info.backend_pid)
        proc, logf = self.spawn_worker("drain", concurrency, out)
        r = self.wait_worker(proc, logf, out, timeout=max(60.0, n / 300))
        cpu1 = machine_cpu()
        left, done = self.db.counts()
        if left != 0 or done != n:
            raise RuntimeError(
                f"drain c{concurrency}: the worker exited but the database does not show all "
                f"done: jobs left by state {self.db.states()}, {done} in job_history, expected "
                f"{n}; the worker reported {r.get('processed')} processed {r.get('counts')}; "
                f"its log ends:\n{logf.read_text()[-2000:]}")
        time.sleep(0.2)  # backends of the exited worker flush their statistics
        s1 = self.db.stats()
        pg1 = server_cpu(self.db.conn.info.backend_pid)
        elapsed = r["t_end"] - r["t0"]
        last = self.db.max_finished_at()
        d = {k: s1[k] - s0[k] for k in s0}
        res = {
            "jobs_per_s": n / elapsed,
            "elapsed_s": elapsed,
            "jobs_per_s_to_last_finished_at": n / (last - r["t0"]) if last else None,
            "rss_mb": r["vmhwm_kb"] / 1024 if r.get("vmhwm_kb") else None,
            "rss_mb_before_run": (r["vmrss_kb_at_t0"] / 1024 if r.get("vmrss_kb_at_t0")
                                  else None),
            "worker_cpu_s": r["cpu_user_s"] + r["cpu_sys_s"],
            "worker_cpu_pct_of_core": 100 * (r["cpu_user_s"] + r["cpu_sys_s"]) / elapsed,
            "machine_busy_before_pct": busy_before,
            "machine_busy_pct": (100 * (cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1])
                                 if cpu0 and cpu1 and cpu1[1] > cpu0[1] else None),
            "xacts_per_job": d["xact_commit"] / n,
            "wal_bytes_per_job": d["wal_bytes"] / n,
            # the whole server's CPU (this database's backends and the background processes):
            # on a server shared with other work this includes that work
            "pg_cpu_us_per_job": (1e6 * (pg1 - pg0) / n if pg0 is not None and pg1 is not None
                                  else None),
            "worker_cpu_us_per_job": 1e6 * (r["cpu_user_s"] + r["cpu_sys_s"]) / n,
            "rows_per_job": {k: d[f"tup_{k}"] / n for k in ("inserted", "updated", "deleted")},
            "jobs_updates_hot_pct": (100 * d["jobs_hot_upd"] / d["jobs_upd"]
                                     if d["jobs_upd"] else None),
            "checkpoints": d["checkpoints"],
            "counts": r.get("counts"),
            "spans_exported": r.get("spans_exported"),
            "calls": r.get("calls"),
        }
        if n >= 100_000:
            res["jobs_per_s_by_tenth"] = self.db.deciles(r["t0"])
        return res

    # ---- pickup ------------------------------------------------------------------------------
    def pickup(self, n: int, *, reset: bool = True) -> dict[str, Any]:
        """Pickup latency of an idle worker over ``n`` jobs (``reset``: on emptied tables)."""
        if reset:
            self.db.reset()
            self.db.settle()
        out = self.workdir / f"pickup-{time.monotonic_ns()}.json"
        proc, logf = self.spawn_worker("pickup", PICKUP_CONCURRENCY, out,
                                       expect=PICKUP_WARMUP + n)
        commits: list[float] = []
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                # warm-up jobs (not measured): the worker connects, LISTENs, prepares its
                # statements, and is then idle
                for j in range(PICKUP_WARMUP):
                    with conn.transaction():
                        self.app.enqueue(TASK, {"i": 10_000_000 + j}, conn=conn)
                    time.sleep(0.05)
                deadline = time.monotonic() + 60
                while self.db.counts()[1] < PICKUP_WARMUP:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("pickup: the worker did not run the warm-up jobs; "
                                           f"its log ends:\n{logf.read_text()[-3000:]}")
                    time.sleep(0.05)
                self.quiet.before()
                nxt = time.perf_counter()
                for i in range(n):
                    delay = nxt - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    with conn.transaction():
                        self.app.enqueue(TASK, {"i": i}, conn=conn)
                    commits.append(time.time())
                    nxt += PICKUP_SPACING_S
        except BaseException:
            proc.kill()
            raise
        r = self.wait_worker(proc, logf, out, timeout=60)
        starts = r["starts"]
        missing = [i for i in range(n) if str(i) not in starts]
        if missing:
            raise RuntimeError(f"pickup: {len(missing)} jobs never started")
        lat = [(starts[str(i)] - commits[i]) * 1000 for i in range(n)]
        return {"p50": percentile(lat, 50), "p95": percentile(lat, 95),
                "p99": percentile(lat, 99), "max": max(lat), "min": min(lat)}


def _repeat(fig: Figure, runs: int, fn: Any, fmt: str = "{:,.0f}") -> list[Any]:
    """Run ``fn`` ``runs`` times; a run that fails is logged and recorded in ``fig.errors``
    (the figure is then the median of the runs that succeeded) instead of ending the benchmark."""
    results = []
    for k in range(runs):
        t = time.perf_counter()
        try:
            value = fn()
        except (RuntimeError, psycopg.Error) as exc:
            fig.errors.append(str(exc)[:3000])
            log(f"  {fig.name} run {k + 1}/{runs} FAILED: {str(exc)[:3000]}")
            continue
        results.append(value)
        v = value if isinstance(value, int | float) else value[0]
        fig.runs.append(float(v))
        log(f"  {fig.name} run {k + 1}/{runs}: {fmt.format(v)} {fig.unit} "
            f"({time.perf_counter() - t:.1f} s)")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes, pgbench -T 5, one large-backlog run (< 2 min)")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    p.add_argument("--dsn", default=None, help="server to use (a throwaway database is "
                   "created on it); default: env, 127.0.0.1:5432, embedded")
    p.add_argument("--embedded", action="store_true",
                   help="use the embedded server (pgqueue-tx[embedded]) even if another is "
                   "reachable")
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset of {','.join(GROUPS)} (for development)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each measurement wait up to S seconds for the machine to be "
                   "less than 25%% busy with other work (default 0: do not wait; the busy "
                   "share is recorded either way)")
    p.add_argument("--sync-handler", action="store_true",
                   help="no-op handler as a plain def (run in the worker's thread pool) "
                   "instead of async def")
    p.add_argument("--uvloop", action="store_true",
                   help="workers run on uvloop's event loop (pip install uvloop): compare "
                   "with a run without it")
    p.add_argument("--metrics", action="store_true",
                   help="workers serve Prometheus metrics (--metrics-port): compare with a run "
                        "without it to see the cost")
    p.add_argument("--tracing", action="store_true",
                   help="workers trace every attempt (OpenTelemetry SDK, no-op exporter)")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    groups = set(GROUPS if not args.only else args.only.split(","))
    if groups - set(GROUPS):
        p.error(f"--only: unknown {sorted(groups - set(GROUPS))}")

    sigterm_as_interrupt()
    children = Children()
    server = None
    started = time.time()
    try:
        server = choose_server(args.dsn, embedded=args.embedded)
        log(f"server: {server.source}")
        with tempfile.TemporaryDirectory(prefix="pgqueue-bench-") as tmp, \
                throwaway_database(server.admin_dsn) as dsn:
            db = Db(dsn)
            try:
                result = run(args, groups, server, dsn, db, children, Path(tmp))
            finally:
                children.kill_all()
                db.close()
    except KeyboardInterrupt:
        log("interrupted: stopping subprocesses and dropping the benchmark database")
        children.kill_all()
        return 130
    finally:
        children.kill_all()
        if server is not None:
            server.stop()
    result["duration_s"] = round(time.time() - started, 1)
    print(render_table(result))
    print(json.dumps(result, separators=(",", ":"), default=str))
    return 0


def run(args: argparse.Namespace, groups: set[str], server: Any, dsn: str, db: Db,
        children: Children, workdir: Path) -> dict[str, Any]:
    b = Bench(args, dsn, db, children, workdir)
    sz = b.sizes
    runs = args.runs
    big_runs = 1 if args.quick else runs
    machine = machine_info(db, server)
    machine["background_busy_pct_at_start"] = background_busy()
    log(f"machine: {machine['nproc']} CPUs, {machine['mem_total_mb']} MB, PostgreSQL "
        f"{machine['postgres']}, synchronous_commit={machine['pg_settings']['synchronous_commit']}")
    figs: dict[str, Figure] = {}
    extras: dict[str, Any] = {}
    ceilings: list[Ceiling] = []
    pgbench = find_pgbench()
    ceiling_note = None

    try:
        if "ceiling" in groups:
            if pgbench is None:
                ceiling_note = "pgbench not found: no ceilings measured"
                log(ceiling_note)
            else:
                runner = CeilingRunner(pgbench, db, children, sz["pgbench_T"], workdir,
                                       b.quiet)
                machine["pgbench"] = runner.version()
                ceilings = runner.run_all()
                cmd = runner.command("claim_complete", 4, "prepared")
                extras["pgbench_command_example"] = " ".join(
                    [Path(cmd[0]).name, *cmd[1:-2], "claim_complete.sql", "<dsn>"])
        if "bulk" in groups:
            log(f"bulk enqueue: {sz['bulk']:,} jobs via app.enqueue_many ...")
            f = figs["bulk_enqueue_per_s"] = Figure("bulk_enqueue_per_s", "jobs/s",
                                                    size=f"{sz['bulk']:,} jobs")
            _repeat(f, runs, lambda: b.bulk_enqueue(sz["bulk"]))
            log(f"bulk enqueue: {sz['bulk']:,} jobs via app.enqueue_many_async ...")
            f = figs["bulk_enqueue_async_per_s"] = Figure(
                "bulk_enqueue_async_per_s", "jobs/s", size=f"{sz['bulk']:,} jobs")
            _repeat(f, runs, lambda: b.bulk_enqueue_async(sz["bulk"]))
        if "single" in groups:
            log(f"single enqueue: {sz['single']:,} jobs, one per transaction ...")
            f = figs["single_enqueue_per_s"] = Figure("single_enqueue_per_s", "jobs/s",
                                                      size=f"{sz['single']:,} jobs")
            _repeat(f, runs, lambda: b.single_enqueue(sz["single"]))
            log(f"single enqueue (async): {sz['single']:,} jobs, one per transaction ...")
            f = figs["single_enqueue_async_per_s"] = Figure(
                "single_enqueue_async_per_s", "jobs/s", size=f"{sz['single']:,} jobs")
            _repeat(f, runs, lambda: b.single_enqueue_async(sz["single"]))
        if "drain" in groups:
            rss = Figure("worker_rss_mb", "MB", size=f"{sz['drain']:,} jobs, c100",
                         higher_is_better=False)
            for c in (1, 10, 100):
                n = sz["drain_c1"] if c == 1 else sz["drain"]
                log(f"drain: {n:,} jobs, concurrency {c} ...")
                f = figs[f"drain_per_s_c{c}"] = Figure(f"drain_per_s_c{c}", "jobs/s",
                                                       size=f"{n:,} jobs")
                res = _repeat(f, runs, lambda n=n, c=c: _drain_value(b.drain(n, c, f"c{c}")))
                extras[f"drain_c{c}"] = [r[1] for r in res]
                if c == 100:
                    rss.runs = [r[1]["rss_mb"] for r in res]
            figs["worker_rss_mb"] = rss
        if "drain1m" in groups:
            n = sz["drain_big"]
            log(f"drain: {n:,} jobs queued, concurrency 100 ({big_runs} run(s)) ...")
            f = figs["drain_1m_per_s"] = Figure("drain_1m_per_s", "jobs/s",
                                                size=f"{n:,} jobs")
            res = _repeat(f, big_runs, lambda: _drain_value(b.drain(n, 100, "big")))
            extras["drain_1m"] = [r[1] for r in res]
        if "pickup" in groups:
            log(f"pickup latency: {sz['pickup']} jobs, {PICKUP_SPACING_S * 1000:.0f} ms apart, "
                f"idle worker (concurrency {PICKUP_CONCURRENCY}) ...")
            size = f"{sz['pickup']} jobs"
            p50 = figs["pickup_p50_ms"] = Figure("pickup_p50_ms", "ms", size=size,
                                                 higher_is_better=False)
            p95 = figs["pickup_p95_ms"] = Figure("pickup_p95_ms", "ms", size=size,
                                                 higher_is_better=False)
            p99 = figs["pickup_p99_ms"] = Figure("pickup_p99_ms", "ms", size=size,
                                                 higher_is_better=False)
            runs_out = []
            for k in range(runs):
                try:
                    r = b.pickup(sz["pickup"])
                except (RuntimeError, psycopg.Error) as exc:
                    p50.errors.append(str(exc)[:3000])
                    log(f"  pickup run {k + 1}/{runs} FAILED: {str(exc)[:3000]}")
                    continue
                runs_out.append(r)
                p50.runs.append(r["p50"])
                p95.runs.append(r["p95"])
                p99.runs.append(r["p99"])
                log(f"  pickup run {k + 1}/{runs}: p50 {r['p50']:.2f} ms, p95 {r['p95']:.2f} "
                    f"ms, p99 {r['p99']:.2f} ms, max {r['max']:.2f} ms")
            extras["pickup"] = runs_out
    finally:
        b.app.close()
    machine["busy_pct_before_each_measurement"] = b.quiet.samples
    return assemble(args, sz, runs, big_runs, machine, figs, ceilings, ceiling_note, extras)


def _decayed_ceilings(res: dict[str, Any]) -> list[str]:
    """The claim+complete ceilings whose last seconds ran at under 60% of their first ones
    ("-c 4: 64,145 -> 30,205 jobs/s"): pgbench claims from the head of the claim index, and
    without vacuum (autovacuum off, or a snapshot held) it walks more dead entries every
    second, while pgqueue's drains do not."""
    out = []
    for key, clients in (("claim_complete_c1_jobs_per_s", 1), ("claim_complete_c4_jobs_per_s", 4)):
        per_s = (res.get("ceiling") or {}).get(key, {}).get("per_second") or []
        if len(per_s) >= 4:
            first = sum(per_s[:2]) / 2
            last = sum(per_s[-2:]) / 2
            if first > 0 and last < 0.6 * first:
                out.append(f"-c {clients}: {first:,.0f} -> {last:,.0f} jobs/s")
    return out


def background_busy(seconds: float = 1.0) -> float | None:
    """How busy the machine is (all CPUs, %) before the benchmark starts: other work on the box
    makes every figure lower and noisier."""
    c0 = machine_cpu()
    time.sleep(seconds)
    c1 = machine_cpu()
    if not c0 or not c1 or c1[1] <= c0[1]:
        return None
    return round(100 * (c1[0] - c0[0]) / (c1[1] - c0[1]), 1)


def _drain_value(res: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    return res["jobs_per_s"], {k: (rnd(v) if isinstance(v, float) else v)
                               for k, v in res.items()}


# ---- the result ----------------------------------------------------------------------------------
RATIOS = (
    # (ratio key, figure, ceiling key, label)
    ("bulk_vs_insert_1000", "bulk_enqueue_per_s", "insert_1000_rows_per_s",
     "bulk enqueue / 1,000-row INSERT"),
    ("single_vs_insert_notify", "single_enqueue_per_s", "insert_notify_tx_per_s",
     "single enqueue / INSERT+NOTIFY tx"),
    ("single_vs_insert_bare", "single_enqueue_per_s", "insert_bare_per_s",
     "single enqueue / bare INSERT"),
    ("single_vs_insert_one_tx", "single_enqueue_per_s", "insert_one_tx_per_s",
     "single enqueue / BEGIN;insert_one;COMMIT"),
    ("drain_c1_vs_claim_c1", "drain_per_s_c1", "claim_complete_c1_jobs_per_s",
     "drain c1 / claim+complete 1 client"),
    ("drain_c10_vs_claim_c4", "drain_per_s_c10", "claim_complete_c4_jobs_per_s",
     "drain c10 / claim+complete 4 clients"),
    ("drain_c100_vs_claim_c4", "drain_per_s_c100", "claim_complete_c4_jobs_per_s",
     "drain c100 / claim+complete 4 clients"),
    ("drain_1m_vs_claim_c4", "drain_1m_per_s", "claim_complete_c4_jobs_per_s",
     "drain 1M / claim+complete 4 clients"),
)

#: ratios between two of this run's own figures: (ratio key, numerator, denominator, label)
SELF_RATIOS_LABELLED = (
    ("drain_1m_vs_drain_c100", "drain_1m_per_s", "drain_per_s_c100",
     "drain 1M / drain 50k (c100)"),
    ("bulk_async_vs_sync", "bulk_enqueue_async_per_s", "bulk_enqueue_per_s",
     "bulk enqueue async / sync"),
    ("single_async_vs_sync", "single_enqueue_async_per_s", "single_enqueue_per_s",
     "single enqueue async / sync"),
)
SELF_RATIOS = tuple(r[:3] for r in SELF_RATIOS_LABELLED)


def assemble(args: argparse.Namespace, sz: dict[str, int], runs: int, big_runs: int,
             machine: dict[str, Any], figs: dict[str, Figure], ceilings: list[Ceiling],
             ceiling_note: str | None, extras: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"benchmark": "pgqueue", "mode": "quick" if args.quick else "full",
                           "runs": runs, "runs_drain_1m": big_runs,
                           "handler": "sync def" if args.sync_handler else "async def",
                           "event_loop": "uvloop" if getattr(args, "uvloop", False)
                           else "asyncio"}
    for name, f in figs.items():
        out[name] = rnd(f.median)
        out[name + "_min"] = rnd(f.min)
        out[name + "_max"] = rnd(f.max)
    ceil = {c.key: c for c in ceilings}
    for c in ceilings:
        out["ceiling_" + c.key] = rnd(c.value)
    ratios: dict[str, float | None] = {}
    for key, fig, ck, _ in RATIOS:
        fg, cl = figs.get(fig), ceil.get(ck)
        ratios[key] = (rnd(fg.median / cl.value) if fg is not None and fg.median
                       and cl is not None and cl.value else None)
    for key, num, den in SELF_RATIOS:
        a, b = figs.get(num), figs.get(den)
        ratios[key] = rnd(a.median / b.median) if a and b and a.median and b.median else None
    out["ratio"] = ratios
    failed = {name: f.errors for name, f in figs.items() if f.errors}
    if failed:
        out["failed_runs"] = failed
    out["ceiling"] = {c.key: c.as_json() for c in ceilings}
    if ceiling_note:
        out["ceiling_note"] = ceiling_note
    out["targets"] = targets(out)
    out["sizes"] = {"bulk_enqueue": sz["bulk"], "single_enqueue": sz["single"],
                    "drain_c1": sz["drain_c1"], "drain_c10": sz["drain"],
                    "drain_c100": sz["drain"], "drain_1m": sz["drain_big"],
                    "pickup_jobs": sz["pickup"], "pickup_spacing_ms": PICKUP_SPACING_S * 1000,
                    "pickup_worker_concurrency": PICKUP_CONCURRENCY,
                    "pgbench_T_s": sz["pgbench_T"]}
    out["details"] = extras
    machine["loadavg_at_end"] = loadavg()
    machine["pgqueue_changed_during_run"] = source_digest() != machine.get(
        "pgqueue_source_sha256")
    out["machine"] = machine
    out["command"] = " ".join(["python -m benchmarks.run", *(
        sys.argv[1:] if sys.argv and sys.argv[0].endswith("run.py") else [])])
    out["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return out


def targets(out: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, checked against this run (None when a figure is missing)."""
    r = out["ratio"]

    def check(value: Any, target: float, higher: bool = True) -> dict[str, Any]:
        met = None if value is None else (value >= target if higher else value <= target)
        return {"value": value, "target": (">= " if higher else "<= ") + f"{target:g}",
                "met": met}

    return {
        # issue 6's absolute figure (twice pgqueuer's best drain on the box of that issue)
        "drain_c100_abs": check(out.get("drain_per_s_c100"), 2 * PGQUEUER_BEST_DRAIN),
        # issue 16's targets
        "drain_c100_vs_claim_c4": check(r.get("drain_c100_vs_claim_c4"), 0.8),
        "drain_c10_vs_claim_c4": check(r.get("drain_c10_vs_claim_c4"), 0.5),
        "bulk_vs_insert_1000": check(r.get("bulk_vs_insert_1000"), 1.3),
        "bulk_async_vs_sync": check(r.get("bulk_async_vs_sync"), 0.9),
        "single_vs_insert_notify": check(r.get("single_vs_insert_notify"), 0.9),
        "single_async_vs_sync": check(r.get("single_async_vs_sync"), 0.85),
        "pickup_p50_ms": check(out.get("pickup_p50_ms"), 1.5, higher=False),
        "pickup_p99_ms": check(out.get("pickup_p99_ms"), 3.0, higher=False),
        "drain_1m_vs_drain_c100": check(r.get("drain_1m_vs_drain_c100"), 0.8),
        "worker_rss_mb": check(out.get("worker_rss_mb"), 50, higher=False),
    }


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (unit == "ms" or abs(v) < 100):
        return f"{v:,.2f}"
    return f"{v:,.0f}"


def _busy_summary(samples: list[float] | None) -> str:
    if not samples:
        return ""
    srt = sorted(samples)
    return (f"; machine busy just before each measurement: median {srt[len(srt) // 2]:.0f}%, "
            f"max {srt[-1]:.0f}%")


def render_table(res: dict[str, Any]) -> str:
    m = res["machine"]
    ps = m.get("pg_settings", {})
    lines = [
        "",
        f"pgqueue benchmark ({res['mode']} run, median of {res['runs']} runs"
        + (f"; {res['runs_drain_1m']} run of the large drain" if res["runs_drain_1m"] != res[
            "runs"] else "") + f", {res['handler']} no-op handler)",
        f"machine: {m.get('nproc')} CPUs ({m.get('cpu_model')}), {m.get('mem_total_mb'):,} MB "
        f"RAM, Python {m.get('python')}, psycopg {m.get('psycopg')}",
        f"server: PostgreSQL {m.get('postgres')} ({m.get('server')}); synchronous_commit="
        f"{ps.get('synchronous_commit')} fsync={ps.get('fsync')} "
        f"wal_sync_method={ps.get('wal_sync_method')} shared_buffers={ps.get('shared_buffers')} "
        f"autovacuum={ps.get('autovacuum')}",
        f"pgqueue {m.get('pgqueue')} at {m.get('pgqueue_commit')}"
        + (" (pgqueue/ differs from that commit)" if m.get("pgqueue_worktree_dirty") else "")
        + f", source digest {m.get('pgqueue_source_sha256')}",
        f"other load: {m.get('background_busy_pct_at_start')}% of all CPUs busy just before the "
        f"run; load average {m.get('loadavg_at_start')} at start, {m.get('loadavg_at_end')} at "
        "end" + _busy_summary(m.get("busy_pct_before_each_measurement")),
        "",
    ]
    if m.get("pgqueue_changed_during_run"):
        lines.insert(-1, "WARNING: pgqueue's source changed during the run: figures mix versions")
    head = f"{'figure':<28}{'size':>16}{'median':>11}{'min':>11}{'max':>11}  unit"
    lines += [head, "-" * len(head)]
    units = {"pickup": "ms", "worker_rss": "MB"}
    sizes = res["sizes"]
    size_of = {"bulk_enqueue_per_s": f"{sizes['bulk_enqueue']:,} jobs",
               "bulk_enqueue_async_per_s": f"{sizes['bulk_enqueue']:,} jobs",
               "single_enqueue_per_s": f"{sizes['single_enqueue']:,} jobs",
               "single_enqueue_async_per_s": f"{sizes['single_enqueue']:,} jobs",
               "drain_per_s_c1": f"{sizes['drain_c1']:,} jobs",
               "drain_per_s_c10": f"{sizes['drain_c10']:,} jobs",
               "drain_per_s_c100": f"{sizes['drain_c100']:,} jobs",
               "drain_1m_per_s": f"{sizes['drain_1m']:,} jobs",
               "pickup_p50_ms": f"{sizes['pickup_jobs']} jobs",
               "pickup_p95_ms": f"{sizes['pickup_jobs']} jobs",
               "pickup_p99_ms": f"{sizes['pickup_jobs']} jobs",
               "worker_rss_mb": f"{sizes['drain_c100']:,}, c100"}
    for name in size_of:
        if name not in res:
            continue
        unit = next((u for k, u in units.items() if name.startswith(k)), "jobs/s")
        nfail = len(res.get("failed_runs", {}).get(name, []))
        lines.append(f"{name:<28}{size_of[name]:>16}{_fmt(res[name], unit):>11}"
                     f"{_fmt(res[name + '_min'], unit):>11}{_fmt(res[name + '_max'], unit):>11}"
                     f"  {unit}" + (f"  ({nfail} run(s) FAILED, see failed_runs)"
                                    if nfail else ""))
    if res["ceiling"]:
        lines += ["", f"ceiling: pgbench -n -c N -j 2 -T {sizes['pgbench_T_s']} "
                  "(same database, same run)"]
        head = (f"{'ceiling':<48}{'value':>11}{'min 1s':>11}{'max 1s':>11}  unit    "
                "busy %")
        lines += [head, "-" * len(head)]
        for key, c in res["ceiling"].items():
            label = {"insert_bare_per_s": "(a) INSERT 1 row, autocommit, -c 1",
                     "insert_notify_tx_per_s": "(b) BEGIN; INSERT; pg_notify; COMMIT, -c 1",
                     "insert_one_tx_per_s": "(b') BEGIN; pgqueue insert_one; COMMIT, -c 1",
                     "insert_1000_rows_per_s": "(d) INSERT 1,000 rows/statement, -c 1",
                     "claim_complete_c1_jobs_per_s": "(c) claim 50 + finish_many, -c 1",
                     "claim_complete_c4_jobs_per_s": "(c) claim 50 + finish_many, -c 4",
                     }.get(key, key)
            lines.append(f"{label:<48}{_fmt(c['value']):>11}{_fmt(c['min_1s']):>11}"
                         f"{_fmt(c['max_1s']):>11}  {c['unit']:<8}"
                         f"{_fmt(c.get('machine_busy_pct'))}")
    elif res.get("ceiling_note"):
        lines += ["", f"ceiling: {res['ceiling_note']}"]
    lines += ["", f"{'ratio to ceiling':<48}{'value':>11}"]
    for key, _fig, _ck, label in RATIOS:
        lines.append(f"{label:<48}{_fmt(res['ratio'].get(key)):>11}")
    for key, _num, _den, label in SELF_RATIOS_LABELLED:
        lines.append(f"{label:<48}{_fmt(res['ratio'].get(key)):>11}")
    odd = [label for key, _fig, _ck, label in RATIOS if (res["ratio"].get(key) or 0) > 1.3
           and not key.startswith("bulk")]
    if odd:
        lines.append("WARNING: a figure far above its ceiling (" + "; ".join(odd) + ") means "
                     "that ceiling's pgbench run was disturbed by other work (see each "
                     "ceiling's machine_busy_pct and per_second in the JSON); run again")
    decayed = _decayed_ceilings(res)
    if decayed:
        autovacuum = res.get("machine", {}).get("pg_settings", {}).get("autovacuum")
        lines.append("WARNING: the claim+complete ceiling slowed down during its own run ("
                     + "; ".join(decayed) + ")" + (": this server runs with autovacuum off, so "
                     "pgbench's claims walk every dead entry its completions left"
                     if autovacuum == "off" else "") + ". The drains' ratios to it overstate "
                     "pgqueue (its workers vacuum the jobs table); measure on a server with "
                     "autovacuum on")
    lines += ["", f"{'target (issues 6, 16)':<40}{'value':>11}  {'target':<10}met"]
    for key, t in res["targets"].items():
        met = {True: "yes", False: "NO", None: "-"}[t["met"]]
        lines.append(f"{key:<40}{_fmt(t['value']):>11}  {t['target']:<10}{met}")
    d = res.get("details", {})
    for conc in (100, 10):
        if not d.get(f"drain_c{conc}"):
            continue
        lines += ["", f"drain at concurrency {conc}, per run: worker CPU % of one core / machine "
                  "busy % (of all CPUs) / transactions per job / WAL bytes per job / worker "
                  "and PostgreSQL CPU us per job / rows inserted, updated, deleted per job"]
        for k, r in enumerate(d[f"drain_c{conc}"]):
            rows = r.get("rows_per_job") or {}
            lines.append(f"  run {k + 1}: {_fmt(r['worker_cpu_pct_of_core'])} % / "
                         f"{_fmt(r['machine_busy_pct'])} % / {_fmt(r['xacts_per_job'])} / "
                         f"{_fmt(r['wal_bytes_per_job'])} / "
                         f"{_fmt(r.get('worker_cpu_us_per_job'))} + "
                         f"{_fmt(r.get('pg_cpu_us_per_job'))} us / "
                         + ", ".join(_fmt(rows.get(k)) for k in ("inserted", "updated",
                                                                  "deleted")))
    for r in d.get("drain_1m") or []:
        if r.get("jobs_per_s_by_tenth"):
            lines.append("large drain, jobs/s in each tenth of the backlog: " + " ".join(
                f"{x:,.0f}" for x in r["jobs_per_s_by_tenth"]) + f" (checkpoints during the "
                f"drain: {r.get('checkpoints', 0):.0f})")
    if d.get("drain_c100"):
        r = d["drain_c100"][0]
        if r.get("rss_mb_before_run"):
            lines.append(f"worker RSS: {r['rss_mb_before_run']:.1f} MB after imports, before "
                         f"connecting; peak {r['rss_mb']:.1f} MB (run 1, c100)")
    lines += ["", f"total time {res.get('duration_s', 0):.0f} s", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
