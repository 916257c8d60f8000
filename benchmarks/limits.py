"""Flow-control benchmark: what a queue limit costs the claim.

    python -m benchmarks.limits [--jobs N] [--runs N] [--concurrency C] [--dsn URL]

On a throwaway database (see :func:`benchmarks._common.throwaway_database`) it measures, each
the median of ``--runs`` runs, alternating the variants so that a busy machine hurts both alike:

- ``drain_unlimited_per_s``: ``--jobs`` no-op jobs drained by one in-process burst worker at
  ``--concurrency``, on a queue without limits (the plain one-statement claim);
- ``drain_limited_per_s``: the same with a global limit ten times the worker's concurrency
  (never binding: it measures the limited claim's own cost -- a queue-row lock and a count of
  running rows per claim), and its ratio to the unlimited drain;
- ``keyed_claim_ms``: the mean time of one limited claim of up to ``--concurrency`` jobs while
  the backlog holds 20 jobs for each of 1,000 distinct concurrency keys (``key_concurrency``
  high enough never to bind), and ``drain_keyed_per_s`` for that backlog.

Figures on a shared machine are indicative. Output: a table, then one JSON line.
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
from pgqueue.drivers.base import Finish


def _prefill(dsn: str, n: int, keys: int = 0) -> None:
    """``n`` waiting no-op jobs (with ``keys`` distinct concurrency keys, round-robin), then
    ANALYZE; earlier jobs, history and limits are removed."""
    t = sql.Identifier(SCHEMA)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql.SQL("TRUNCATE {s}.jobs, {s}.job_history, {s}.queue_starts, "
                          "{s}.workers").format(s=t))
        c.execute(sql.SQL("DELETE FROM {s}.queues").format(s=t))
        c.execute(sql.SQL(
            "INSERT INTO {s}.jobs (queue, task, args, concurrency_key) "
            "SELECT %s, %s, jsonb_build_object('i', g), "
            "       CASE WHEN %s > 0 THEN 'k' || (g %% %s) END "
            "FROM generate_series(1, %s) g").format(s=t), (QUEUE, TASK, keys, max(keys, 1), n))
        c.execute(sql.SQL("ANALYZE {s}.jobs").format(s=t))
        c.execute(sql.SQL("CHECKPOINT"))


def _drain(dsn: str, n: int, concurrency: int, limit: int | None,
           key_limit: int | None = None) -> float:
    """Jobs per second of one burst worker draining the prefilled queue."""
    app = make_app(dsn)
    if limit is not None or key_limit is not None:
        app.set_queue_limits(QUEUE, concurrency=limit, key_concurrency=key_limit)
    worker = app.worker([QUEUE], concurrency=concurrency, burst=True)
    t0 = time.perf_counter()
    asyncio.run(worker.run())
    elapsed = time.perf_counter() - t0
    with psycopg.connect(dsn) as c:
        done = c.execute(sql.SQL("SELECT count(*) FROM {}.job_history").format(
            sql.Identifier(SCHEMA))).fetchone()
    app.close()
    if done is None or done[0] != n:
        raise RuntimeError(f"drain ended with {done} jobs in history, expected {n}")
    return n / elapsed


def _claim_ms(dsn: str, concurrency: int, claims: int) -> float:
    """Mean milliseconds of one limited claim over the keyed backlog (each claim's jobs are
    completed before the next: the backlog shrinks by at most ``claims * concurrency``)."""
    app = make_app(dsn)
    app.set_queue_limits(QUEUE, key_concurrency=1_000_000)

    async def go() -> float:
        d = app.driver
        spent = 0.0
        for _ in range(claims):
            t0 = time.perf_counter()
            jobs = await d.claim([QUEUE], concurrency, worker_id="bench", lease_s=60)
            spent += time.perf_counter() - t0
            await d.finish_many([Finish(j.id, "succeeded", None, j.attempt) for j in jobs],
                                worker_id="bench")
        await d.aclose()
        return 1000 * spent / claims

    try:
        return asyncio.run(go())
    finally:
        app.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.limits",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (default 20,000)")
    p.add_argument("--runs", type=int, default=3, help="runs per variant (default 3)")
    p.add_argument("--concurrency", type=int, default=20, help="worker concurrency (20)")
    p.add_argument("--dsn", default=None, help="server (default: as benchmarks.run)")
    args = p.parse_args()
    server = choose_server(args.dsn)
    out: dict[str, Any] = {"jobs": args.jobs, "concurrency": args.concurrency}
    try:
        with throwaway_database(server.admin_dsn) as dsn:
            free: list[float] = []
            limited: list[float] = []
            for r in range(args.runs):
                for name, runs, limit in (("unlimited", free, None),
                                          ("limited", limited, 10 * args.concurrency)):
                    _prefill(dsn, args.jobs)
                    runs.append(_drain(dsn, args.jobs, args.concurrency, limit))
                    log(f"run {r + 1}: drain {name}: {runs[-1]:,.0f} jobs/s")
            _prefill(dsn, 20_000, keys=1000)
            out["keyed_claim_ms"] = _claim_ms(dsn, args.concurrency, 200)
            _prefill(dsn, 20_000, keys=1000)
            out["drain_keyed_per_s"] = _drain(dsn, 20_000, args.concurrency, None,
                                              key_limit=1_000_000)
            out["drain_unlimited_per_s"] = statistics.median(free)
            out["drain_limited_per_s"] = statistics.median(limited)
            out["limited_vs_unlimited"] = out["drain_limited_per_s"] / out[
                "drain_unlimited_per_s"]
            out["runs"] = {"unlimited": free, "limited": limited}
    finally:
        server.stop()
    for k in ("drain_unlimited_per_s", "drain_limited_per_s", "limited_vs_unlimited",
              "keyed_claim_ms", "drain_keyed_per_s"):
        print(f"{k:24} {out[k]:,.3f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
