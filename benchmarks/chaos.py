"""The chaos suite: prove that pgqueue loses nothing when workers and the database misbehave.

::

    python -m benchmarks.chaos [--quick] [--dsn URL] [--jobs N] [--workers 4] [--lease 5]
                               [--killers 2] [--no-poison] [--limit 3]

What it does:

1. Starts an embedded PostgreSQL server that it controls (so that it can restart it), or uses
   ``--dsn`` (then the restart step is skipped, and the output says so). Creates a fresh
   database, migrates it, and creates the suite's tables: ``chaos_enqueued`` (every job id and
   its kind), ``chaos_results`` (one row per execution, written by the handlers of
   :mod:`benchmarks.chaos_app`), ``chaos_kills``/``chaos_killed_jobs`` (what each kill hit).
2. Enqueues N jobs (default 50,000; ``--quick``: 3,000), half ``tx`` jobs (the execution row
   is written inside the job's completion transaction: duplicates must be zero) and half
   ``plain`` jobs (the row is written by its own autocommit statement before the completion:
   a worker killed in between yields a duplicate). One job in ten is a ``limited`` job instead
   (recorded like ``tx``) on the queue ``chaos-limited``, whose global concurrency the app
   limits to ``--limit`` (default 3). In the **poison-job mode** (on unless
   ``--no-poison``) it also enqueues, spread through the backlog, ``--killers`` jobs that kill
   their worker process (``os._exit``), one job returning a result PostgreSQL cannot store and
   one raising an error message it cannot store (NUL, lone surrogate): see
   :mod:`benchmarks.chaos_app`. The **workflow scenario** adds one fan-in per 500 jobs
   (``group`` of 20 ``tx`` children ``.then`` a ``tx`` fan-in, enqueued whole in one
   transaction): every workflow must finish whole (``workflows_unfinished``), and a dependent
   left blocked forever counts as ``stuck``.
3. Runs ``--workers`` worker processes (``python -m benchmarks.chaos_app``, concurrency 8, a
   ``--lease`` second lease) and, while jobs remain:

   - every ``--kill-every`` seconds SIGKILLs a random worker and starts a new one, recording
     the jobs that were running under it (``pgqueue.jobs`` rows holding its worker id);
   - when a worker process exits on its own with the killer's status, a killer job took it
     down: the suite records the jobs that were running under it (as for a SIGKILL) and starts
     a replacement; any other exit is a crash, and fails the run;
   - once (at ~30 % done) ``pg_terminate_backend`` on every backend of the database but its own;
   - once (at ~60 % done) restarts PostgreSQL on the same data directory and port (``--outage
     S`` keeps it down S seconds first);
   - optionally (``--freeze S``, at ~45 % done) SIGSTOPs the busiest worker for S seconds, then
     SIGCONTs it: a live worker that cannot heartbeat (a stalled VM, a long pause).

   An outage or a freeze longer than the lease makes live workers lose their leases: their
   jobs are rescued and run again. ``plain`` duplicates are then expected (at-least-once) and
   reported as ``duplicates_lease_lost`` (they still fail the "explained by a kill" check);
   ``tx`` duplicates must stay zero whatever happens.

4. When no live job is left (or ``--timeout`` passes), stops the workers with SIGTERM and
   checks: every job completed exactly once (``job_history``) or sits in ``failed_jobs`` with a
   reason; nothing is left waiting or running (``stuck``); no enqueued id is missing everywhere
   (``lost``); executions beyond one per job (``duplicates``), by kind, with those of jobs that
   were running under a killed worker counted as ``duplicates_explained``. Rescue latency is
   the time from a kill to the rescue of each job that the killed worker held (the rescue's
   timestamp is in the job's ``errors``: ``worker died while running``). The app's periodic
   schedule (every second, catch-up ``all``) must have fired every second between its first
   and last tick exactly once (``periodic_duplicates``, ``periodic_missing``). The limited
   queue's jobs never ran more than ``--limit`` at once, as measured from their claim and
   completion times in ``job_history`` (``limited_max_running``, ``limited_overshoot``).
   Poison mode adds:
   no good (``tx``/``plain``/``limited``) job archived (``good_archived``), every killer
   quarantined in ``failed_jobs`` with the quarantine reason, the unstorable result stored (the
   job succeeded), the unstorable error archived with a reason; duplicates are counted over the
   good jobs only, and a killer's deaths explain them like kills do. One exception, the rescue
   rule's documented limit: a good job quarantined after being in at least three recorded
   deaths, one of them the suite's own SIGKILL (a death no job caused), is counted in
   ``good_archived_unrelated_kills`` and does not fail the run. Every archived good job's deaths
   are printed (kill number, and whether a killer job or the suite caused each).

Progress lines go to stdout; the last line is one JSON object. The exit status is 0 only if
``lost == 0``, ``stuck == 0``, ``duplicates_tx == 0`` (and ``duplicates_limited``),
``limited_overshoot == 0``, every duplicate is explained, and the
other consistency checks listed in ``failures`` pass. Children (workers, the embedded server)
are cleaned up on exit, on error and on Ctrl-C/SIGTERM. ``--keep`` keeps the database (and the
embedded data directory) and the worker logs for inspection; the logs are also kept when a
check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import inspect
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks.chaos_app import (
    KILLER_EXIT,
    KILLER_TASK,
    LIMITED_QUEUE,
    LIMITED_TASK,
    PLAIN_TASK,
    POISON_RUNS_TABLE,
    QUEUE,
    RESULTS_TABLE,
    TICK_QUEUE,
    TICK_SCHEDULE,
    TX_TASK,
    UNSTORABLE_TASK,
    make_app,
)
from pgqueue import group
from pgqueue.job import QUARANTINE_AFTER, QUARANTINE_REASON

__all__ = ["ChaosError", "Options", "main"]

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "pgqueue"
RESCUE_ERROR = "worker died while running"
#: the kinds of chaos_enqueued that are good jobs (the others are poison)
GOOD_KINDS = ("tx", "plain", "limited")
#: how every quarantine reason starts (the text before the count)
QUARANTINE_PREFIX = QUARANTINE_REASON.split("{n}")[0].rstrip("0123456789 ")
#: children of each fan-in of the workflow scenario (one workflow per 500 jobs)
WORKFLOW_WIDTH = 20
Row = tuple[Any, ...]


class ChaosError(Exception):
    """The suite itself could not do what it must (server, database, workers)."""


# ---- options -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Options:
    """Everything a run is parameterised by (see :func:`parse_args`)."""

    jobs: int
    workers: int
    concurrency: int
    lease_s: float
    rescue_interval: float
    kill_every: float
    terminate_at: float
    restart_at: float
    outage_s: float
    freeze_s: float
    sleep_ms: tuple[float, float]
    max_attempts: int
    killers: int
    poison: bool
    limit: int
    timeout: float
    dsn: str | None
    keep: bool
    quick: bool
    seed: int | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Command-line options; ``--quick`` changes the defaults of ``--jobs`` and ``--timeout``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="the short variant for CI: 3,000 jobs (and the poison jobs), 20-60 ms "
                   "handlers, under two minutes")
    p.add_argument("--dsn", help="use this server (a fresh database is created on it) instead "
                   "of an embedded one; the PostgreSQL restart step is then skipped")
    p.add_argument("--jobs", type=int, help="jobs to enqueue (default 50,000; --quick 3,000)")
    p.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    p.add_argument("--concurrency", type=int, default=8, help="jobs per worker (default 8)")
    p.add_argument("--lease", type=float, default=5.0, help="lease in seconds (default 5)")
    p.add_argument("--rescue-interval", type=float, default=1.0,
                   help="seconds between rescue passes of each worker (default 1; the worker "
                   "checks only every lease/3 s, so less than that has no effect)")
    p.add_argument("--kill-every", type=float,
                   help="seconds between SIGKILLs, +/-30%% (default 3; --quick 1.5)")
    p.add_argument("--terminate-at", type=float, default=0.3,
                   help="fraction done at which every backend is terminated (default 0.3)")
    p.add_argument("--restart-at", type=float, default=0.6,
                   help="fraction done at which PostgreSQL is restarted (default 0.6)")
    p.add_argument("--outage", type=float, default=0.0,
                   help="seconds PostgreSQL stays down during the restart (default 0: start "
                   "again at once; more than --lease makes live workers lose their leases)")
    p.add_argument("--freeze", type=float, default=0.0,
                   help="also SIGSTOP one worker for this many seconds once (at ~45 %% done), "
                   "then SIGCONT it; more than --lease makes its jobs run twice (default 0: "
                   "off)")
    p.add_argument("--sleep-ms", default=None,
                   help="handler sleep range 'lo,hi' in ms (default '2,10'; --quick '20,60')")
    p.add_argument("--max-attempts", type=int, default=10,
                   help="max_attempts of the chaos tasks (default 10)")
    p.add_argument("--killers", type=int, default=2,
                   help="poison mode: jobs that kill their worker process (default 2)")
    p.add_argument("--no-poison", action="store_true",
                   help="no poison jobs (killers, unstorable result and error)")
    p.add_argument("--limit", type=int, default=3,
                   help="global concurrency limit of the queue chaos-limited, which gets one "
                   "job in ten (default 3; 0: no limited queue)")
    p.add_argument("--timeout", type=float,
                   help="overall seconds before giving up (default 1800; --quick 300)")
    p.add_argument("--seed", type=int, help="random seed of the kill schedule")
    p.add_argument("--keep", action="store_true",
                   help="keep the database, the embedded data directory and the worker logs")
    a = p.parse_args(argv)
    sleep = a.sleep_ms or ("20,60" if a.quick else "2,10")
    lo, _, hi = sleep.partition(",")
    opts = Options(
        jobs=a.jobs if a.jobs is not None else (3000 if a.quick else 50_000),
        workers=a.workers, concurrency=a.concurrency, lease_s=a.lease,
        rescue_interval=a.rescue_interval,
        kill_every=a.kill_every if a.kill_every is not None else (1.5 if a.quick else 3.0),
        terminate_at=a.terminate_at, restart_at=a.restart_at, outage_s=max(0.0, a.outage),
        freeze_s=max(0.0, a.freeze),
        sleep_ms=(float(lo), float(hi or lo)), max_attempts=a.max_attempts,
        killers=max(0, a.killers), poison=not a.no_poison, limit=max(0, a.limit),
        timeout=a.timeout if a.timeout is not None else (300.0 if a.quick else 1800.0),
        dsn=a.dsn, keep=a.keep, quick=a.quick, seed=a.seed)
    if opts.jobs < 2 or opts.workers < 2 or opts.concurrency < 1 or opts.lease_s <= 0:
        p.error("need --jobs >= 2, --workers >= 2 (one is always being replaced), "
                "--concurrency >= 1 and --lease > 0")
    if not 0 < opts.terminate_at < 1 or not 0 < opts.restart_at < 1:
        p.error("--terminate-at and --restart-at are fractions between 0 and 1")
    return opts


# ---- output ------------------------------------------------------------------------------------
class Clock:
    """Elapsed time since the suite started, and progress lines stamped with it."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, msg: str) -> None:
        """One progress line on stdout (flushed: the final JSON line must come last)."""
        print(f"[{self.elapsed():7.1f}s] {msg}", flush=True)


