"""Drain throughput while a long transaction holds back vacuum (issue 16, "held snapshot").

    python -m benchmarks.held_snapshot [--jobs 50000] [--cycles 5] [--concurrency 100]
                                       [--pickup 200] [--dsn URL] [--quick]

On a throwaway database (same server choice as ``benchmarks.run``), two series of ``--cycles``
cycles, each cycle "enqueue ``--jobs`` jobs (server-side INSERT), then drain them with ONE burst
worker process at ``--concurrency``":

1. **free**: nothing else open; the worker's own vacuum (and autovacuum, if on) may clean up;
2. **held**: first a second connection opens ``BEGIN ISOLATION LEVEL REPEATABLE READ`` and takes
   its snapshot (``SELECT 1``: no lock on pgqueue's tables), and keeps it open through all the
   cycles -- as a long report, a forgotten ``psql`` session or a replica with
   ``hot_standby_feedback`` would. No row deleted or updated after that snapshot can be removed
   by vacuum, so the hot table and its indexes only grow.

Tables are emptied (TRUNCATE) only before each series, never between cycles. Per cycle: jobs/s,
the jobs table's dead tuples (``pg_stat_user_tables.n_dead_tup``), its size with indexes
(``pg_total_relation_size``), and the size of the claim index. The figure the issue asks for is
the last held cycle's throughput as a ratio of the first free cycle's (target >= 0.7).

After each series, on the tables as its cycles left them (and, for the held series, with the
snapshot still held), the pickup latency of an idle worker: ``--pickup`` jobs enqueued one per
transaction 20 ms apart, from each COMMIT to its handler's start (as ``benchmarks.run``'s
pickup, without emptying the tables first). A worker at low load claims one job per wake-up,
so this is the figure for everything but a saturated drain.

Prints a table and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks._common import (
    Children,
    Db,
    choose_server,
    log,
    sigterm_as_interrupt,
    source_digest,
    throwaway_database,
)
from benchmarks._tasks import SCHEMA
from benchmarks.run import Bench


def table_sizes(db: Db) -> dict[str, float]:
    """Dead tuples, and the size (MB) of ``jobs`` with its indexes and of each index."""
    db.conn.execute("SELECT pg_stat_clear_snapshot()")
    dead = db.one("SELECT n_dead_tup FROM pg_stat_user_tables "
                  "WHERE schemaname = %s AND relname = 'jobs'", (SCHEMA,))
    total = db.one("SELECT pg_total_relation_size(format('%%I.jobs', %s::text)::regclass)",
                   (SCHEMA,))
    heap = db.one("SELECT pg_relation_size(format('%%I.jobs', %s::text)::regclass)", (SCHEMA,))
    out = {"dead_tuples": float(dead or 0), "jobs_total_mb": (total or 0) / 2**20,
           "jobs_heap_mb": (heap or 0) / 2**20}
    for name, size in db.conn.execute(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = %s AND t.relname = 'jobs'", (SCHEMA,)).fetchall():
        out[f"index_mb.{name}"] = size / 2**20
    return out


def series(bench: Bench, db: Db, n: int, cycles: int, concurrency: int,
           hold: bool, pickup: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """``cycles`` enqueue-then-drain cycles; with ``hold``, under one REPEATABLE READ snapshot
    opened before the first and closed after the last. Then, with ``pickup``, the pickup
    latency of an idle worker over that many jobs, on the tables as the cycles left them (and
    the snapshot still held)."""
    db.reset()
    db.settle()
    holder = psycopg.connect(bench.dsn, autocommit=True) if hold else None
    try:
        if holder is not None:
            holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            holder.execute("SELECT 1")  # the snapshot is taken here and kept
        out = []
        for k in range(cycles):
            db.prefill(n)
            before = table_sizes(db)
            path = bench.workdir / f"held-{hold}-{k}-{time.monotonic_ns()}.json"
            proc, logf = bench.spawn_worker("drain", concurrency, path)
            r = bench.wait_worker(proc, logf, path, timeout=max(120.0, n / 100))
            left, _ = db.counts()
            if left != 0:
                raise RuntimeError(f"cycle {k + 1}: {left} jobs left after the drain")
            time.sleep(0.2)  # the exited worker's backends flush their statistics
            after = table_sizes(db)
            rate = n / (r["t_end"] - r["t0"])
            out.append({"cycle": k + 1, "jobs_per_s": rate,
                        "worker_cpu_us_per_job": 1e6 * (r["cpu_user_s"] + r["cpu_sys_s"]) / n,
                        "before_drain": before, "after_drain": after})
            log(f"  {'held' if hold else 'free'} cycle {k + 1}: {rate:,.0f} jobs/s, "
                f"{after['dead_tuples']:,.0f} dead tuples, jobs {after['jobs_total_mb']:.1f} MB "
                "with indexes")
        lat = bench.pickup(pickup, reset=False) if pickup else None
        if lat is not None:
            log(f"  {'held' if hold else 'free'} pickup: p50 {lat['p50']:.2f} ms, "
                f"p95 {lat['p95']:.2f}, p99 {lat['p99']:.2f}")
        return out, lat
    finally:
        if holder is not None:
            holder.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.held_snapshot",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default=None)
    p.add_argument("--embedded", action="store_true")
    p.add_argument("--jobs", type=int, default=50_000)
    p.add_argument("--cycles", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--pickup", type=int, default=200,
                   help="jobs of the idle-worker pickup after each series (0: none)")
    p.add_argument("--quick", action="store_true", help="10,000 jobs per cycle")
    a = p.parse_args(argv)
    n = 10_000 if a.quick else a.jobs
    sigterm_as_interrupt()
    children = Children()
    server = None
    try:
        server = choose_server(a.dsn, embedded=a.embedded)
        with tempfile.TemporaryDirectory(prefix="pgqueue-held-") as tmp, \
                throwaway_database(server.admin_dsn) as dsn:
            db = Db(dsn)
            try:
                args = argparse.Namespace(quick=True, wait_quiet=0.0, sync_handler=False,
                                          metrics=False, tracing=False)
                bench = Bench(args, dsn, db, children, Path(tmp))
                log(f"{a.cycles} cycles of {n:,} jobs, concurrency {a.concurrency}: free")
                free, free_pickup = series(bench, db, n, a.cycles, a.concurrency, hold=False,
                                           pickup=a.pickup)
                log("the same with one REPEATABLE READ snapshot held throughout")
                held, held_pickup = series(bench, db, n, a.cycles, a.concurrency, hold=True,
                                           pickup=a.pickup)
            finally:
                children.kill_all()
                db.close()
    except KeyboardInterrupt:
        log("interrupted: stopping subprocesses and dropping the benchmark database")
        return 130
    finally:
        children.kill_all()
        if server is not None:
            server.stop()
    print(f"{'cycle':>5} {'free jobs/s':>12} {'held jobs/s':>12} {'held dead tuples':>17} "
          f"{'held jobs MB':>13} {'free jobs MB':>13}")
    for f, h in zip(free, held, strict=True):
        print(f"{f['cycle']:>5} {f['jobs_per_s']:>12,.0f} {h['jobs_per_s']:>12,.0f} "
              f"{h['after_drain']['dead_tuples']:>17,.0f} "
              f"{h['after_drain']['jobs_total_mb']:>13.1f} "
              f"{f['after_drain']['jobs_total_mb']:>13.1f}")
    ratio = held[-1]["jobs_per_s"] / free[0]["jobs_per_s"]
    print(f"last held cycle / first free cycle: {ratio:.2f} (target >= 0.7)")
    for name, lat in (("free", free_pickup), ("held", held_pickup)):
        if lat is not None:
            print(f"idle-worker pickup after the {name} cycles: p50 {lat['p50']:.2f} ms, "
                  f"p95 {lat['p95']:.2f} ms, p99 {lat['p99']:.2f} ms")
    print(json.dumps({"benchmark": "held_snapshot", "jobs_per_cycle": n, "cycles": a.cycles,
                      "concurrency": a.concurrency, "free": free, "held": held,
                      "last_held_vs_first_free": round(ratio, 3),
                      "pickup_jobs": a.pickup, "free_pickup_ms": free_pickup,
                      "held_pickup_ms": held_pickup,
                      "source": source_digest()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
