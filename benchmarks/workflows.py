"""Workflow benchmark: a fan-out of N children with one fan-in against N independent jobs.

    python -m benchmarks.workflows [--jobs N] [--runs N] [--processes P] [--dsn URL]

On a throwaway database (see :func:`benchmarks._common.throwaway_database`), alternating the two
variants run by run so that a busy machine hurts both alike, each the median of ``--runs``:

- ``independent_s``: ``--jobs`` independent no-op jobs (one ``enqueue_many``) drained by
  ``--processes`` burst worker processes;
- ``fan_out_s``: ``group(child x N).then(fanin)`` (one ``enqueue_workflow``) drained the same
  way: every child's completion releases the fan-in's edge in its own transaction (children are
  *watched*), and the fan-in runs once, with the N results in order;
- ``ratio``: ``fan_out_s / independent_s`` (the acceptance bound of issue 17 is 2).

Times run from the workers' start to the exit of the last one (process start-up included in
both). Figures on a shared machine are indicative. Output: a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import pgqueue
from benchmarks._common import choose_server, log, throwaway_database
from pgqueue import group

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "wfbench"

#: the app the worker processes load (``benchmarks.workflows:app``; database from the env)
app = pgqueue.App()


@app.task(name="wfbench.child", queue=QUEUE)
async def child(i: int = 0) -> int:
    return i


@app.task(name="wfbench.fanin", queue=QUEUE)
async def fanin(parts: list[int]) -> int:
    return sum(parts)


def _reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql.SQL("TRUNCATE {s}.jobs, {s}.job_history, {s}.job_deps, {s}.workflow_jobs, "
                          "{s}.workers").format(s=sql.Identifier("pgqueue")))
        c.execute("CHECKPOINT")


def _drain(dsn: str, processes: int, concurrency: int) -> float:
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "worker",
                               "benchmarks.workflows:app", "--burst", "--concurrency",
                               str(concurrency), "--poll-interval", "0.2"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(processes)]
    for p in procs:
        if p.wait(timeout=1800) != 0:
            raise RuntimeError(f"a worker exited with {p.returncode}")
    return time.perf_counter() - t0


def _check(dsn: str, expected: int) -> None:
    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT count(*) FROM pgqueue.job_history").fetchone()
        live = c.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()
    if row is None or row[0] != expected or live is None or live[0] != 0:
        raise RuntimeError(f"drain ended with {row} finished and {live} live jobs, "
                           f"expected {expected} finished")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.workflows",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=10_000, help="children / jobs (10,000)")
    p.add_argument("--runs", type=int, default=3, help="runs per variant (default 3)")
    p.add_argument("--processes", type=int, default=4, help="worker processes (4)")
    p.add_argument("--concurrency", type=int, default=20, help="per process (20)")
    p.add_argument("--dsn", default=None, help="server (default: as benchmarks.run)")
    args = p.parse_args()
    server = choose_server(args.dsn)
    out: dict[str, Any] = {"jobs": args.jobs, "processes": args.processes,
                           "concurrency": args.concurrency}
    independent: list[float] = []
    fan_out: list[float] = []
    try:
        with throwaway_database(server.admin_dsn) as dsn:
            app.use_database(dsn)
            for r in range(args.runs):
                _reset(dsn)
                app.enqueue_many("wfbench.child", [{"i": i} for i in range(args.jobs)])
                independent.append(_drain(dsn, args.processes, args.concurrency))
                _check(dsn, args.jobs)
                log(f"run {r + 1}: {args.jobs:,} independent jobs: {independent[-1]:.2f} s")
                _reset(dsn)
                run = group(*(child.s(i=i) for i in range(args.jobs))).then(
                    fanin.s()).enqueue()
                fan_out.append(_drain(dsn, args.processes, args.concurrency))
                _check(dsn, args.jobs + 1)
                if app.result(run.last[0], timeout=60) != args.jobs * (args.jobs - 1) // 2:
                    raise RuntimeError("the fan-in's result is wrong")
                log(f"run {r + 1}: fan-out of {args.jobs:,} + fan-in: {fan_out[-1]:.2f} s")
            app.close()
    finally:
        server.stop()
    out["independent_s"] = statistics.median(independent)
    out["fan_out_s"] = statistics.median(fan_out)
    out["ratio"] = out["fan_out_s"] / out["independent_s"]
    out["runs"] = {"independent": independent, "fan_out": fan_out}
    for k in ("independent_s", "fan_out_s", "ratio"):
        print(f"{k:16} {out[k]:,.3f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
