"""The application of the chaos suite (:mod:`benchmarks.chaos`), and its worker entry point.

A periodic schedule, ``chaos.tick``: every second, ``catch_up="all"``, onto the queue
``chaos-ticks`` that no chaos worker consumes, so that the suite finds every fired tick in
``pgqueue.jobs`` (its time in ``meta``) and checks that each second fired exactly once.

Two tasks on the queue ``chaos``, each recording every execution as one row of the results table
``chaos_results`` (created by the suite), a third on a queue with a global concurrency limit,
and the poison jobs of the poison-job mode:

- ``chaos.tx``: the row is inserted **inside the job's own completion transaction**
  (:meth:`pgqueue.App.complete`), so a killed worker's row rolls back with its completion:
  at most one row per job, ever;
- ``chaos.plain``: the row is inserted by **its own autocommit statement**, before pgqueue
  records the completion; a worker killed between the two leaves a row for a job that runs
  again: a duplicate, which the suite must be able to explain;
- ``chaos.limited``: like ``chaos.tx``, on the queue ``chaos-limited`` whose concurrency the
  app limits to ``CHAOS_LIMIT`` (default 3) across every worker: the suite checks from
  ``job_history`` that no more ever ran at once (no overshoot, whatever was killed);
- ``chaos.killer`` (poison): records its pid in ``chaos_poison_runs`` and kills its process
  with ``os._exit(KILLER_EXIT)``, stranding every job the process held; it must end
  quarantined in ``failed_jobs`` while the jobs claimed alongside it run on;
- ``chaos.unstorable`` (poison, one attempt): returns a result (``mode="result"``) or raises an
  error (``mode="error"``) holding a NUL and a lone surrogate, which PostgreSQL cannot store:
  the result is stored with the documented replacement (the job succeeds), the error archives
  the job with a readable reason; either way no neighbour in the completer's batch suffers.

Handlers sleep a few milliseconds (``CHAOS_SLEEP_MS="lo,hi"``) so that kills land mid-run.
Each handler thread keeps one connection of its own; a connection that the server closed while
it sat idle (``pg_terminate_backend``, a restart) is noticed before use without a round trip,
and replaced.

Run a worker (what the suite does, with the options from the environment)::

    PGQUEUE_DATABASE_URL=postgresql://... CHAOS_LEASE_S=5 python -m benchmarks.chaos_app

or with the ordinary CLI (default 30 s lease)::

    PGQUEUE_DATABASE_URL=postgresql://... python -m pgqueue.cli worker \\
        benchmarks.chaos_app:app --concurrency 8

Environment: ``PGQUEUE_DATABASE_URL`` (required), ``CHAOS_CONCURRENCY`` (8), ``CHAOS_LEASE_S``
(5), ``CHAOS_RESCUE_INTERVAL`` (1), ``CHAOS_POLL_INTERVAL`` (0.5), ``CHAOS_SHUTDOWN_TIMEOUT``
(10), ``CHAOS_MAX_ATTEMPTS`` (10), ``CHAOS_SLEEP_MS`` ("2,10"), ``CHAOS_POOL_SIZE`` (5),
``CHAOS_LIMIT`` (3),
``CHAOS_PARENT_PID`` (exit when that process is gone).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import os
import random
import select
import signal
import sys
import threading
import time
from collections.abc import Mapping

import psycopg

import pgqueue

__all__ = ["KILLER_EXIT", "KILLER_TASK", "LIMITED_QUEUE", "LIMITED_TASK", "PLAIN_TASK",
           "POISON_RUNS_TABLE", "QUEUE", "RESULTS_TABLE", "TICK_QUEUE", "TICK_SCHEDULE",
           "TX_TASK", "UNSTORABLE_TASK", "UNSTORABLE_TEXT", "app", "main", "make_app"]

QUEUE = "chaos"
LIMITED_QUEUE = "chaos-limited"
LIMITED_TASK = "chaos.limited"
TICK_SCHEDULE = "chaos.tick"
TICK_QUEUE = "chaos-ticks"
TX_TASK = "chaos.tx"
PLAIN_TASK = "chaos.plain"
KILLER_TASK = "chaos.killer"
UNSTORABLE_TASK = "chaos.unstorable"
RESULTS_TABLE = "chaos_results"
POISON_RUNS_TABLE = "chaos_poison_runs"
#: the exit status of a worker process that a killer job took down
KILLER_EXIT = 17
#: what PostgreSQL cannot store in text or jsonb: a NUL character and a lone surrogate
UNSTORABLE_TEXT = "nul \x00 and lone surrogate \ud800"

_INSERT = (f"INSERT INTO {RESULTS_TABLE} (job_id, kind, attempt, worker_id, pid) "
           "VALUES (%s, %s, %s, %s, %s)")


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    return float(raw) if raw else default


def _sleep_range(env: Mapping[str, str]) -> tuple[float, float]:
    """``CHAOS_SLEEP_MS="lo,hi"`` in seconds (default 2-10 ms)."""
    raw = env.get("CHAOS_SLEEP_MS", "").strip() or "2,10"
    lo, _, hi = raw.partition(",")
    low = float(lo) / 1000.0
    return low, max(low, float(hi or lo) / 1000.0)


class _HandlerConnections:
    """One autocommit connection per handler thread, replaced when the server closed it."""

    def __init__(self, app: pgqueue.App) -> None:
        self._app = app
        self._local = threading.local()

    def get(self) -> psycopg.Connection[tuple[object, ...]]:
        conn: psycopg.Connection[tuple[object, ...]] | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken or _server_hung_up(conn)):
            conn.close()
            conn = None
        if conn is None:
            url = self._app.database_url
            if url is None:
                raise pgqueue.ConfigurationError("set PGQUEUE_DATABASE_URL",
                                                 key="database_url")
            conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
            self._local.conn = conn
        return conn

    def discard(self) -> None:
        """Forget this thread's connection after an error (the next job reconnects)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()


