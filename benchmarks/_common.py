"""Shared plumbing of the benchmarks: the server and the throwaway database, child processes
that are always cleaned up, statistics and machine information."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks._tasks import QUEUE, SCHEMA, TASK
from pgqueue._dsn import redact

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout holds only the table and the final JSON line."""
    print(msg, file=sys.stderr, flush=True)


# ---- child processes ---------------------------------------------------------------------------
class Children:
    """Every subprocess the benchmark starts, so that Ctrl-C, SIGTERM or an error never leaves
    a worker or a pgbench behind."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(list(cmd), **kwargs)
        self.procs.append(proc)
        return proc

    def forget(self, proc: subprocess.Popen[Any]) -> None:
        if proc.poll() is not None and proc in self.procs:
            self.procs.remove(proc)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2)
        self.procs.clear()


def sigterm_as_interrupt() -> None:
    """Turn SIGTERM into KeyboardInterrupt so that the same cleanup path runs."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    # Ctrl-C must interrupt even when started from a shell that ignores SIGINT in background jobs
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ---- server and database -----------------------------------------------------------------------
def reachable(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as c:
            c.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


@dataclass
class Server:
    admin_dsn: str
    source: str
    embedded: Any = None

    def stop(self) -> None:
        if self.embedded is not None:
            with contextlib.suppress(Exception):
                self.embedded.stop()
            self.embedded = None


def choose_server(dsn: str | None, *, embedded: bool = False) -> Server:
    """``--dsn``, else PGQUEUE_DATABASE_URL / DATABASE_URL, else 127.0.0.1:5432, else the
    embedded server (durable: fsync and synchronous_commit on, like a real server).
    ``embedded`` skips straight to the embedded server."""
    from pgqueue._dsn import to_libpq, url_from_env

    if not embedded:
        if dsn:
            return Server(to_libpq(dsn, source="--dsn"), "--dsn")
        found = url_from_env()
        if found is not None:
            return Server(to_libpq(found[0], source=found[1]), f"env {found[1]}")
        if reachable(LOCAL_DSN):
            return Server(to_libpq(LOCAL_DSN), "local 127.0.0.1:5432")
        log("no server configured or reachable on 127.0.0.1:5432")
    from pgqueue._embedded import EmbeddedPostgres

    log("starting the embedded server (durable=True: fsync and synchronous_commit on)")
    pg = EmbeddedPostgres(durable=True)
    return Server(to_libpq(pg.start()), "embedded (durable=True)", embedded=pg)


def with_dbname(dsn: str, name: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


@contextlib.contextmanager
def throwaway_database(admin_dsn: str) -> Iterator[str]:
    """Create ``pgqueue_bench_<hex>``, migrate it, yield its DSN, drop it at the end."""
    from pgqueue import migrations

    name = f"pgqueue_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise SystemExit(f"cannot create the benchmark database on {redact(admin_dsn)}: {exc}; "
                         "the benchmark needs a role with CREATEDB") from exc
    dsn = with_dbname(admin_dsn, name)
    try:
        migrations.upgrade(dsn, schema=SCHEMA)
        yield dsn
    finally:
        drop_database(admin_dsn, name)


def run_on_throwaway(dsn: str | None, prefix: str,
                     run: Callable[[str, Db, Children, Path], dict[str, Any]]) -> int:
    """The life of a benchmark that compares trees: choose the server (``dsn``), make a
    throwaway database and a temp directory, ``run(dsn, db, children, workdir)``, stop every
    child process and the server whatever happens, print the result as one JSON line."""
    sigterm_as_interrupt()
    children = Children()
    server = choose_server(dsn)
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp, \
                throwaway_database(server.admin_dsn) as bench_dsn:
            db = Db(bench_dsn)
            try:
                result = run(bench_dsn, db, children, Path(tmp))
            finally:
                children.kill_all()
                db.close()
    finally:
        children.kill_all()
        server.stop()
    print(json.dumps(result, separators=(",", ":")))
    return 0


#: where a tree declares its tables (the migrations must produce the same)
SCHEMA_FILE = Path("pgqueue", "drivers", "postgres", "schema.py")


def same_schema(other: Path) -> bool:
    """Whether ``other`` declares the tables and indexes this checkout does (its
    ``schema.py`` is the same file). The benchmarks build the database with this checkout's
    schema, and another tree's worker runs on it: when the two differ, the other tree's
    statements may not match the indexes (a partial index whose predicate they do not repeat
    is not used), so its PostgreSQL figures say nothing about that tree on its own schema."""
    mine, theirs = REPO / SCHEMA_FILE, other / SCHEMA_FILE
    return theirs.exists() and theirs.read_bytes() == mine.read_bytes()


def other_tree_dir(other: Path, workdir: Path) -> Path:
    """A directory to run another tree's worker in: its ``pgqueue``, this ``benchmarks``.
    Warns when the other tree's schema differs (see :func:`same_schema`)."""
    if not (other / "pgqueue" / "__init__.py").exists():
        raise SystemExit(f"--other-tree {other}: no pgqueue package there")
    if not same_schema(other):
        log(f"WARNING: --other-tree {other} declares a different schema ({SCHEMA_FILE}); its "
            "worker runs on this checkout's tables, where its statements may miss the indexes: "
            "its PostgreSQL CPU and jobs/s are not its own. Compare those with each tree's own "
            "`python -m benchmarks.run` (its own schema); the worker's CPU per job still holds")
    d = workdir / "other-tree"
    d.mkdir()
    (d / "pgqueue").symlink_to(other.resolve() / "pgqueue")
    (d / "benchmarks").symlink_to(REPO / "benchmarks")
    return d


def drop_database(admin_dsn: str, name: str) -> None:
    for _ in range(3):
        try:
            with psycopg.connect(admin_dsn, autocommit=True) as c:
                try:
                    c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(name)))
                except psycopg.errors.SyntaxError:  # PostgreSQL < 13
                    c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
                    c.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            return
        except psycopg.Error as exc:
            log(f"could not drop {name} yet ({exc}); retrying")
            time.sleep(1)
    log(f"WARNING: the benchmark database {name} was not dropped")


