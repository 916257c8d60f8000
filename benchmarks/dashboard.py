"""The dashboard's server time per page with 1,000,000 jobs and 1,000,000 history rows.

    python -m benchmarks.dashboard [--dsn URL] [--jobs N] [--history N] [--repeat N]

Server: ``--dsn``, else ``PGQUEUE_DATABASE_URL`` / ``DATABASE_URL``, else 127.0.0.1:5432, else
the embedded server; a throwaway database ``pgqueue_bench_<hex>`` is created, migrated, filled
with ``generate_series`` and dropped at the end. Run it on a server of your own: the fill
writes about 1 GB.

The data: ``--jobs`` live jobs over 10 queues and 20 tasks (90 % waiting, 5 % scheduled, 5 %
running), ``--history`` finished jobs spread evenly over the last 24 hours (so the last hour,
which the overview's chart reads, holds 1/24 of them), 20,000 archived failures with a
traceback each, 20 workers; then ``ANALYZE``, and ``VACUUM`` of ``jobs`` and ``failed_jobs``
until their visibility maps cover them (see :func:`vacuum`).

Server time: each page is requested in-process through the ASGI app (no network, no browser),
``--repeat`` times after one warm-up; the median and the slowest are printed in milliseconds,
target under 300 ms each. Progress goes to stderr; stdout gets the table and, as its last line,
one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import psycopg
from starlette.testclient import TestClient

import pgqueue
import pgqueue.dashboard
from benchmarks._common import choose_server, log, throwaway_database
from benchmarks._tasks import SCHEMA

TARGET_MS = 300.0

FILL = """
INSERT INTO {s}.jobs (queue, task, args, priority, run_at, state, attempt, worker_id,
                      started_at, created_at, lease_expires_at)
SELECT 'q' || (i % 10), 't' || (i % 20),
       jsonb_build_object('n', i, 'user', i % 1000, 'note', 'some text for the job'),
       20, now() + CASE WHEN i % 20 = 1 THEN interval '1 hour'
                        ELSE -(i % 3600) * interval '1 s' END,
       CASE WHEN i % 20 = 2 THEN 'running' ELSE 'waiting' END,
       CASE WHEN i % 20 = 2 THEN 1 ELSE 0 END,
       CASE WHEN i % 20 = 2 THEN 'worker-' || (i % 20) END,
       CASE WHEN i % 20 = 2 THEN now() END,
       now() - (i % 3600) * interval '1 s',
       CASE WHEN i % 20 = 2 THEN now() + interval '10 minutes' END
  FROM generate_series(1, %(jobs)s) AS i;

INSERT INTO {s}.job_history (id, queue, task, args, priority, state, attempt, max_attempts,
                             result, worker_id, enqueued_at, started_at, finished_at)
SELECT 100000000 + i, 'q' || (i % 10), 't' || (i % 20),
       jsonb_build_object('n', i, 'user', i % 1000), 20,
       CASE WHEN i % 50 = 0 THEN 'cancelled' ELSE 'succeeded' END, 1, 25, 'true'::jsonb,
       'worker-' || (i % 20), f - interval '3 s', f - interval '1 s', f
  FROM generate_series(1, %(history)s) AS i,
       LATERAL (SELECT now() - (i::float8 / %(history)s) * interval '24 hours' AS f) t;

INSERT INTO {s}.failed_jobs (id, queue, task, args, priority, attempt, max_attempts, errors,
                             reason, enqueued_at, started_at, failed_at)
