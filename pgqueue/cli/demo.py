"""The demo (``pgqueue demo``, the README's first command), written with pgqueue's public API only.

On a database the command gives it (``pgqueue demo`` starts an embedded PostgreSQL in
``.pgqueue/`` when no URL is set): migrate, enqueue a realistic mix -- immediate, delayed, high and
low priority, flaky jobs that fail and retry, one that ends in the failed archive, an order written
in the same transaction as its job (and one rolled back) -- then run workers with a live progress
line until everything is done, and print the per-queue summary, the archive, and an SQL query
joining history with the orders.

Everything lives in the demo's own schema, :data:`DEMO_SCHEMA` (``pgqueue_demo``): pgqueue's tables
and the demo's ``demo_orders``, so nothing can collide with an application's tables or jobs, and
no application's worker sees the demo's jobs. The schema is marked as the demo's (a comment);
each run drops and recreates it, so re-runs start clean; a schema of that name the demo did not
create is refused (unless ``force``) when it holds anything. At the end it is dropped too, unless
``keep``.
"""

from __future__ import annotations

import asyncio
import random
import time

import psycopg
from psycopg import sql

import pgqueue
import pgqueue.migrations
from pgqueue.cli._format import table

__all__ = ["DEMO_QUEUES", "DEMO_SCHEMA", "app", "enqueue_mix", "run_demo"]

#: The demo's own schema: pgqueue's tables and ``demo_orders``, dropped and recreated each run.
DEMO_SCHEMA = "pgqueue_demo"
#: The comment that marks :data:`DEMO_SCHEMA` as created by the demo (safe to drop).
_MARK = "created by pgqueue demo; dropped and recreated by each run"

app = pgqueue.App(database_url="postgresql://placeholder/none",  # real URL set by run_demo()
                  schema=DEMO_SCHEMA)

DEMO_QUEUES = ("emails", "reports")
ORDERS = sql.Identifier(DEMO_SCHEMA, "demo_orders")


@app.task(name="demo.send_email", queue="emails")
def send_email(to: str, subject: str) -> dict[str, str]:
    time.sleep(random.uniform(0.005, 0.03))  # a blocking client, run in the thread pool
    return {"sent_to": to}


@app.task(name="demo.flaky_email", queue="emails", retry=pgqueue.RetryPolicy(base=0.3))
def flaky_email(to: str) -> None:
    if pgqueue.current_job().attempt == 1:
        raise ConnectionError(f"SMTP server hung up while sending to {to}")


@app.task(name="demo.build_report", queue="reports")
async def build_report(report: str, rows: int) -> int:
    await asyncio.sleep(random.uniform(0.01, 0.05))  # async handlers run on the event loop
    return rows


@app.task(name="demo.doomed_export", queue="reports", max_attempts=3,
          retry=pgqueue.RetryPolicy(base=0.3))
def doomed_export(target: str) -> None:
    raise PermissionError(f"export bucket {target!r} refuses our credentials")


@app.task(name="demo.ship_order", queue="emails")
def ship_order(order_id: int) -> None:
    """Completes itself inside its own business transaction (exactly-once effects)."""
    with psycopg.connect(_url()) as conn:
        conn.execute(sql.SQL("UPDATE {} SET shipped = true WHERE id = %s").format(ORDERS),
                     (order_id,))
        app.complete(conn)


def _url() -> str:
    """The libpq URL the demo's app points at."""
    assert app.database_url is not None, "run_demo() sets the database"
    return app.database_url


def enqueue_mix() -> int:
    """Enqueue the demo's jobs on the app's database; returns how many."""
    n = 0
    with psycopg.connect(_url()) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, customer text NOT NULL, "
                             "shipped boolean NOT NULL DEFAULT false)").format(ORDERS))
        conn.commit()
        # an order and its job in ONE transaction: both commit
        order_id = conn.execute(sql.SQL("INSERT INTO {} (customer) VALUES ('ada') "
                                        "RETURNING id").format(ORDERS)).fetchone()[0]  # type: ignore[index]
        ship_order.enqueue(order_id=order_id, conn=conn)
        conn.commit()
        n += 1
        # ...and one rolled back: neither the order nor its job exists afterwards
        conn.execute(sql.SQL("INSERT INTO {} (customer) VALUES ('mallory')").format(ORDERS))
        ship_order.enqueue(order_id=-1, conn=conn)
        conn.rollback()
    n += len(app.enqueue_many("demo.send_email", [
        {"to": f"user{i}@example.com", "subject": "Newsletter"} for i in range(40)]))
    for i in range(5):
        send_email.options(priority=1).enqueue(to=f"vip{i}@example.com", subject="Urgent")
    for i in range(10):
        send_email.options(priority=100).enqueue(to=f"bulk{i}@example.com", subject="Digest")
    for i in range(5):
        send_email.options(delay=1.0 + i * 0.5).enqueue(to=f"later{i}@example.com",
                                                       subject="Reminder")
    for i in range(6):
        flaky_email.enqueue(to=f"flaky{i}@example.com")
    for i in range(12):
        build_report.enqueue(report=f"sales-{i}", rows=random.randint(10, 1000))
    doomed_export.enqueue(target="s3://acme-exports")
    return n + 5 + 10 + 5 + 6 + 12 + 1


