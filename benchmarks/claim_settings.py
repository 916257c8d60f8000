"""What the claim's per-transaction setting costs: a session ``SET`` vs ``set_config(.., true)``.

    python -m benchmarks.claim_settings [--dsn URL] [--jobs N] [--rounds R] [--batch B]

The claim pool used to set ``synchronous_commit = off`` (and ``jit = off``) for the whole
session; behind a transaction pooler that stayed on a server session other clients then used.
Now the unlimited claim (one autocommit statement) sets ``synchronous_commit`` for its own
transaction inside the statement, and the limited claim, a transaction already, starts with
``SET LOCAL`` (``set_local`` in the driver's statements, pipelined).

``old``: a connection with the session ``SET`` runs the claim (``claim_one``) (whose own
``set_config`` then changes nothing); ``new``: a plain connection runs it. Each claims the same
pre-enqueued jobs ``--batch`` at a time, in interleaved rounds (``old``, ``new``, ``old``, ...)
so that the noise of a busy machine falls on both alike; the jobs are put back between rounds.
Prints claims per second per round and the median ratio new/old.

Server: ``--dsn``, else ``PGQUEUE_DATABASE_URL`` / ``DATABASE_URL``, else 127.0.0.1:5432, else
the embedded server; a throwaway database is created, migrated and dropped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import psycopg

from benchmarks._common import choose_server, throwaway_database
from pgqueue import NewJob
from pgqueue.drivers.postgres.claim_cursor import HEAD
from pgqueue.drivers.postgres.driver import PostgresDriver
from pgqueue.drivers.postgres.sql import statements


def _claims(conn: psycopg.Connection[Any], claim: Any, params: dict[str, Any], n: int) -> int:
    got = 0
    for _ in range(n):
        got += len(conn.execute(claim, params).fetchall())
    return got


_PROBES = 100


def _unflushed_after_claims(conn: psycopg.Connection[Any], claim: Any,
                            params: dict[str, Any]) -> int:
    """How many of ``_PROBES`` claims (of one job, put back in between) returned while the WAL
    they wrote was not yet flushed: with ``synchronous_commit = off`` for the claim's own
    transaction nearly all, with it on none (the commit waits for the flush)."""
    count = 0
    for _ in range(_PROBES):
        ids = [r[0] for r in conn.execute(claim, {**params, "limit": 1}).fetchall()]
        lagging = conn.execute(
            "SELECT pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()").fetchone()
        count += bool(lagging and lagging[0])
        conn.execute("UPDATE pgqueue.jobs SET state = 'waiting', attempt = 0, worker_id = NULL,"
                     " lease_expires_at = NULL WHERE id = ANY(%s)", (ids,))
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    server = choose_server(args.dsn)
    try:
        with throwaway_database(server.admin_dsn) as dsn:
            driver = PostgresDriver(dsn)
            driver.insert_many([NewJob("q", "t", "{}") for _ in range(args.jobs)])
            driver.close()
            st = statements("pgqueue")
            params = {"queue": "q", "limit": args.batch, "worker": "bench", "lease": 60.0,
                      "after_p": HEAD[0], "after_r": HEAD[1], "after_i": HEAD[2]}
            calls = args.jobs // args.batch
            ratios = []
            with psycopg.connect(dsn, autocommit=True) as old, \
                    psycopg.connect(dsn, autocommit=True) as new:
                old.execute("SET synchronous_commit TO off")
                old.execute("SET jit TO off")
                for r in range(args.rounds):
                    rates = {}
                    for name, conn, fn in (("old", old, _claims), ("new", new, _claims)):
                        t0 = time.perf_counter()
                        got = fn(conn, st.claim_one(args.batch), params, calls)
                        rates[name] = got / (time.perf_counter() - t0)
                        assert got == calls * args.batch, got
                        old.execute("UPDATE pgqueue.jobs SET state = 'waiting', attempt = 0,"
                                    " worker_id = NULL, lease_expires_at = NULL")
                        old.execute("VACUUM pgqueue.jobs")
                    ratios.append(rates["new"] / rates["old"])
                    print(f"round {r + 1}: old {rates['old']:8.0f} claims/s   "
                          f"new {rates['new']:8.0f} claims/s   new/old {ratios[-1]:.3f}")
                unflushed = _unflushed_after_claims(new, st.claim_one(args.batch), params)
                setting = new.execute("SHOW synchronous_commit").fetchone()
            print(f"batch {args.batch}: median new/old = {statistics.median(ratios):.3f} "
                  f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
            print(f"new: {unflushed}/{_PROBES} claims returned before their WAL was flushed "
                  f"(asynchronous commit in effect); the session still says "
                  f"synchronous_commit = {setting[0] if setting else '?'}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