SELECT 200000000 + i, 'q' || (i % 10), 't' || (i % 20), jsonb_build_object('n', i), 20, 3, 3,
       jsonb_build_array(jsonb_build_object(
           'attempt', 3, 'error', 'ValueError: failure ' || i, 'at', now()::text,
           'traceback', 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError')),
       'ValueError: failure ' || i, now() - interval '1 hour', now() - interval '1 hour',
       now() - (i % 86400) * interval '1 s'
  FROM generate_series(1, 20000) AS i;

INSERT INTO {s}.workers (id, host, pid, queues, concurrency, heartbeat_at)
SELECT 'worker-' || i, 'host-' || (i % 4), 1000 + i, ARRAY['q' || (i % 10)], 10,
       now() - (i % 3) * interval '40 s'
  FROM generate_series(0, 19) AS i;
"""


def fill(dsn: str, jobs: int, history: int) -> None:
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET synchronous_commit = off")
        for statement in FILL.split(";\n\n"):
            # the sizes are ints from argparse; no parameters, so '%' stays the modulo operator
            c.execute(statement.replace("{s}", SCHEMA).replace("%(jobs)s", str(int(jobs)))
                      .replace("%(history)s", str(int(history))))
        c.execute(f"ANALYZE {SCHEMA}.job_history")
        vacuum(c, "jobs")
        vacuum(c, "failed_jobs")
    log(f"filled in {time.perf_counter() - started:.0f} s")


def vacuum(c: psycopg.Connection[Any], table: str, tries: int = 10) -> None:
    """``VACUUM ANALYZE`` ``table`` until its visibility map covers it, as autovacuum leaves a
    backlog that has waited (index-only scans skip the heap only on all-visible pages). A
    VACUUM that runs while another snapshot is open in the database (autovacuum analyzing
    the rows just inserted) can mark no page all-visible, so it is run again."""
    covered = 0.0
    for _ in range(tries):
        c.execute(f"VACUUM ANALYZE {SCHEMA}.{table}")
        row = c.execute("SELECT relallvisible::float8 / greatest(relpages, 1) FROM pg_class "
                        "WHERE oid = %s::regclass", (f"{SCHEMA}.{table}",)).fetchone()
        covered = float(row[0]) if row else 0.0
        if covered >= 0.95:
            break
        time.sleep(2)
    log(f"{table}: visibility map covers {covered:.0%} of its pages")


def _ids(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as c:
        def one(query: str) -> int:
            row = c.execute(query.replace("{s}", SCHEMA)).fetchone()
            assert row is not None
            return int(row[0])
        return {"live": one("SELECT max(id) FROM {s}.jobs"),
                "history": one("SELECT max(id) FROM {s}.job_history"),
                "failed": one("SELECT max(id) FROM {s}.failed_jobs")}


def pages(client: TestClient, ids: dict[str, int]) -> list[tuple[str, str]]:
    """(label, path) of every page measured; the second pages follow the first pages' links."""
    def next_link(path: str) -> str:
        text = client.get(path).text
        marker = 'rel="next" href="'
        start = text.index(marker) + len(marker)
        return text[start:text.index('"', start)].replace("&amp;", "&")

    return [
        ("overview", "/"), ("overview live refresh", "/live/overview"),
        ("jobs", "/jobs"), ("jobs page 2", next_link("/jobs")),
        ("jobs queue=q3", "/jobs?queue=q3"), ("jobs state=running", "/jobs?state=running"),
        ("jobs state=scheduled", "/jobs?state=scheduled"),
        ("jobs task=t7 queue=q7", "/jobs?task=t7&queue=q7"),
        ("jobs args @> user 5", '/jobs?args={"user": 5}'),
        ("job detail (live)", f"/jobs/{ids['live']}"),
        ("job detail (history)", f"/jobs/{ids['history']}"),
        ("job detail (failed)", f"/jobs/{ids['failed']}"),
        ("failed", "/failed"), ("failed page 2", next_link("/failed")),
        ("failed queue=q1", "/failed?queue=q1"),
        ("history", "/history"), ("history page 2", next_link("/history")),
        ("history queue=q2 cancelled", "/history?queue=q2&state=cancelled"),
        ("history args @> user 5", '/history?args={"user": 5}'),
        ("workers", "/workers"), ("schedules", "/schedules"), ("limits", "/limits"),
    ]


def measure(client: TestClient, path: str, repeat: int) -> tuple[float, float]:
    r = client.get(path)  # warm-up (plans, pools)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    return statistics.median(times), max(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dashboard",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", help="server to create the throwaway database on")
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--history", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    server = choose_server(args.dsn)
    results: dict[str, Any] = {"jobs": args.jobs, "history": args.history}
    try:
        with throwaway_database(server.admin_dsn) as dsn:
            log(f"filling {args.jobs:,} jobs and {args.history:,} history rows")
            fill(dsn, args.jobs, args.history)
            app = pgqueue.App(database_url=dsn, schema=SCHEMA)
            with TestClient(pgqueue.dashboard.asgi_app(app, auth=None)) as client:
                print(f"{'page':32} {'median ms':>10} {'max ms':>10}")
                for label, path in pages(client, _ids(dsn)):
                    median, worst = measure(client, path, args.repeat)
                    flag = "" if worst < TARGET_MS else "  over target"
                    print(f"{label:32} {median:10.1f} {worst:10.1f}{flag}", flush=True)
                    results[label] = {"median_ms": round(median, 1), "max_ms": round(worst, 1)}
            app.close()
    finally:
        server.stop()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