def run_demo(database_url: str, *, workers: int = 2, started: float | None = None,
             force: bool = False, keep: bool = False) -> int:
    """Run the demo on ``database_url`` with ``workers`` workers (default 2), each of
    concurrency 8; returns the exit status (0). ``started`` (a :func:`time.monotonic` value,
    default now) is when the "Done in" time counts from.

    The demo works in :data:`DEMO_SCHEMA` only, recreated first. If that schema exists, holds
    anything, and was not created by the demo, a :class:`pgqueue.ConfigurationError` is raised
    (nothing is touched) unless ``force`` (default false: then it is dropped). The schema is
    dropped at the end unless ``keep`` (default false). Example::

        run_demo("postgresql://localhost/scratch", workers=1, keep=True)
    """
    started = time.monotonic() if started is None else started
    try:
        app.use_database(database_url)
        _fresh_schema(force)
        try:
            return _run(workers, started)
        finally:
            if not keep:
                _drop_schema()
    finally:
        app.close()


def _fresh_schema(force: bool) -> None:
    """Drop the demo's schema (if it is the demo's, or empty, or ``force``) and create it
    again, marked as the demo's; refuse a foreign non-empty one."""
    with psycopg.connect(_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT obj_description(n.oid, 'pg_namespace'), "
            "       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid) "
            "  FROM pg_namespace n WHERE n.nspname = %s", (DEMO_SCHEMA,)).fetchone()
        if row is not None and row[0] != _MARK and row[1] and not force:
            raise pgqueue.ConfigurationError(
                f"schema {DEMO_SCHEMA!r} exists with {row[1]} tables or other objects that "
                "pgqueue demo did not create; the demo will not touch it: use another database, "
                "or pass --force to drop that schema", key="schema")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
            sql.Identifier(DEMO_SCHEMA)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(DEMO_SCHEMA)))
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
            sql.Identifier(DEMO_SCHEMA), sql.Literal(_MARK)))


def _drop_schema() -> None:
    """Remove the demo's schema and everything in it (the database is left as found)."""
    app.close()  # the pools' sessions would otherwise hold locks on the tables
    with psycopg.connect(_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
            sql.Identifier(DEMO_SCHEMA)))


def _run(worker_count: int, started: float) -> int:
    app.migrate()
    print(f"Migrated pgqueue schema {DEMO_SCHEMA!r} (revision {pgqueue.migrations.head()}).")
    total = enqueue_mix()
    print(f"Enqueued {total} jobs (1 more was rolled back with its order).")

    counts: dict[str, int] = {}

    def on_event(event: str, job: pgqueue.Job) -> None:
        counts[event] = counts.get(event, 0) + 1

    pool = [app.worker(queues=list(DEMO_QUEUES), concurrency=8, poll_interval=0.5,
                       on_event=on_event).start_in_thread() for _ in range(worker_count)]
    print(f"Started {worker_count} workers (concurrency 8 each). Progress:")
    try:
        while True:
            live = sum(app.count(q) for q in DEMO_QUEUES)
            line = (f"\r  live {live:3d} | succeeded {counts.get('succeeded', 0):3d} | "
                    f"retried {counts.get('retried', 0):2d} | failed {counts.get('failed', 0)}")
            print(line, end="", flush=True)
            if live == 0:
                break
            time.sleep(0.2)  # refresh rate of the progress display
    finally:
        for w in pool:
            w.stop()
        for w in pool:
            w.join(30)
    print()
    _summary()
    print(f"Done in {time.monotonic() - started:.1f} s.")
    return 0


def _summary() -> None:
    stats = [s for s in app.stats() if s.queue in DEMO_QUEUES]
    print(f"\nPer-queue summary (SELECT * FROM {app.schema}.queue_stats):")
    print(table(("queue", "waiting", "scheduled", "running", "failed", "finished/1h",
                 "mean run"),
                [(s.queue, s.waiting, s.scheduled, s.running, s.failed, s.finished_last_hour,
                  f"{(s.mean_run_time_s or 0) * 1000:.0f} ms") for s in stats]))
    print(f"\nFailed-jobs archive (pgqueue failed list --schema {app.schema}):")
    failed = app.failed()
    print(table(("id", "queue", "task", "attempts", "reason"),
                [(f.id, f.queue, f.task, f"{f.attempt}/{f.max_attempts}", f.reason)
                 for f in failed[:5]]))
    query = sql.SQL("""
        SELECT o.id, o.customer, o.shipped, h.state, h.finished_at - h.enqueued_at
          FROM {orders} o
          JOIN {history} h
            ON h.task = 'demo.ship_order' AND (h.args->>'order_id')::int = o.id
         ORDER BY h.finished_at DESC LIMIT 3""").format(
        history=sql.Identifier(app.schema, "job_history"), orders=ORDERS)
    with psycopg.connect(_url()) as c:
        rows = c.execute(query).fetchall()
    print("\nOrders joined with their jobs' history (plain SQL):")
    print(table(("order", "customer", "shipped", "job state", "enqueued->finished"),
                [(r[0], r[1], r[2], r[3], f"{r[4].total_seconds():.2f} s") for r in rows]))
