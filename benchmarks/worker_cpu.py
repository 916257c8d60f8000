"""The worker's CPU per job, this checkout against another tree, drains interleaved in ONE run
(issue 16, worker side: less Python per job).

    git archive main pgqueue | tar -x -C /tmp/old      # or any commit, a branch, ...
    python -m benchmarks.worker_cpu --other-tree /tmp/old --dsn URL \\
        [--rounds 4] [--jobs 20000] [--concurrency 10,100] [--cprofile]

Each round drains ``--jobs`` pre-enqueued no-op jobs at each concurrency once with each tree
(the order flips every round), exactly as ``benchmarks.run``'s drain figures do (one worker
process, burst mode, all done checked in the database). CPU time per job of the worker process
(``getrusage``, user + system, over ``Worker.run()``) is the figure that survives a busy box;
jobs/s and PostgreSQL's CPU per job are reported beside it. ``--cprofile`` adds one more drain
per tree and concurrency under cProfile: Python function calls per job (deterministic).
Reported: every drain, and per concurrency each tree's best and median CPU per job, the ratio
this/other of the medians, and the calls per job.
"""

from __future__ import annotations

import argparse
import pstats
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    REPO,
    Children,
    Db,
    loadavg,
    log,
    other_tree_dir,
    run_on_throwaway,
    same_schema,
)
from benchmarks.run import Bench


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.worker_cpu",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--other-tree", type=Path, required=True,
                   help="a directory holding the pgqueue package to compare with")
    p.add_argument("--dsn", default=None, help="server (a throwaway database is created)")
    p.add_argument("--rounds", type=int, default=4,
                   help="rounds (default 4; 0 with --cprofile: call counts only)")
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (default 20000)")
    p.add_argument("--concurrency", default="10,100", help="comma-separated (default 10,100)")
    p.add_argument("--cprofile", action="store_true",
                   help="also one drain per tree and concurrency under cProfile: calls/job")
    p.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                   help="an extra argument for both trees' worker processes (repeatable), "
                        "e.g. --worker-arg=--sync-handler")
    p.add_argument("--this-worker-arg", action="append", default=[], metavar="ARG",
                   help="an extra argument for this checkout's worker only (repeatable): with "
                        "--other-tree pointing here too, e.g. --this-worker-arg=--uvloop "
                        "compares uvloop with asyncio's own loop")
    args = p.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    return run_on_throwaway(args.dsn, "pgqueue-cpu-", lambda dsn, db, children, workdir: _run(
        args, concurrencies, dsn, db, children, workdir))


def _calls_per_job(path: Path, jobs: int) -> float:
    stats: Any = pstats.Stats(str(path))
    return float(sum(v[1] for v in stats.stats.values())) / jobs


def _run(args: argparse.Namespace, concurrencies: list[int], dsn: str, db: Db,
         children: Children, workdir: Path) -> dict[str, Any]:
    trees = {"this": REPO, "other": other_tree_dir(args.other_tree, workdir)}
    bench_args = argparse.Namespace(quick=True, sync_handler=False, metrics=False,
                                    tracing=False, wait_quiet=0.0)
    b = Bench(bench_args, dsn, db, children, workdir)
    drains: list[dict[str, Any]] = []
    calls: dict[str, dict[str, float]] = {}
    try:
        for r in range(args.rounds):
            for c in concurrencies:
                order = ["this", "other"] if r % 2 == 0 else ["other", "this"]
                for name in order:
                    b.worker_tree = trees[name]
                    b.worker_extra = [*args.worker_arg,
                                      *(args.this_worker_arg if name == "this" else [])]
                    res = b.drain(args.jobs, c, f"{name}-c{c}")
                    row = {"round": r + 1, "concurrency": c, "tree": name,
                           "jobs_per_s": round(res["jobs_per_s"]),
                           "worker_cpu_us_per_job": round(res["worker_cpu_us_per_job"], 1),
                           "pg_cpu_us_per_job": (round(res["pg_cpu_us_per_job"], 1)
                                                 if res["pg_cpu_us_per_job"] is not None
                                                 else None),
                           "worker_cpu_pct_of_core": round(res["worker_cpu_pct_of_core"]),
                           "machine_busy_pct": round(res["machine_busy_pct"] or 0),
                           "loadavg": loadavg()}
                    drains.append(row)
                    log(f"round {r + 1} c{c} {name:5}: {row['jobs_per_s']:>6,} jobs/s, "
                        f"worker {row['worker_cpu_us_per_job']} us/job "
                        f"({row['worker_cpu_pct_of_core']}% of a core), PostgreSQL "
                        f"{row['pg_cpu_us_per_job']} us/job, machine "
                        f"{row['machine_busy_pct']}% busy, load {row['loadavg']}")
        if args.cprofile:
            for c in concurrencies:
                for name in ("this", "other"):
                    prof = workdir / f"{name}-c{c}.prof"
                    b.worker_tree = trees[name]
                    b.worker_extra = [*args.worker_arg,
                                      *(args.this_worker_arg if name == "this" else []),
                                      "--cprofile", str(prof)]
                    b.drain(args.jobs, c, f"prof-{name}-c{c}")
                    calls.setdefault(f"c{c}", {})[name] = round(
                        _calls_per_job(prof, args.jobs), 1)
                    log(f"cProfile c{c} {name}: {calls[f'c{c}'][name]} calls/job")
    finally:
        b.app.close()
    summary: dict[str, Any] = {}
    for c in concurrencies:
        out: dict[str, Any] = {}
        if not args.rounds:  # --rounds 0 --cprofile: call counts only
            summary[f"c{c}"] = {"calls_per_job": calls.get(f"c{c}")}
            log(f"c{c}: calls/job {calls.get(f'c{c}')}")
            continue
        for t in trees:
            mine = [d for d in drains if d["concurrency"] == c and d["tree"] == t]
            cpu = [d["worker_cpu_us_per_job"] for d in mine]
            pg = [d["pg_cpu_us_per_job"] for d in mine if d["pg_cpu_us_per_job"] is not None]
            out[t] = {"cpu_us_per_job_min": min(cpu),
                      "cpu_us_per_job_median": statistics.median(cpu),
                      "jobs_per_s_median": statistics.median(d["jobs_per_s"] for d in mine),
                      "pg_cpu_us_per_job_median": statistics.median(pg) if pg else None}
        out["cpu_ratio_median"] = round(out["this"]["cpu_us_per_job_median"]
                                        / out["other"]["cpu_us_per_job_median"], 3)
        if f"c{c}" in calls:
            out["calls_per_job"] = calls[f"c{c}"]
        summary[f"c{c}"] = out
        log(f"c{c}: worker CPU us/job this {out['this']['cpu_us_per_job_median']} (best "
            f"{out['this']['cpu_us_per_job_min']}), other "
            f"{out['other']['cpu_us_per_job_median']} (best "
            f"{out['other']['cpu_us_per_job_min']}): this/other {out['cpu_ratio_median']}; "
            f"jobs/s this {out['this']['jobs_per_s_median']:,.0f}, other "
            f"{out['other']['jobs_per_s_median']:,.0f}"
            + (f"; calls/job {out['calls_per_job']}" if "calls_per_job" in out else ""))
    return {"jobs": args.jobs, "rounds": args.rounds, "summary": summary, "drains": drains,
            "other_tree": str(args.other_tree),
            "other_tree_same_schema": same_schema(args.other_tree), "worker_args": args.worker_arg,
            "this_worker_args": args.this_worker_arg,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


if __name__ == "__main__":
    raise SystemExit(main())