def _server_hung_up(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """True when an idle connection has something to read: the server's FATAL message and
    end-of-file after ``pg_terminate_backend`` or a shutdown. Costs no round trip."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


def make_app(database_url: str | None = None, *, environ: Mapping[str, str] | None = None,
             pool_size: int | None = None) -> pgqueue.App:
    """An App with the two chaos tasks. The URL defaults to ``PGQUEUE_DATABASE_URL``."""
    env = os.environ if environ is None else environ
    size = pool_size if pool_size is not None else int(_env_float(env, "CHAOS_POOL_SIZE", 5))
    app = pgqueue.App(database_url, environ=env, pool_size=size,
                      strict=False)  # the tick schedule enqueues a task no worker runs
    max_attempts = int(_env_float(env, "CHAOS_MAX_ATTEMPTS", 10))
    retry = pgqueue.RetryPolicy(base=0.5, factor=2.0, max_delay=5.0)
    low, high = _sleep_range(env)
    conns = _HandlerConnections(app)

    def record(conn: psycopg.Connection[tuple[object, ...]], kind: str) -> None:
        ctx = pgqueue.current_context()
        conn.execute(_INSERT, (ctx.job.id, kind, ctx.job.attempt, ctx.worker_id, os.getpid()))

    def in_transaction(kind: str) -> None:
        conn = conns.get()
        try:
            with conn.transaction():
                record(conn, kind)
                time.sleep(random.uniform(low, high))  # a kill here rolls the row back
                app.complete(conn)
        except (psycopg.OperationalError, pgqueue.DatabaseUnavailableError):
            conns.discard()
            raise

    @app.task(name=TX_TASK, queue=QUEUE, max_attempts=max_attempts, retry=retry)
    def chaos_tx(n: int = 0) -> None:
        """Record the execution and complete the job in one transaction."""
        in_transaction("tx")

    app.queue(LIMITED_QUEUE, concurrency=int(_env_float(env, "CHAOS_LIMIT", 3)))

    @app.task(name=LIMITED_TASK, queue=LIMITED_QUEUE, max_attempts=max_attempts, retry=retry)
    def chaos_limited(n: int = 0) -> None:
        """As ``chaos.tx``, on the limited queue."""
        in_transaction("limited")

    @app.task(name=PLAIN_TASK, queue=QUEUE, max_attempts=max_attempts, retry=retry)
    def chaos_plain(n: int = 0) -> None:
        """Work, then record the execution in its own autocommit statement; pgqueue records
        the completion afterwards (a kill in between yields a duplicate)."""
        time.sleep(random.uniform(low, high))
        conn = conns.get()
        try:
            record(conn, "plain")
        except psycopg.OperationalError:
            conns.discard()
            raise

    app.add_periodic(TICK_SCHEDULE, task=TICK_SCHEDULE, every=dt.timedelta(seconds=1),
                     queue=TICK_QUEUE, catch_up="all", catch_up_limit=1000)

    @app.task(name=KILLER_TASK, queue=QUEUE, max_attempts=max_attempts, retry=retry)
    def chaos_killer(n: int = 0) -> None:
        """Poison: take the whole worker process down, mid-batch, without any cleanup."""
        try:
            conns.get().execute(
                f"INSERT INTO {POISON_RUNS_TABLE} (job_id, pid) VALUES (%s, %s)",
                (pgqueue.current_job().id, os.getpid()))
        finally:
            os._exit(KILLER_EXIT)

    @app.task(name=UNSTORABLE_TASK, queue=QUEUE, max_attempts=1, retry=retry)
    def chaos_unstorable(n: int = 0, mode: str = "result") -> dict[str, str]:
        """Poison: a result or an error message that PostgreSQL cannot store."""
        conn = conns.get()
        try:
            record(conn, "poison")
        except psycopg.OperationalError:
            conns.discard()
            raise
        if mode == "error":
            raise ValueError(UNSTORABLE_TEXT)
        return {"text": UNSTORABLE_TEXT, UNSTORABLE_TEXT: UNSTORABLE_TEXT}

    return app


#: The app for ``pgqueue worker benchmarks.chaos_app:app`` (URL from the environment).
app = make_app()


def _die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGTERM when the suite dies, even by SIGKILL, so no worker is orphaned."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent_pid and os.getppid() != parent_pid:
        raise SystemExit("chaos suite is gone")


def main() -> int:
    """Run one worker of the chaos app until SIGTERM (options from the environment)."""
    env = os.environ
    _die_with_parent(int(_env_float(env, "CHAOS_PARENT_PID", 0)))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("pgqueue")
    root.handlers[:] = [handler]
    root.setLevel(env.get("CHAOS_LOG_LEVEL", "INFO").upper())
    root.propagate = False
    worker = app.worker(
        queues=[QUEUE, LIMITED_QUEUE],
        concurrency=int(_env_float(env, "CHAOS_CONCURRENCY", 8)),
        lease_s=_env_float(env, "CHAOS_LEASE_S", 5.0),
        rescue_interval=_env_float(env, "CHAOS_RESCUE_INTERVAL", 1.0),
        poll_interval=_env_float(env, "CHAOS_POLL_INTERVAL", 0.5),
        shutdown_timeout=_env_float(env, "CHAOS_SHUTDOWN_TIMEOUT", 10.0),
    )
    return int(worker.run_forever())


if __name__ == "__main__":
    raise SystemExit(main())