# ---- the server --------------------------------------------------------------------------------
class Server:
    """Where the chaos database lives: the admin DSN, and a restart if the suite controls it."""

    admin_dsn: str
    #: why the server cannot be restarted, or None if it can
    restart_skipped: str | None = None
    kind = "external"

    def restart(self, outage_s: float = 0.0) -> float:
        """Stop the server, wait ``outage_s``, start it again; returns the seconds it was
        down."""
        raise ChaosError("this server cannot be restarted by the suite")

    def close(self, *, keep: bool) -> None:
        """Stop what the suite started."""


class ExternalServer(Server):
    """A server given with ``--dsn``: used as is, never restarted."""

    def __init__(self, dsn: str) -> None:
        self.admin_dsn = dsn
        self.restart_skipped = "--dsn given: the suite does not control that server"


class EmbeddedServer(Server):
    """An embedded server (``pgqueue._embedded``) on a fresh data directory under the temp dir
    (as root the server runs as ``nobody``, who must be able to reach it)."""

    kind = "embedded"

    def __init__(self) -> None:
        from pgqueue._embedded import EmbeddedPostgres

        self.datadir = Path(tempfile.mkdtemp(prefix="pgqueue-chaos-pg-"))
        try:
            self.pg = EmbeddedPostgres(self.datadir, durable=True)
        except BaseException:
            shutil.rmtree(self.datadir, ignore_errors=True)
            raise
        try:
            self.admin_dsn = self.pg.start()
        except BaseException:
            self.pg.stop(remove=True)
            raise
        assert self.pg.port is not None
        self.port: int = self.pg.port

    def restart(self, outage_s: float = 0.0) -> float:
        """Fast shutdown, ``outage_s`` seconds down, then start again on the same data
        directory **and port**, so that the workers' DSNs stay valid. Returns the downtime."""
        down = time.monotonic()
        self.pg.stop(remove=False)
        time.sleep(outage_s)
        self._start_on_port(self.port)
        if self.pg.port != self.port:
            raise ChaosError(f"the restarted server listens on port {self.pg.port}, not "
                             f"{self.port}: the workers cannot reconnect")
        return time.monotonic() - down

    def _start_on_port(self, port: int) -> None:
        """Start the stopped server again on ``port``.

        An ``EmbeddedPostgres`` with a ``port`` parameter keeps its port across a restart. An
        older one picks a new free port at every ``start()`` with no way to ask for a given
        one, so its port picker is pinned for the duration of the call."""
        from pgqueue import _embedded

        if "port" in inspect.signature(_embedded.EmbeddedPostgres).parameters:
            self.pg.start()
            return
        picker = _embedded._free_port
        _embedded._free_port = lambda: port
        try:
            self.pg.start()
        finally:
            _embedded._free_port = picker

    def close(self, *, keep: bool) -> None:
        self.pg.stop(remove=not keep)