class Db:
    """The benchmark database, through one autocommit connection of the driver process."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.is_superuser = bool(self.one("SELECT rolsuper FROM pg_roles "
                                          "WHERE rolname = current_user"))

    def close(self) -> None:
        self.conn.close()

    def one(self, query: Any, params: Any = None) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return row[0] if row else None

    def t(self, table: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table))

    def reset(self) -> None:
        """Empty pgqueue's tables (a fresh start for the next measurement)."""
        self.conn.execute(sql.SQL("TRUNCATE {}, {}, {}, {}").format(
            self.t("jobs"), self.t("job_history"), self.t("failed_jobs"), self.t("workers")))

    def settle(self) -> None:
        """CHECKPOINT (when allowed) so that no checkpoint from the previous step runs into the
        next measurement."""
        if self.is_superuser:
            with contextlib.suppress(psycopg.Error):
                self.conn.execute("CHECKPOINT")

    def prefill(self, n: int, chunk: int = 250_000, traced: float | None = None) -> None:
        """``n`` waiting no-op jobs, inserted server-side (the drain figures must not depend on
        the enqueue path), then ANALYZE so that every run plans from the same statistics.

        ``traced``: each job carries the W3C trace context a traced enqueue stores in ``meta``
        (its own trace and parent span id), ``traced`` of them sampled (1.0: all; 0.1: one in
        ten, as a root sampler at that ratio would have decided); None: ``meta`` is ``{}``."""
        meta = (sql.SQL("'{}'::jsonb") if traced is None else sql.SQL(
            "jsonb_build_object('otel', jsonb_build_object('traceparent', '00-' || md5(g::text) "
            "|| '-' || lpad(to_hex(g), 16, '0') || CASE WHEN g %% 1000 < {} THEN '-01' "
            "ELSE '-00' END))").format(sql.Literal(round(traced * 1000))))
        done = 0
        while done < n:
            k = min(chunk, n - done)
            self.conn.execute(sql.SQL(
                "INSERT INTO {} (queue, task, args, meta) SELECT %s, %s, "
                "jsonb_build_object('i', g), {} FROM generate_series(%s::bigint, %s::bigint) g"
            ).format(self.t("jobs"), meta), (QUEUE, TASK, done + 1, done + k))
            done += k
        self.conn.execute(sql.SQL("ANALYZE {}").format(self.t("jobs")))

    def counts(self) -> tuple[int, int]:
        """(rows in jobs, rows in job_history)."""
        return (int(self.one(sql.SQL("SELECT count(*) FROM {}").format(self.t("jobs")))),
                int(self.one(sql.SQL("SELECT count(*) FROM {}").format(self.t("job_history")))))

    def states(self) -> dict[str, int]:
        """Live jobs per state (for error messages)."""
        rows = self.conn.execute(sql.SQL("SELECT state, count(*) FROM {} GROUP BY 1").format(
            self.t("jobs"))).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def max_finished_at(self) -> float | None:
        v = self.one(sql.SQL("SELECT extract(epoch FROM max(finished_at)) FROM {}").format(
            self.t("job_history")))
        return float(v) if v is not None else None

    def stats(self) -> dict[str, float]:
        """Counters whose deltas describe what a measurement cost the server."""
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
            "       pg_current_wal_lsn() - '0/0'::pg_lsn "
            "  FROM pg_stat_database WHERE datname = current_database()").fetchone()
        assert row is not None
        jobs = self.conn.execute(
            "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables "
            "WHERE schemaname = %s AND relname = 'jobs'", (SCHEMA,)).fetchone() or (0, 0, 0, 0)
        ckpt = self.conn.execute(
            "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter").fetchone()
        keys = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted",
                "wal_bytes", "jobs_ins", "jobs_upd", "jobs_hot_upd", "jobs_del", "checkpoints")
        values = (*row, *jobs, ckpt[0] if ckpt else 0)
        return dict(zip(keys, (float(v or 0) for v in values), strict=True))

    def deciles(self, t0: float) -> list[float]:
        """Throughput (jobs/s) of each tenth of a drain, from job_history.finished_at: shows
        whether the cost per job grows or shrinks as the backlog drains."""
        rows = self.conn.execute(sql.SQL(
            "SELECT k, count(*), max(f) FROM (SELECT ntile(10) OVER (ORDER BY finished_at) k, "
            "extract(epoch FROM finished_at)::float8 f FROM {}) s GROUP BY k ORDER BY k"
        ).format(self.t("job_history"))).fetchall()
        out, prev = [], t0
        for _, count, last in rows:
            out.append(round(count / max(1e-6, last - prev), 1))
            prev = last
        return out


