"""A burst onto an idle worker: how fast a worker that has been idle drains a large batch.

    python -m benchmarks.burst [--jobs N] [--concurrency C] [--runs N] [--dsn URL]

On a throwaway database (see :func:`benchmarks._common.throwaway_database`), each run starts
from an empty, freshly analyzed jobs table and one in-process worker at ``--concurrency``. The
worker runs 30 jobs enqueued one at a time, 20 ms apart, which is enough for its connections to
prepare the claim and the completion. Then ``--jobs`` no-op jobs arrive in one
``enqueue_many``, and the run measures the time until the jobs table is empty.

It also records the jobs left after each second. The statements those connections cached were
planned for a table of a few rows; a plan made then reads all of the table. What that costs
depends on how soon the plans are made again: see ``vacuum_if_needed`` in the PostgreSQL driver
and docs/performance.md, "fifth round".

Figures on a shared machine are indicative. Output: one line per run, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import psycopg
from psycopg import sql

from benchmarks._common import choose_server, log, throwaway_database
from benchmarks._tasks import QUEUE, SCHEMA, TASK, make_app

WARM_JOBS = 30
WARM_SPACING_S = 0.02


def _empty(dsn: str) -> None:
    """No jobs, no history, and a jobs table whose file and statistics are those of an empty
    table (as on a queue that has been idle since its last vacuum)."""
    t = sql.Identifier(SCHEMA)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql.SQL("TRUNCATE {}.jobs, {}.job_history CASCADE").format(t, t))
        c.execute(sql.SQL("VACUUM ANALYZE {}.jobs").format(t))


def _run(dsn: str, n: int, concurrency: int) -> dict[str, Any]:
    _empty(dsn)
    app = make_app(dsn)

    async def go() -> dict[str, Any]:
        worker = app.worker([QUEUE], concurrency=concurrency)
        running = asyncio.create_task(worker.run())
        try:
            for i in range(WARM_JOBS):
                await app.enqueue_async(TASK, {"i": i})
                await asyncio.sleep(WARM_SPACING_S)
            await app.enqueue_many_async(TASK, [{"i": i} for i in range(n)])
            t0 = time.perf_counter()
            left_by_second: list[int] = []
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
                while True:
                    cur = await c.execute(sql.SQL("SELECT count(*) FROM {}.jobs").format(
                        sql.Identifier(SCHEMA)))
                    row = await cur.fetchone()
                    left = int(row[0]) if row else 0
                    if left == 0:
                        break
                    left_by_second.append(left)
                    await asyncio.sleep(1.0)
            elapsed = time.perf_counter() - t0
        finally:
            worker.stop()
            await running
            await app.driver.aclose()  # its async pools are bound to this event loop
        return {"elapsed_s": elapsed, "jobs_per_s": n / elapsed, "left_by_second": left_by_second}

    try:
        return asyncio.run(go())
    finally:
        app.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.burst",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=200_000, help="jobs in the burst (200,000)")
    p.add_argument("--concurrency", type=int, default=100, help="worker concurrency (100)")
    p.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    p.add_argument("--dsn", default=None, help="server (default: as benchmarks.run)")
    args = p.parse_args()
    server = choose_server(args.dsn)
    runs: list[dict[str, Any]] = []
    try:
        with throwaway_database(server.admin_dsn) as dsn:
            for r in range(args.runs):
                runs.append(_run(dsn, args.jobs, args.concurrency))
                log(f"run {r + 1}: {args.jobs:,} jobs drained in {runs[-1]['elapsed_s']:.1f} s "
                    f"({runs[-1]['jobs_per_s']:,.0f} jobs/s); left after each second: "
                    f"{runs[-1]['left_by_second']}")
    finally:
        server.stop()
    out = {"jobs": args.jobs, "concurrency": args.concurrency, "runs": runs,
           "jobs_per_s_median": statistics.median(r["jobs_per_s"] for r in runs)}
    print(f"burst of {args.jobs:,} jobs onto an idle worker (concurrency {args.concurrency}): "
          f"median {out['jobs_per_s_median']:,.0f} jobs/s over {args.runs} run(s)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
