"""Drains by a worker process of this checkout and of another tree, alternately, in ONE run:
the before/after of a change to the worker's claim loop (issue 16: overlapping claims).

    git archive 989ac9f pgqueue | tar -x -C /tmp/claim-overlap   # or: main, a branch, ...
    python -m benchmarks.claim_overlap --other-tree /tmp/claim-overlap --dsn URL \\
        [--rounds 3] [--jobs 20000] [--concurrency 10,100] [--count-calls]

(``989ac9f`` is the producer with up to two claims in flight, measured and reverted: see
docs/performance.md, "Overlapping claims".)

Each round drains ``--jobs`` pre-enqueued no-op jobs at each concurrency once with each tree
(the order flips every round), exactly as ``benchmarks.run``'s drain figures do (one worker
process, burst mode, all done checked in the database). The 4-client pgbench claim+complete
ceiling is measured before the first and after the last round. Reported: every drain (jobs/s,
worker CPU, machine busy, load average), per concurrency the median of each tree, the ratio
this/other of each round and its median, and each median as a share of the ceiling. The
other tree only needs its ``pgqueue`` package; the schema is this checkout's (migrated here).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks._ceiling import CeilingRunner, find_pgbench
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
    p = argparse.ArgumentParser(prog="python -m benchmarks.claim_overlap",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--other-tree", type=Path, required=True,
                   help="a directory holding the pgqueue package to compare with")
    p.add_argument("--dsn", default=None, help="server (a throwaway database is created)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (default 20000)")
    p.add_argument("--concurrency", default="10,100", help="comma-separated (default 10,100)")
    p.add_argument("--count-calls", action="store_true",
                   help="workers count their driver calls (claims: how many, rows asked and "
                        "got; adds a few us per call, to both trees alike)")
    p.add_argument("--ceiling-seconds", type=int, default=5,
                   help="pgbench -T of the ceiling (default 5; 0: no ceiling)")
    args = p.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    return run_on_throwaway(args.dsn, "pgqueue-claim-", lambda dsn, db, children, workdir: _run(
        args, concurrencies, dsn, db, children, workdir))


def _run(args: argparse.Namespace, concurrencies: list[int], dsn: str, db: Db,
         children: Children, workdir: Path) -> dict[str, Any]:
    trees = {"this": REPO, "other": other_tree_dir(args.other_tree, workdir)}
    bench_args = argparse.Namespace(quick=True, sync_handler=False, metrics=False,
                                    tracing=False, wait_quiet=0.0)
    b = Bench(bench_args, dsn, db, children, workdir)
    if args.count_calls:
        b.worker_extra = ["--count-calls"]
    pgbench = find_pgbench() if args.ceiling_seconds > 0 else None
    runner = (CeilingRunner(pgbench, db, children, args.ceiling_seconds, workdir)
              if pgbench else None)
    ceilings: list[float] = []

    def ceiling() -> None:
        if runner is not None:
            c = runner.claim_complete(4, 20_000)
            ceilings.append(c.value)
            log(f"ceiling claim+complete, 4 clients: {c.value:,.0f} jobs/s "
                f"(busy {c.machine_busy_pct or 0:.0f}%, load {loadavg()})")

    drains: list[dict[str, Any]] = []
    try:
        ceiling()
        for r in range(args.rounds):
            for c in concurrencies:
                order = ["this", "other"] if r % 2 == 0 else ["other", "this"]
                for name in order:
                    b.worker_tree = trees[name]
                    res = b.drain(args.jobs, c, f"{name}-c{c}")
                    row = {"round": r + 1, "concurrency": c, "tree": name,
                           "jobs_per_s": round(res["jobs_per_s"]),
                           "worker_cpu_pct_of_core": round(res["worker_cpu_pct_of_core"]),
                           "machine_busy_pct": round(res["machine_busy_pct"] or 0),
                           "loadavg": loadavg()}
                    claims = (res.get("calls") or {}).get("claim")
                    if claims:
                        row["claims"] = {k: round(v, 3) for k, v in claims.items()}
                    drains.append(row)
                    log(f"round {r + 1} c{c} {name:5}: {row['jobs_per_s']:>6,} jobs/s, "
                        f"worker {row['worker_cpu_pct_of_core']}% of a core, machine "
                        f"{row['machine_busy_pct']}% busy, load {row['loadavg']}"
                        + (f", claims {row['claims']}" if claims else ""))
        ceiling()
    finally:
        b.app.close()
    summary: dict[str, Any] = {}
    ceiling_v = statistics.median(ceilings) if ceilings else None
    for c in concurrencies:
        by = {t: [d["jobs_per_s"] for d in drains if d["concurrency"] == c and d["tree"] == t]
              for t in trees}
        ratios = [this / other for this, other in zip(by["this"], by["other"], strict=True)]
        med = {t: statistics.median(v) for t, v in by.items()}
        summary[f"c{c}"] = {
            "this_median": med["this"], "other_median": med["other"],
            "ratio_by_round": [round(x, 3) for x in ratios],
            "ratio_median": round(statistics.median(ratios), 3),
            "this_of_ceiling": round(med["this"] / ceiling_v, 3) if ceiling_v else None,
            "other_of_ceiling": round(med["other"] / ceiling_v, 3) if ceiling_v else None}
        log(f"c{c}: this {med['this']:,.0f} jobs/s, other {med['other']:,.0f} jobs/s, "
            f"this/other by round {summary[f'c{c}']['ratio_by_round']} (median "
            f"{summary[f'c{c}']['ratio_median']}); of the ceiling: this "
            f"{summary[f'c{c}']['this_of_ceiling']}, other "
            f"{summary[f'c{c}']['other_of_ceiling']}")
    return {"jobs": args.jobs, "rounds": args.rounds, "ceilings_jobs_per_s": ceilings,
            "summary": summary, "drains": drains, "other_tree": str(args.other_tree),
            "other_tree_same_schema": same_schema(args.other_tree),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


if __name__ == "__main__":
    raise SystemExit(main())