# ---- CPU accounting ----------------------------------------------------------------------------
def machine_cpu() -> tuple[float, float] | None:
    """(busy seconds, total seconds) summed over every CPU, from /proc/stat (Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])
    return (total - idle) / hz, total / hz


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()  # the fields after "pid (comm)"


def server_cpu(backend_pid: int) -> float | None:
    """CPU seconds the local PostgreSQL server has used so far (Linux, server on this host,
    readable /proc): the postmaster's own and its reaped children's (``utime + stime +
    cutime + cstime``, so backends that have exited count), plus every live child's. Take a
    delta around a measurement; ``backend_pid`` is any backend of that server (its parent is
    the postmaster). None when it cannot be read (a remote server)."""
    mine = _proc_stat(backend_pid)
    if mine is None:
        return None
    postmaster = int(mine[1])  # ppid
    fields = _proc_stat(postmaster)
    if fields is None:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    ticks = sum(float(x) for x in fields[11:15])
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        child = _proc_stat(pid)
        if child is not None and child[1] == str(postmaster):
            ticks += float(child[11]) + float(child[12])
    return ticks / hz


class Quiet:
    """Samples how busy the machine is just before each measurement and, with ``max_wait``,
    waits (up to that many seconds) for other work on the box to calm down first."""

    def __init__(self, max_wait: float = 0.0, threshold_pct: float = 25.0,
                 sample_s: float = 0.3) -> None:
        self.max_wait = max_wait
        self.threshold = threshold_pct
        self.sample_s = sample_s
        self.samples: list[float] = []

    def busy(self) -> float | None:
        c0 = machine_cpu()
        time.sleep(self.sample_s)
        c1 = machine_cpu()
        if not c0 or not c1 or c1[1] <= c0[1]:
            return None
        return 100 * (c1[0] - c0[0]) / (c1[1] - c0[1])

    def before(self) -> float | None:
        deadline = time.monotonic() + self.max_wait
        busy = self.busy()
        warned = False
        while (busy is not None and busy > self.threshold and self.max_wait > 0
               and time.monotonic() < deadline):
            if not warned:
                log(f"  machine {busy:.0f}% busy with other work: waiting up to "
                    f"{self.max_wait:.0f} s for it to calm down")
                warned = True
            time.sleep(1.0)
            busy = self.busy()
        if busy is not None:
            self.samples.append(round(busy, 1))
        return busy


# ---- statistics --------------------------------------------------------------------------------
@dataclass
class Figure:
    """One benchmark figure over several runs."""

    name: str
    unit: str
    runs: list[float] = field(default_factory=list)
    size: str = ""
    higher_is_better: bool = True
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.runs) if self.runs else None

    @property
    def min(self) -> float | None:
        return min(self.runs) if self.runs else None

    @property
    def max(self) -> float | None:
        return max(self.runs) if self.runs else None


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def rnd(x: float | None, digits: int = 3) -> float | None:
    if x is None:
        return None
    if abs(x) >= 100:
        return round(x, 1)
    return round(x, digits)


# ---- machine information -----------------------------------------------------------------------
def machine_info(db: Db, server: Server) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_mb": _mem_total_mb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "libpq": psycopg.pq.version(),
    }
    import pgqueue

    info["pgqueue"] = pgqueue.__version__
    info["pgqueue_commit"] = git_head()
    info["pgqueue_worktree_dirty"] = _git_dirty()
    info["pgqueue_source_sha256"] = source_digest()
    info["loadavg_at_start"] = loadavg()
    info["server"] = server.source
    info["postgres"] = db.one("SHOW server_version")
    settings = ("synchronous_commit", "fsync", "full_page_writes", "wal_sync_method",
                "commit_delay", "shared_buffers", "max_wal_size", "checkpoint_timeout",
                "wal_level", "autovacuum", "max_connections", "work_mem", "jit")
    info["pg_settings"] = {s: db.one(sql.SQL("SHOW {}").format(sql.Identifier(s)))
                           for s in settings}
    host = conninfo_to_dict(db.dsn).get("host") or "unix socket"
    info["pg_host"] = host
    return info


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _mem_total_mb() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def source_digest() -> str | None:
    """A digest of the pgqueue package being measured (others may edit it during a run)."""
    import hashlib

    import pgqueue

    root = Path(pgqueue.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        with contextlib.suppress(OSError):
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def loadavg() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def _git_dirty() -> bool | None:
    """Whether pgqueue/ or alembic/ differ from HEAD (read-only ``git diff --quiet``)."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        return None
    try:
        out = subprocess.run([git, "-C", str(REPO), "diff", "--quiet", "HEAD", "--",
                              "pgqueue", "alembic"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: False, 1: True}.get(out.returncode)


def git_head() -> str | None:
    """The checkout's commit (read-only ``git rev-parse``), if this is a git checkout."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        return None
    try:
        out = subprocess.run([git, "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