# ---- the suite's own connection ----------------------------------------------------------------
class Monitor:
    """The suite's autocommit connection to the chaos database, reconnected when a fault
    (a restart, a termination) broke it. Only idempotent statements go through :meth:`query`."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: psycopg.Connection[Row] | None = None

    def _connection(self) -> psycopg.Connection[Row]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
        return self.conn

    def query(self, query: str | sql.Composable, params: Sequence[Any] | None = None, *,
              retry_for: float = 120.0) -> list[Row]:
        """Run one statement, retrying on connection errors for up to ``retry_for`` seconds."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                cur = self._connection().execute(query, params)  # type: ignore[arg-type]
                return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                self.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def one(self, query: str | sql.Composable, params: Sequence[Any] | None = None) -> Row:
        rows = self.query(query, params)
        if not rows:
            raise ChaosError(f"no row from {query!r}")
        return rows[0]

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


# ---- the worker processes ----------------------------------------------------------------------
@dataclass
class WorkerProc:
    """One worker process started by the suite."""

    n: int
    proc: subprocess.Popen[bytes]
    log: Path
    killed: bool = False
    frozen: bool = False


class Workers:
    """The worker processes: start, SIGKILL, replace, stop; never leaves one behind."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.env = env
        self.all: list[WorkerProc] = []
        self.crashes: list[str] = []

    @property
    def alive(self) -> list[WorkerProc]:
        return [w for w in self.all if not w.killed and w.proc.poll() is None]

    def signal(self, w: WorkerProc, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.proc.pid, sig)

    def spawn(self) -> WorkerProc:
        n = len(self.all) + 1
        log = self.run_dir / f"worker-{n:03d}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.chaos_app"], cwd=REPO, env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)  # Ctrl-C goes to the suite, which stops them
        w = WorkerProc(n, proc, log)
        self.all.append(w)
        return w

    def sigkill(self, w: WorkerProc) -> None:
        w.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.proc.pid, signal.SIGKILL)
        w.proc.wait()

    def reap_crashed(self) -> tuple[list[WorkerProc], list[WorkerProc]]:
        """Workers that exited although nobody killed them: (crashed -- a pgqueue worker must
        not die --, taken down by a killer job -- exit status ``KILLER_EXIT``)."""
        dead = [w for w in self.all if not w.killed and w.proc.poll() is not None]
        crashed: list[WorkerProc] = []
        poisoned: list[WorkerProc] = []
        for w in dead:
            w.killed = True  # counted once
            if w.proc.returncode == KILLER_EXIT:
                poisoned.append(w)
                continue
            crashed.append(w)
            self.crashes.append(f"worker {w.n} (pid {w.proc.pid}) exited with code "
                                f"{w.proc.returncode}: {_tail(w.log)}")
        return crashed, poisoned

    def stop(self, timeout: float) -> dict[str, int]:
        """SIGTERM every live worker (graceful stop), SIGKILL those still there after
        ``timeout`` seconds. Returns exit-code counts."""
        live = self.alive
        for w in live:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGCONT)  # a frozen worker must see the SIGTERM
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: dict[str, int] = {}
        for w in live:
            try:
                code = w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                w.proc.wait()
                code = -9
            w.killed = True
            codes[str(code)] = codes.get(str(code), 0) + 1
        return codes

    def kill_all(self) -> None:
        """Cleanup path: SIGTERM, then SIGKILL whatever is left (only our own children)."""
        live = [w for w in self.all if w.proc.poll() is None]
        for w in live:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGCONT)
                w.proc.terminate()
        deadline = time.monotonic() + 5
        for w in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            if w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(5)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# ---- the record of the chaos -------------------------------------------------------------------
@dataclass
class Kill:
    """One SIGKILL: when (database clock), whom, and the jobs that were running under it."""

    n: int
    pid: int
    worker_ids: list[str]
    killed_at: dt.datetime
    jobs: list[tuple[int, str, dt.datetime | None]] = field(default_factory=list)
    #: a killer job took the process down (else the suite's SIGKILL)
    poison: bool = False


@dataclass
class Record:
    """What happened during the run."""

    kills: list[Kill] = field(default_factory=list)
    terminations: int = 0
    terminated_backends: int = 0
    freezes: int = 0
    restarts: int = 0
    downtime_s: float = 0.0
    timed_out: bool = False
    chaos_s: float = 0.0
    events_missed: list[str] = field(default_factory=list)


# ---- the suite -----------------------------------------------------------------------------------
SETUP_SQL = f"""
CREATE TABLE chaos_enqueued (job_id bigint PRIMARY KEY, kind text NOT NULL);
CREATE TABLE {RESULTS_TABLE} (
    seq bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    kind text NOT NULL,
    attempt int NOT NULL,
    worker_id text NOT NULL,
    pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX ON {RESULTS_TABLE} (job_id);
CREATE TABLE chaos_kills (
    kill_no int PRIMARY KEY, pid int NOT NULL, worker_ids text[] NOT NULL,
    killed_at timestamptz NOT NULL);
CREATE TABLE {POISON_RUNS_TABLE} (
    job_id bigint NOT NULL, pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE chaos_killed_jobs (
    kill_no int NOT NULL, job_id bigint NOT NULL, worker_id text NOT NULL,
    lease_expires_at timestamptz);
"""


class Suite:
    """One chaos run: set up, unleash, check. :meth:`cleanup` always runs after :meth:`run`."""

    def __init__(self, opts: Options, clock: Clock) -> None:
        self.opts = opts
        self.clock = clock
        self.say = clock.say
        self.rng = random.Random(opts.seed)
        self.server: Server | None = None
        self.db_name: str | None = None
        self.dsn: str | None = None
        self.monitor: Monitor | None = None
        self.workers: Workers | None = None
        self.run_dir = Path(tempfile.mkdtemp(prefix="pgqueue-chaos-run-"))
        self.record = Record()
        self.keep_logs = opts.keep
        #: jobs enqueued (good and poison)
        self.total = opts.jobs
        self.workflows = 0

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        o = self.opts
        if o.dsn:
            self.server = ExternalServer(o.dsn)
            self.say("server: --dsn given; the PostgreSQL restart step will be SKIPPED "
                     "(the suite does not control that server)")
        else:
            self.say("server: starting an embedded PostgreSQL (durable) the suite controls")
            self.server = EmbeddedServer()
            assert isinstance(self.server, EmbeddedServer)
            self.say(f"server: embedded, port {self.server.port}, data {self.server.datadir}")
        self.db_name = f"pgqueue_chaos_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.server.admin_dsn, autocommit=True, connect_timeout=10) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.db_name)))
        params = conninfo_to_dict(self.server.admin_dsn)
        params["dbname"] = self.db_name
        self.dsn = make_conninfo(**params)  # type: ignore[arg-type]
        from pgqueue import migrations

        migrations.upgrade(self.dsn, schema=SCHEMA)
        self.monitor = Monitor(self.dsn)
        self.monitor.query(SETUP_SQL)
        self.say(f"database {self.db_name} created and migrated")
        self.env = self._worker_env()
        self.enqueue()

    def _worker_env(self) -> dict[str, str]:
        o = self.opts
        assert self.dsn is not None
        env = dict(os.environ)
        env.update({
            "PGQUEUE_DATABASE_URL": self.dsn,
            "CHAOS_CONCURRENCY": str(o.concurrency),
            "CHAOS_LEASE_S": str(o.lease_s),
            "CHAOS_RESCUE_INTERVAL": str(o.rescue_interval),
            "CHAOS_MAX_ATTEMPTS": str(o.max_attempts),
            "CHAOS_SLEEP_MS": f"{o.sleep_ms[0]},{o.sleep_ms[1]}",
            "CHAOS_PARENT_PID": str(os.getpid()),
            "CHAOS_SHUTDOWN_TIMEOUT": "10",
            "CHAOS_LIMIT": str(max(1, o.limit)),
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def enqueue(self) -> None:
        """Enqueue the jobs, kinds interleaved (poison jobs, in poison mode, spread evenly
        through the backlog), and note every id with its kind (in the same transaction, so the
        suite's record and the queue agree)."""
        assert self.dsn is not None
        t = time.monotonic()
        app = make_app(self.dsn, environ=self.env)
        n = self.opts.jobs
        planned: list[tuple[str, Any]] = [
            ("limited", app.build(LIMITED_TASK, {"n": i})) if self.opts.limit and i % 10 == 5
            else ("tx", app.build(TX_TASK, {"n": i})) if i % 2 == 0 else
            ("plain", app.build(PLAIN_TASK, {"n": i})) for i in range(n)]
        if self.opts.poison:
            poison: list[tuple[str, Any]] = [("killer", app.build(KILLER_TASK, {"n": i}))
                                             for i in range(self.opts.killers)]
            poison += [("unstorable_result", app.build(UNSTORABLE_TASK, {"mode": "result"})),
                       ("unstorable_error", app.build(UNSTORABLE_TASK, {"mode": "error"}))]
            # from the back, so that earlier positions stay where they were computed
            for i in reversed(range(len(poison))):
                planned.insert((i + 1) * n // (len(poison) + 1), poison[i])
        self.total = len(planned)
        chunk = 5000
        try:
            with psycopg.connect(self.dsn) as conn:
                for start in range(0, len(planned), chunk):
                    part = planned[start:start + chunk]
                    ids = app.insert([job for _, job in part], conn=conn)
                    conn.execute("INSERT INTO chaos_enqueued (job_id, kind) "
                                 "SELECT * FROM unnest(%s::bigint[], %s::text[])",
                                 (ids, [kind for kind, _ in part]))
                    conn.commit()
                # the workflow scenario: fan-ins of WORKFLOW_WIDTH tx children (blocked until
                # every child finished, released in the completing transaction), each enqueued
                # whole in the suite's transaction; their jobs count as tx jobs
                tx = app.get_task(TX_TASK)
                assert tx is not None
                for _ in range(max(1, n // 500)):
                    run = app.enqueue_workflow(group(*(tx.s(n=-1) for _ in range(
                        WORKFLOW_WIDTH))).then(tx.s(n=-2)), conn=conn)
                    conn.execute("INSERT INTO chaos_enqueued (job_id, kind) "
                                 "SELECT unnest(%s::bigint[]), 'tx'", (run.job_ids,))
                    self.total += len(run.job_ids)
                    self.workflows += 1
                conn.commit()
        finally:
            app.close()
        kinds = {k: sum(1 for kind, _ in planned if kind == k) for k in GOOD_KINDS}
        self.say(f"enqueued {n} jobs ({kinds['tx']} tx, {kinds['plain']} plain on queue "
                 f"{QUEUE!r}, {kinds['limited']} on {LIMITED_QUEUE!r} limited to "
                 f"{self.opts.limit} at once) and {self.workflows} workflows of "
                 f"{WORKFLOW_WIDTH + 1} tx jobs in {time.monotonic() - t:.1f} s"
                 + (f"; poison: {self.opts.killers} killers, 1 unstorable result, 1 "
                    "unstorable error" if self.opts.poison else ""))

    # -- the chaos -----------------------------------------------------------------------------
    def unleash(self) -> None:
        """Run the workers and the faults until no live job is left (or the timeout)."""
        o, rec = self.opts, self.record
        assert self.monitor is not None and self.server is not None
        self.workers = Workers(self.run_dir, self.env)
        for _ in range(o.workers):
            self.workers.spawn()
        self.say(f"started {o.workers} workers (concurrency {o.concurrency}, lease {o.lease_s:g}"
                 f" s, rescue every {o.rescue_interval:g} s); SIGKILL one every "
                 f"~{o.kill_every:g} s; logs in {self.run_dir}")
        t0 = time.monotonic()
        next_kill = t0 + self._kill_gap()
        last_event = t0
        last_progress = t0
        last_done = 0
        terminated = False
        restarted = self.server.restart_skipped is not None
        froze = o.freeze_s <= 0
        frozen: WorkerProc | None = None
        thaw_at = 0.0
        while True:
            now = time.monotonic()
            live, waiting, running, failed = self.monitor.one(
                "SELECT count(*), count(*) FILTER (WHERE state = 'waiting'), "
                "count(*) FILTER (WHERE state = 'running'), "
                "(SELECT count(*) FROM pgqueue.failed_jobs) FROM pgqueue.jobs "
                "WHERE queue <> %s", (TICK_QUEUE,))
            done = self.total - live
            if frozen is not None and (live == 0 or now >= thaw_at):
                self.thaw(frozen)
                frozen = None
                continue
            if live == 0:
                break
            if now - t0 > o.timeout:
                rec.timed_out = True
                self.say(f"TIMEOUT after {o.timeout:g} s with {live} live jobs")
                break
            crashed, poisoned = self.workers.reap_crashed()
            for w in crashed:
                self.say(f"worker {w.n} (pid {w.proc.pid}) DIED on its own (code "
                         f"{w.proc.returncode}); starting a replacement")
                self.workers.spawn()
            for w in poisoned:
                self.record_poison_death(w)
            fraction = done / self.total
            if not terminated and fraction >= o.terminate_at:
                self.terminate_backends()
                terminated, last_event = True, time.monotonic()
            elif (not froze and terminated and now - last_event >= 2.0
                  and fraction >= (o.terminate_at + o.restart_at) / 2):
                frozen = self.freeze_one()
                froze, last_event, thaw_at = True, time.monotonic(), now + o.freeze_s
            elif (not restarted and terminated and fraction >= o.restart_at
                  and now - last_event >= 2.0):
                self.restart_server()
                restarted, last_event = True, time.monotonic()
            elif now >= next_kill:
                self.kill_one()
                next_kill = time.monotonic() + self._kill_gap()
            if now - last_progress >= 5.0:
                rate = (done - last_done) / (now - last_progress)
                self.say(f"done {done}/{o.jobs} ({100 * fraction:.0f} %), waiting {waiting}, "
                         f"running {running}, failed {failed}, {rate:.0f} jobs/s | kills "
                         f"{len(rec.kills)}, terminations {rec.terminations}, freezes "
                         f"{rec.freezes}, restarts {rec.restarts}")
                last_progress, last_done = now, done
            time.sleep(0.25)
        rec.chaos_s = time.monotonic() - t0
        if not terminated:
            rec.events_missed.append("pg_terminate_backend never ran: the jobs ran out first")
        if not restarted:
            rec.events_missed.append("the PostgreSQL restart never ran: the jobs ran out first")
        if not froze:
            rec.events_missed.append("the worker freeze never ran: the jobs ran out first")
        self.say(f"no live job left after {rec.chaos_s:.1f} s" if not rec.timed_out else
                 "giving up on the remaining jobs")

    def _kill_gap(self) -> float:
        return self.opts.kill_every * self.rng.uniform(0.7, 1.3)

    def kill_one(self) -> None:
        """SIGKILL a random worker, start its replacement, and record what it was running."""
        assert self.workers is not None and self.monitor is not None
        candidates = [w for w in self.workers.alive if not w.frozen]
        if not candidates:
            return
        victim = self.rng.choice(candidates)
        pid = victim.proc.pid
        registered = [r[0] for r in self.monitor.query(
            "SELECT id FROM pgqueue.workers WHERE pid = %s", (pid,))]
        (killed_at,) = self.monitor.one("SELECT clock_timestamp()")
        self.workers.sigkill(victim)
        replacement = self.workers.spawn()
        # The dead worker's rows cannot change until its leases expire and a rescue runs, so
        # this snapshot (taken right after the kill) is what the kill interrupted.
        rows = self.monitor.query(
            "SELECT id, worker_id, lease_expires_at FROM pgqueue.jobs "
            "WHERE state = 'running' AND (worker_id = ANY(%s) OR worker_id LIKE %s)",
            (registered, f"%:{pid}:%"))
        ids = sorted(set(registered) | {r[1] for r in rows})
        kill = Kill(len(self.record.kills) + 1, pid, ids, killed_at,
                    [(int(r[0]), str(r[1]), r[2]) for r in rows])
        self.record.kills.append(kill)
        self.say(f"SIGKILL worker {victim.n} (pid {pid}): {len(rows)} jobs were running under "
                 f"it; started worker {replacement.n} (pid {replacement.proc.pid})")

    def record_poison_death(self, victim: WorkerProc) -> None:
        """A killer job took a worker down: record what it held (like a SIGKILL) and start a
        replacement."""
        assert self.workers is not None and self.monitor is not None
        pid = victim.proc.pid
        registered = [r[0] for r in self.monitor.query(
            "SELECT id FROM pgqueue.workers WHERE pid = %s", (pid,))]
        (died_at,) = self.monitor.one(
            f"SELECT coalesce(max(at), clock_timestamp()) FROM {POISON_RUNS_TABLE} "
            "WHERE pid = %s", (pid,))
        replacement = self.workers.spawn()
        # its rows cannot change until its leases expire and a rescue runs (lease >> 0.25 s)
        rows = self.monitor.query(
            "SELECT id, worker_id, lease_expires_at FROM pgqueue.jobs "
            "WHERE state = 'running' AND (worker_id = ANY(%s) OR worker_id LIKE %s)",
            (registered, f"%:{pid}:%"))
        ids = sorted(set(registered) | {r[1] for r in rows})
        self.record.kills.append(Kill(len(self.record.kills) + 1, pid, ids, died_at,
                                      [(int(r[0]), str(r[1]), r[2]) for r in rows],
                                      poison=True))
        self.say(f"worker {victim.n} (pid {pid}) taken down by a killer job: {len(rows)} jobs "
                 f"were running under it; started worker {replacement.n} "
                 f"(pid {replacement.proc.pid})")

    def freeze_one(self) -> WorkerProc | None:
        """SIGSTOP a random worker: alive but silent (a stalled VM, a long GC pause). Once its
        leases expire, the others rescue its jobs and run them again."""
        assert self.workers is not None and self.monitor is not None
        candidates = self.workers.alive
        if not candidates:
            return None
        # the busiest worker, so that the freeze strands running jobs
        busy: dict[int, int] = dict(self.monitor.query(
            "SELECT w.pid, count(*) FROM pgqueue.jobs j JOIN pgqueue.workers w "
            "ON w.id = j.worker_id WHERE j.state = 'running' GROUP BY 1"))
        w = max(candidates, key=lambda c: (busy.get(c.proc.pid, 0), self.rng.random()))
        self.workers.signal(w, signal.SIGSTOP)
        w.frozen = True
        self.record.freezes += 1
        self.say(f"SIGSTOP worker {w.n} (pid {w.proc.pid}, {busy.get(w.proc.pid, 0)} jobs "
                 f"running) for {self.opts.freeze_s:g} s")
        return w

    def thaw(self, w: WorkerProc) -> None:
        """SIGCONT a frozen worker: it carries on with jobs that may have been rescued."""
        assert self.workers is not None
        self.workers.signal(w, signal.SIGCONT)
        w.frozen = False
        self.say(f"SIGCONT worker {w.n} (pid {w.proc.pid})")

    def terminate_backends(self) -> None:
        """``pg_terminate_backend`` on every backend of the chaos database but the suite's."""
        assert self.monitor is not None
        rows = self.monitor.query(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        ok = sum(1 for r in rows if r[1])
        self.record.terminations += 1
        self.record.terminated_backends += ok
        self.say(f"pg_terminate_backend: {ok} of {len(rows)} backends of the database "
                 "terminated")

    def restart_server(self) -> None:
        """Restart PostgreSQL (the embedded server) on the same data directory and port."""
        assert self.server is not None and self.monitor is not None
        self.say("restarting PostgreSQL ...")
        self.monitor.close()
        down = self.server.restart(self.opts.outage_s)
        self.record.restarts += 1
        self.record.downtime_s += down
        self.say(f"PostgreSQL restarted: down {down:.2f} s, same port")

    def stop_workers(self) -> dict[str, int]:
        """Graceful stop (SIGTERM) of the workers that are left, once each has registered (a
        worker still importing has no SIGTERM handler yet: it would just die)."""
        assert self.workers is not None and self.monitor is not None
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            registered = {r[0] for r in self.monitor.query("SELECT pid FROM pgqueue.workers")}
            if all(w.proc.pid in registered for w in self.workers.alive):
                break
            time.sleep(0.2)
        codes = self.workers.stop(timeout=30.0)
        self.say(f"workers stopped with SIGTERM; exit codes {codes}")
        return codes

    # -- the checks ----------------------------------------------------------------------------
    def save_kills(self) -> None:
        """Write the kill record into the database, for the checks (and for inspection)."""
        assert self.dsn is not None
        with psycopg.connect(self.dsn) as conn:
            for k in self.record.kills:
                conn.execute("INSERT INTO chaos_kills VALUES (%s, %s, %s, %s)",
                             (k.n, k.pid, k.worker_ids, k.killed_at))
                if k.jobs:
                    conn.execute(
                        "INSERT INTO chaos_killed_jobs SELECT %s, * FROM unnest("
                        "%s::bigint[], %s::text[], %s::timestamptz[])",
                        (k.n, [j[0] for j in k.jobs], [j[1] for j in k.jobs],
                         [j[2] for j in k.jobs]))

    def check(self, exit_codes: dict[str, int]) -> dict[str, Any]:
        """Every job's fate, duplicates, rescue latencies; returns the result object."""
        assert self.monitor is not None and self.workers is not None
        self.save_kills()
        q = self.monitor.query
        o, rec = self.opts, self.record
        (enqueued,) = self.monitor.one("SELECT count(*) FROM chaos_enqueued")
        completed, history_rows, cancelled = self.monitor.one("""
            SELECT count(DISTINCT h.id) FILTER (WHERE h.state = 'succeeded'), count(*),
                   count(*) FILTER (WHERE h.state <> 'succeeded')
              FROM pgqueue.job_history h JOIN chaos_enqueued e ON e.job_id = h.id""")
        good_archived_rows = q("""
            SELECT f.id, f.reason FROM pgqueue.failed_jobs f
              JOIN chaos_enqueued e ON e.job_id = f.id
             WHERE e.kind = ANY(%s) ORDER BY 1""", (list(GOOD_KINDS),))
        good_archived = len(good_archived_rows)
        deaths = _deaths_by_job(rec.kills)
        unrelated = [int(r[0]) for r in good_archived_rows
                     if _quarantined_for_unrelated_kills(str(r[1]), deaths.get(int(r[0]), []))]
        poison_fates = {f"{r[0]}:{r[1]}": int(r[2]) for r in q("""
            SELECT e.kind, CASE
                     WHEN f.id IS NOT NULL AND f.reason LIKE 'quarantined%%' THEN 'quarantined'
                     WHEN f.id IS NOT NULL THEN 'archived'
                     WHEN EXISTS (SELECT 1 FROM pgqueue.job_history h
                                   WHERE h.id = e.job_id AND h.state = 'succeeded')
                       THEN 'succeeded'
                     ELSE 'elsewhere' END, count(*)
              FROM chaos_enqueued e LEFT JOIN pgqueue.failed_jobs f ON f.id = e.job_id
             WHERE NOT e.kind = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2""", (list(GOOD_KINDS),))}
        failed, failed_no_reason = self.monitor.one("""
            SELECT count(*), count(*) FILTER (WHERE coalesce(f.reason, '') = '')
              FROM pgqueue.failed_jobs f JOIN chaos_enqueued e ON e.job_id = f.id""")
        failed_reasons = {str(r[0]): int(r[1]) for r in q("""
            SELECT reason, count(*) FROM pgqueue.failed_jobs GROUP BY 1 ORDER BY 2 DESC
             LIMIT 5""")}
        (in_both,) = self.monitor.one("""
            SELECT count(DISTINCT f.id) FROM pgqueue.failed_jobs f
              JOIN pgqueue.job_history h ON h.id = f.id""")
        stuck_by_state = {str(r[0]): int(r[1]) for r in q(
            "SELECT state, count(*) FROM pgqueue.jobs WHERE queue <> %s GROUP BY 1",
            (TICK_QUEUE,))}
        # The periodic schedule: every second between its first and last fired tick exactly
        # once, whatever was killed, terminated or restarted meanwhile.
        ticks = [r[0] for r in q(
            "SELECT (meta ->> 'tick')::timestamptz FROM pgqueue.jobs "
            "WHERE meta ->> 'periodic' = %s ORDER BY 1", (TICK_SCHEDULE,))]
        tick_dups = len(ticks) - len(set(ticks))
        tick_gaps = (int((ticks[-1] - ticks[0]).total_seconds()) + 1 - len(set(ticks))
                     if ticks else 0)
        stuck = sum(stuck_by_state.values())
        # The limited queue: its jobs' running periods as the database recorded them (claim to
        # completion; a killed run is not recorded, it held its slot until rescued) never
        # overlapped more than the limit.
        overlap = _max_overlap(q(
            "SELECT started_at, finished_at FROM pgqueue.job_history "
            "WHERE queue = %s AND state = 'succeeded'", (LIMITED_QUEUE,)))
        (wf_unfinished,) = self.monitor.one(
            "SELECT count(*) FROM pgqueue.workflows WHERE finished_at IS NULL OR failed > 0 "
            "OR cancelled > 0")
        (lost,) = self.monitor.one("""
            SELECT count(*) FROM chaos_enqueued e
             WHERE NOT EXISTS (SELECT 1 FROM pgqueue.jobs j WHERE j.id = e.job_id)
               AND NOT EXISTS (SELECT 1 FROM pgqueue.job_history h WHERE h.id = e.job_id)
               AND NOT EXISTS (SELECT 1 FROM pgqueue.failed_jobs f WHERE f.id = e.job_id)""")
        (unrecorded,) = self.monitor.one(f"""
            SELECT count(*) FROM pgqueue.job_history h JOIN chaos_enqueued e ON e.job_id = h.id
             WHERE h.state = 'succeeded'
               AND NOT EXISTS (SELECT 1 FROM {RESULTS_TABLE} r WHERE r.job_id = h.id)""")
        # Duplicates: executions beyond one per job; explained when the job was running under
        # a killed worker (at most one explained duplicate per kill that hit the job).
        dup_rows = q(f"""
            WITH c AS (SELECT e.job_id, e.kind, count(r.seq) AS n
                         FROM chaos_enqueued e LEFT JOIN {RESULTS_TABLE} r USING (job_id)
                        WHERE e.kind IN ('tx', 'plain', 'limited') GROUP BY 1, 2),
                 k AS (SELECT job_id, count(DISTINCT kill_no) AS kills
                         FROM chaos_killed_jobs GROUP BY 1)
            SELECT c.kind, coalesce(sum(c.n), 0),
                   coalesce(sum(c.n - 1) FILTER (WHERE c.n > 1), 0),
                   coalesce(sum(least(c.n - 1, coalesce(k.kills, 0))) FILTER (WHERE c.n > 1), 0)
              FROM c LEFT JOIN k USING (job_id) GROUP BY 1""")
        execs = {str(r[0]): int(r[1]) for r in dup_rows}
        dups = {str(r[0]): int(r[2]) for r in dup_rows}
        explained_by_kind = {str(r[0]): int(r[3]) for r in dup_rows}
        duplicates = sum(dups.values())
        explained = sum(explained_by_kind.values())
        unexplained = {int(r[0]): int(r[1]) for r in q(f"""
            WITH c AS (SELECT job_id, count(*) AS n FROM {RESULTS_TABLE}
                        WHERE kind IN ('tx', 'plain', 'limited') GROUP BY 1),
                 k AS (SELECT job_id, count(DISTINCT kill_no) AS kills
                         FROM chaos_killed_jobs GROUP BY 1)
            SELECT c.job_id, c.n - 1 - coalesce(k.kills, 0) FROM c LEFT JOIN k USING (job_id)
             WHERE c.n - 1 > coalesce(k.kills, 0) ORDER BY 1""")}
        # Rescues: every 'worker died while running' entry in any job's errors, with its time.
        killed_ids = sorted({w for k in rec.kills for w in k.worker_ids})
        rescue_rows = q("""
            WITH errs AS (
                SELECT x.id, e FROM (
                    SELECT id, errors FROM pgqueue.jobs
                    UNION ALL SELECT id, errors FROM pgqueue.job_history
                    UNION ALL SELECT id, errors FROM pgqueue.failed_jobs) x,
                    jsonb_array_elements(x.errors) e)
            SELECT id, e ->> 'worker', (e ->> 'at')::timestamptz FROM errs
             WHERE e ->> 'error' = %s""", (RESCUE_ERROR,))
        rescued_at: dict[tuple[int, str], list[dt.datetime]] = {}
        for r in rescue_rows:
            rescued_at.setdefault((int(r[0]), str(r[1])), []).append(r[2])
        # A rescue from a worker that was alive at that moment (never killed, or killed later):
        # its lease ran out although it lived (it could not heartbeat: the database was down).
        killed_at: dict[str, dt.datetime] = {}
        for k in rec.kills:
            for w in k.worker_ids:
                killed_at.setdefault(w, k.killed_at)
        live_rescues = [r for r in rescue_rows
                        if str(r[1]) not in killed_at or r[2] < killed_at[str(r[1])]]
        attempt_errors = {str(r[0])[:120]: int(r[1]) for r in q("""
            WITH errs AS (
                SELECT e FROM (
                    SELECT errors FROM pgqueue.jobs UNION ALL
                    SELECT errors FROM pgqueue.job_history UNION ALL
                    SELECT errors FROM pgqueue.failed_jobs) x,
                    jsonb_array_elements(x.errors) e)
            SELECT e ->> 'error', count(*) FROM errs WHERE e ->> 'error' <> %s
             GROUP BY 1 ORDER BY 2 DESC LIMIT 5""", (RESCUE_ERROR,))}
        finished_by = {(int(r[0]), str(r[1])) for r in q(
            "SELECT id, worker_id FROM pgqueue.job_history WHERE worker_id = ANY(%s)",
            (killed_ids,))}
        latencies: list[float] = []
        after_expiry: list[float] = []
        finished_by_killed = unaccounted = 0
        for k in rec.kills:
            for job_id, worker_id, lease_expires_at in k.jobs:
                at = next((t for t in sorted(rescued_at.get((job_id, worker_id), []))
                           if t >= k.killed_at), None)
                if at is not None:
                    latencies.append((at - k.killed_at).total_seconds())
                    if lease_expires_at is not None:
                        after_expiry.append((at - lease_expires_at).total_seconds())
                elif (job_id, worker_id) in finished_by:
                    finished_by_killed += 1  # its commit was in flight when it died
                else:
                    unaccounted += 1
        # Unexplained duplicates of jobs that were rescued from a worker nobody killed: its
        # lease ran out while it was alive (it could not heartbeat, e.g. the database was down).
        live_rescued = {int(r[0]) for r in live_rescues}
        lease_lost_dups = sum(n for job_id, n in unexplained.items() if job_id in live_rescued)
        if unexplained:
            self._explain(sorted(unexplained)[:5])

        log_errors, samples = self._scan_logs()
        for line in samples:
            self.say(f"worker log: {line}")

        failures: list[str] = []
        if lost:
            failures.append(f"{lost} jobs lost")
        if stuck:
            failures.append(f"{stuck} jobs stuck {stuck_by_state}")
        if wf_unfinished:
            failures.append(f"{wf_unfinished} workflows did not finish whole")
        if dups.get("tx", 0) or dups.get("limited", 0):
            failures.append(f"{dups.get('tx', 0) + dups.get('limited', 0)} duplicate executions "
                            "of in-transaction jobs")
        if overlap > o.limit:
            failures.append(f"{overlap} jobs of {LIMITED_QUEUE!r} ran at once, over its limit "
                            f"of {o.limit}")
        if duplicates != explained:
            failures.append(f"{duplicates - explained} duplicates not explained by a kill ("
                            f"{lease_lost_dups} of them of jobs rescued from a live worker whose "
                            "lease ran out: the database was down or the worker frozen for "
                            "longer than the lease)")
        if not ticks:
            failures.append("the periodic schedule fired no tick")
        if tick_dups:
            failures.append(f"{tick_dups} periodic ticks fired more than once")
        if tick_gaps:
            failures.append(f"{tick_gaps} periodic ticks missing")
        if history_rows != completed or cancelled:
            failures.append(f"job_history holds {history_rows} rows for {completed} completed "
                            f"jobs ({cancelled} not succeeded)")
        for job_id, _reason in good_archived_rows:
            self.say(f"good job {job_id} archived; the deaths it was in (kill number: "
                     "k = a killer job's, s = the suite's SIGKILL): "
                     + (", ".join(f"{n}:{'k' if p else 's'}"
                                  for n, p in deaths.get(int(job_id), [])) or "none"))
        if good_archived > len(unrelated):
            failures.append(f"{good_archived - len(unrelated)} good jobs archived (a bad "
                            "neighbour hurt them)")
        if o.poison:
            expected = {"killer:quarantined": o.killers,
                        "unstorable_error:archived": 1, "unstorable_result:succeeded": 1}
            expected = {k: v for k, v in expected.items() if v}
            if poison_fates != expected:
                failures.append(f"poison jobs ended {poison_fates}, expected {expected}")
        if in_both:
            failures.append(f"{in_both} jobs both in job_history and failed_jobs")
        if failed_no_reason:
            failures.append(f"{failed_no_reason} failed jobs without a reason")
        if unrecorded:
            failures.append(f"{unrecorded} jobs completed without any execution")
        if completed + failed + stuck + lost != enqueued:
            failures.append("completed + failed + stuck + lost != enqueued")
        if self.workers.crashes:
            failures.append(f"{len(self.workers.crashes)} workers died on their own: "
                            + "; ".join(self.workers.crashes[:3]))
        if rec.timed_out:
            failures.append(f"timed out after {o.timeout:g} s")
        failures.extend(rec.events_missed)

        elapsed = self.clock.elapsed()
        result: dict[str, Any] = {
            "ok": not failures,
            "enqueued": enqueued,
            "completed": completed,
            "failed": failed,
            "lost": lost,
            "stuck": stuck,
            "workflows": self.workflows,
            "workflows_unfinished": int(wf_unfinished),
            "periodic_ticks": len(ticks),
            "periodic_duplicates": tick_dups,
            "periodic_missing": tick_gaps,
            "duplicates": duplicates,
            "duplicates_tx": dups.get("tx", 0),
            "duplicates_plain": dups.get("plain", 0),
            "duplicates_limited": dups.get("limited", 0),
            "limit": o.limit,
            "limited_max_running": overlap,
            "limited_overshoot": max(0, overlap - o.limit),
            "duplicates_explained": explained,
            "duplicates_unexplained": duplicates - explained,
            "duplicates_lease_lost": int(lease_lost_dups),
            "good_archived": good_archived,
            "good_archived_unrelated_kills": len(unrelated),
            "poison_fates": poison_fates,
            "kills": sum(1 for k in rec.kills if not k.poison),
            "poison_deaths": sum(1 for k in rec.kills if k.poison),
            "kills_jobs_running": sum(len(k.jobs) for k in rec.kills),
            "backend_terminations": rec.terminations,
            "worker_freezes": rec.freezes,
            "backends_terminated": rec.terminated_backends,
            "pg_restarts": rec.restarts,
            "pg_downtime_s": round(rec.downtime_s, 2),
            "rescue_p50_s": _percentile(latencies, 0.50),
            "rescue_p99_s": _percentile(latencies, 0.99),
            "rescue_max_s": _percentile(latencies, 1.0),
            "rescue_samples": len(latencies),
            "rescue_after_lease_expiry_p50_s": _percentile(after_expiry, 0.50),
            "rescue_after_lease_expiry_p99_s": _percentile(after_expiry, 0.99),
            "killed_jobs_finished_by_dying_worker": finished_by_killed,
            "killed_jobs_unaccounted": unaccounted,
            "rescues_of_live_workers": len(live_rescues),
            "executions_tx": execs.get("tx", 0),
            "executions_plain": execs.get("plain", 0),
            "executions_limited": execs.get("limited", 0),
            "attempt_errors": attempt_errors,
            "failed_reasons": failed_reasons,
            "worker_crashes": len(self.workers.crashes),
            "worker_log_errors": log_errors,
            "workers_started": len(self.workers.all),
            "final_exit_codes": exit_codes,
            "jobs_per_s": round(enqueued / rec.chaos_s, 1) if rec.chaos_s else None,
            "chaos_s": round(rec.chaos_s, 1),
            "elapsed_s": round(elapsed, 1),
            "server": self.server.kind if self.server else None,
            "restart_skipped": self.server.restart_skipped if self.server else None,
            "workers": o.workers,
            "concurrency": o.concurrency,
            "lease_s": o.lease_s,
            "failures": failures,
        }
        return result

    def _scan_logs(self) -> tuple[int, list[str]]:
        """ERROR lines and tracebacks in the worker logs: their count and a few examples."""
        count = 0
        samples: list[str] = []
        for path in sorted(self.run_dir.glob("worker-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                    count += 1
                    if len(samples) < 3:
                        samples.append(f"{path.name}: {line[:200]}")
        return count, samples

    def _explain(self, job_ids: list[int]) -> None:
        """Print the executions and errors of a few unexplained duplicates (diagnostics)."""
        assert self.monitor is not None
        for job_id in job_ids:
            execs = self.monitor.query(
                f"SELECT kind, attempt, worker_id, at FROM {RESULTS_TABLE} WHERE job_id = %s "
                "ORDER BY seq", (job_id,))
            errs = self.monitor.query("""
                SELECT e ->> 'attempt', e ->> 'error', e ->> 'worker', e ->> 'at' FROM (
                    SELECT errors FROM pgqueue.jobs WHERE id = %(id)s UNION ALL
                    SELECT errors FROM pgqueue.job_history WHERE id = %(id)s UNION ALL
                    SELECT errors FROM pgqueue.failed_jobs WHERE id = %(id)s) x,
                    jsonb_array_elements(x.errors) e""", {"id": job_id})  # type: ignore[arg-type]
            self.say(f"unexplained duplicate: job {job_id} executions "
                     f"{[(r[0], r[1], r[2], r[3].isoformat()) for r in execs]} errors "
                     f"{[tuple(r) for r in errs]}")

    # -- lifecycle -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Set up, run the chaos, stop the workers, check."""
        self.setup()
        self.unleash()
        codes = self.stop_workers()
        result = self.check(codes)
        if not result["ok"]:
            self.keep_logs = True
        return result

    def cleanup(self) -> None:
        """Stop every child and the embedded server; drop the database unless ``--keep``."""
        if self.workers is not None:
            self.workers.kill_all()
        if self.monitor is not None:
            self.monitor.close()
        if self.server is not None:
            if self.db_name is not None and not self.opts.keep:
                with contextlib.suppress(psycopg.Error), psycopg.connect(
                        self.server.admin_dsn, autocommit=True, connect_timeout=5) as c:
                    c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self.db_name)))
            with contextlib.suppress(Exception):
                self.server.close(keep=self.opts.keep)
        if self.keep_logs:
            self.say(f"worker logs kept in {self.run_dir}"
                     + (f"; database {self.db_name} kept" if self.opts.keep else ""))
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _max_overlap(intervals: Sequence[Sequence[Any]]) -> int:
    """The most intervals (start, end) open at one instant; an end before a start at a tie."""
    events = sorted([(r[0], 1) for r in intervals] + [(r[1], -1) for r in intervals])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def _deaths_by_job(kills: Sequence[Kill]) -> dict[int, list[tuple[int, bool]]]:
    """For each job, the recorded deaths it was running in: (kill number, a killer's death)."""
    deaths: dict[int, list[tuple[int, bool]]] = {}
    for k in kills:
        for job_id, _worker, _lease in k.jobs:
            deaths.setdefault(job_id, []).append((k.n, k.poison))
    return deaths


def _quarantined_for_unrelated_kills(reason: str, deaths: Sequence[tuple[int, bool]]) -> bool:
    """Whether a good job's quarantine is the rescue rule's documented limit, not a fault.

    The rule (``pgqueue.job.rescue_quarantines``) promises that innocents are never quarantined
    for a *killer's* deaths; a job whose worker dies under it :data:`QUARANTINE_AFTER` times,
    each time the prime suspect, is quarantined whatever killed the worker. So a good job's
    quarantine is explained when the record shows it in at least that many deaths and at least
    one of them was the suite's own SIGKILL (a death no job caused). Anything else -- a good
    job archived for another reason, or quarantined for killers' deaths alone, or for deaths the
    suite did not record -- is a failure.

    >>> from pgqueue.job import quarantine_reason_for
    >>> q = quarantine_reason_for(3)
    >>> _quarantined_for_unrelated_kills(q, [(6, True), (14, True), (18, False)])
    True
    >>> _quarantined_for_unrelated_kills(q, [(6, True), (14, True), (18, True)])
    False
    >>> _quarantined_for_unrelated_kills(q, [(6, True), (18, False)])
    False
    >>> _quarantined_for_unrelated_kills("boom", [(1, False), (2, False), (3, False)])
    False
    """
    return (reason.startswith(QUARANTINE_PREFIX) and len(deaths) >= QUARANTINE_AFTER
            and not all(poison for _n, poison in deaths))


def _percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (linear interpolation), rounded to ms; None without samples."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return round(s[lo] + (s[hi] - s[lo]) * (pos - lo), 3)


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (so the cleanup path runs), even
    when started with SIGINT ignored (a background job); the handlers are restored after."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. nohup: leave SIGHUP ignored
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; the last line printed is the JSON result. Exit 0 only if it passed."""
    opts = parse_args(argv)
    clock = Clock()
    clock.say(f"pgqueue chaos suite: {opts.jobs} jobs, {opts.workers} workers x "
              f"{opts.concurrency}, lease {opts.lease_s:g} s"
              + (" (quick)" if opts.quick else ""))
    suite = Suite(opts, clock)
    result: dict[str, Any]
    code = 1
    with _signals_as_interrupt():
        try:
            result = suite.run()
            code = 0 if result["ok"] else 1
        except KeyboardInterrupt as exc:
            clock.say(f"interrupted ({str(exc) or 'Ctrl-C'}); cleaning up")
            result = {"ok": False, "error": "interrupted"}
            code = 130
        except Exception as exc:
            clock.say("ERROR: " + "".join(traceback.format_exception_only(exc)).strip())
            traceback.print_exc(file=sys.stdout)
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            suite.keep_logs = True
        finally:
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(s, signal.SIG_IGN)  # let the cleanup finish
            try:
                suite.cleanup()
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
    if "elapsed_s" not in result:
        result["elapsed_s"] = round(clock.elapsed(), 1)
    if not result.get("ok", False) and result.get("failures"):
        clock.say("FAILED: " + "; ".join(result["failures"]))
    print(json.dumps(result, default=str), flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
