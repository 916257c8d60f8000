"""The ceiling: what PostgreSQL itself does on this box with the same SQL shapes, driven by
``pgbench`` (C, no Python in the loop) against the benchmark database, in the same run.

Scripts (``:name`` are pgbench variables, set with ``-D``; in ``-M prepared`` mode they are
bound as parameters, as psycopg binds pgqueue's):

- ``insert_bare``: one autocommit ``INSERT ... RETURNING id`` of one job row;
- ``insert_notify``: ``BEGIN; INSERT ...; SELECT pg_notify(...); COMMIT`` (4 round trips);
- ``insert_one_tx``: ``BEGIN; <pgqueue's insert_one>; COMMIT`` -- pgqueue's own statement, i.e.
  exactly what ``with conn.transaction(): app.enqueue(..., conn=conn)`` sends;
- ``insert_1000``: one ``INSERT ... VALUES`` of 1,000 job rows (simple protocol: the rows are
  sent and parsed every time, as an enqueue's would be), reported in rows/s;
- ``claim_complete``: pgqueue's claim of one queue (``claim_one``, limit 50), then
  ``finish_many`` of the claimed ids, two autocommit statements as the worker runs them;
  reported in jobs/s. The claim is wrapped in ``WITH claimed AS (...) SELECT array_agg(...)``
  so that pgbench can ``\\gset`` the ids into the completion, and each client's claim reads
  after the key of the last job it claimed (``KEY_VARIABLES``), as a saturated worker's does.

pgqueue's statements are rendered from :func:`pgqueue.drivers.postgres.sql.statements` with
psycopg's ``as_string(conn)``; their ``%(name)s`` placeholders become pgbench variables.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks._common import Children, Db, Quiet, log, machine_cpu
from benchmarks._tasks import QUEUE, SCHEMA, TASK

CLAIM_LIMIT = 50
JOB_COLS = "(queue, task, args, priority, max_attempts, run_at, unique_key, timeout_s, meta)"
DEFINES = {"queue": QUEUE, "task": TASK, "args": '{"i": 1}', "priority": "20",
           "max_attempts": "5", "meta": "{}", "worker": "pgbench-ceiling",
           "limit": str(CLAIM_LIMIT), "lease": "30"}


def find_pgbench() -> str | None:
    """``pgbench`` on PATH, else the one next to the embedded server's binaries."""
    found = shutil.which("pgbench")
    if found:
        return found
    try:
        from pgqueue._embedded import find_bindir

        bindir = find_bindir()
    except Exception:
        bindir = None
    if bindir is not None and (bindir / "pgbench").is_file():
        return str(bindir / "pgbench")
    return None


def _substitute(text: str, mapping: dict[str, str], what: str) -> str:
    names = set(re.findall(r"%\((\w+)\)s", text))
    unknown = names - set(mapping)
    if unknown:
        raise ValueError(f"pgqueue's {what} has parameters the ceiling script does not know: "
                         f"{sorted(unknown)}; update benchmarks/_ceiling.py")
    return re.sub(r"%\((\w+)\)s", lambda m: mapping[m.group(1)], text)


def _flat(text: str) -> str:
    return "\n".join(line for line in text.strip().splitlines() if line.strip())


#: How the claim-and-complete script fills each parameter of pgqueue's ``finish_many`` from
#: the rows the claim returned (aggregated into arrays and ``\gset`` into pgbench variables).
#: In id order: ``finish_many`` wants its batch sorted by id, as the driver sends it.
FINISH_AGGREGATES = {
    "ids": "array_agg(id ORDER BY id)",
    "attempts": "array_agg(attempt ORDER BY id)",
    "states": "array_agg('succeeded'::text)",
    "results": "array_agg(NULL::jsonb)",
    "result_jsons": "array_agg(NULL::jsonb)",
}


#: The pgbench variables holding each client's claim key (``ap``, ``ar``, ``ai``: the
#: priority, run_at and id of the last job it claimed), the columns they come from, and where
#: they start (the head of the claim index).
KEY_VARIABLES = {"ap": "priority", "ar": "run_at", "ai": "id"}
KEY_START = {"ap": "-1", "ar": "-infinity", "ai": "0"}


def scripts(conn: psycopg.Connection[Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The pgbench scripts, with pgqueue's statements rendered for this connection, and the
    scripts that could not be rendered (name -> why)."""
    from pgqueue.drivers.postgres.sql import statements

    st = statements(SCHEMA)
    jobs = f'"{SCHEMA}".jobs'
    insert = (f"INSERT INTO {jobs} {JOB_COLS}\n"
              "VALUES (:queue, :task, :args::jsonb, :priority, :max_attempts, now(), NULL, NULL,"
              " :meta::jsonb)\nRETURNING id;")
    rows = ",\n".join(
        f"('{QUEUE}', '{TASK}', '{{\"i\": {k}}}', 20, 5, now(), NULL, NULL, '{{}}')"
        for k in range(1000))
    chan = st.jobs_channel.replace("'", "''")
    out = {
        "insert_bare": insert,
        "insert_notify": f"BEGIN;\n{insert}\nSELECT pg_notify('{chan}', :queue);\nCOMMIT;",
        "insert_1000": f"INSERT INTO {jobs} {JOB_COLS} VALUES\n{rows};",
    }
    errors: dict[str, str] = {}
    try:
        insert_one = _substitute(st.insert_one.as_string(conn), {
            "queue": ":queue", "task": ":task", "args": ":args", "priority": ":priority",
            "max_attempts": ":max_attempts", "run_at": "NULL", "delay": "NULL",
            "unique_key": "NULL", "timeout_s": "NULL", "meta": ":meta",
            "concurrency_key": "NULL"}, "insert_one")
        out["insert_one_tx"] = f"BEGIN;\n{_flat(insert_one)};\nCOMMIT;"
    except ValueError as exc:
        errors["insert_one_tx"] = str(exc)
    try:
        claim = _substitute(st.claim_one(CLAIM_LIMIT).as_string(conn), {
            "queue": ":queue", "limit": ":limit", "worker": ":worker", "lease": ":lease",
            # after the key of the last job this client claimed (the head at first), as a
            # saturated worker's claim cursor reads: from the head, every claim walked the
            # dead entries of the jobs claimed before it, and the ceiling fell by half within
            # its 20 s whenever vacuum could not keep up
            "after_p": ":ap", "after_r": ":ar", "after_i": ":ai"},
            "claim_one")
        finish_text = st.finish_many.as_string(conn)
        wanted = sorted(set(re.findall(r"%\((\w+)\)s", finish_text)) - {"worker"})
        unknown = [w for w in wanted if w not in FINISH_AGGREGATES]
        if unknown:
            raise ValueError(f"pgqueue's finish_many has parameters the ceiling script does "
                             f"not know: {unknown}; update benchmarks/_ceiling.py")
        finish = _substitute(finish_text, {w: f":{w}" for w in [*wanted, "worker"]},
                             "finish_many")
        aggs = ",\n       ".join(
            [f"coalesce({FINISH_AGGREGATES[w]}, '{{}}') AS {w}" for w in wanted]
            + [f"coalesce((SELECT {col} FROM claimed ORDER BY priority DESC, run_at DESC, "
               f"id DESC LIMIT 1), :{var}) AS {var}" for var, col in KEY_VARIABLES.items()])
        out["claim_complete"] = (
            f"WITH claimed AS (\n{_flat(claim)}\n)\n"
            f"SELECT {aggs}\n  FROM claimed\n"
            "\\gset\n"
            f"{_flat(finish)};")
    except ValueError as exc:
        errors["claim_complete"] = str(exc)
    return out, errors


@dataclass
class Ceiling:
    key: str
    label: str
    unit: str
    clients: int
    duration_s: float
    value: float | None = None
    per_second: list[float] = field(default_factory=list)
    tps: float | None = None
    transactions: int | None = None
    failed: int | None = None
    note: str = ""
    machine_busy_pct: float | None = None

    def as_json(self) -> dict[str, Any]:
        ps = self.per_second[1:] if len(self.per_second) > 2 else self.per_second
        return {"value": self.value, "unit": self.unit, "clients": self.clients,
                "duration_s": self.duration_s, "tps": self.tps,
                "transactions": self.transactions, "failed": self.failed,
                "min_1s": min(ps) if ps else None, "max_1s": max(ps) if ps else None,
                "per_second": [round(x) for x in self.per_second],
                "machine_busy_pct": (round(self.machine_busy_pct, 1)
                                     if self.machine_busy_pct is not None else None),
                "note": self.note or None}


class CeilingRunner:
    def __init__(self, pgbench: str, db: Db, children: Children, duration: int,
                 workdir: Path, quiet: Quiet | None = None) -> None:
        self.quiet = quiet or Quiet()
        self.pgbench = pgbench
        self.db = db
        self.children = children
        self.duration = duration
        self.workdir = workdir
        self.scripts, self.errors = scripts(db.conn)
        for name, text in self.scripts.items():
            (workdir / f"{name}.sql").write_text(text + "\n")

    def version(self) -> str:
        out = subprocess.run([self.pgbench, "--version"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip()

    def command(self, script: str, clients: int, mode: str) -> list[str]:
        cmd = [self.pgbench, "-n", "-M", mode, "-c", str(clients), "-j", "2",
               "-T", str(self.duration), "-P", "1"]
        for k, v in {**DEFINES, **KEY_START}.items():
            cmd += ["-D", f"{k}={v}"]
        return [*cmd, "-f", str(self.workdir / f"{script}.sql"), self.db.dsn]

    def _pgbench(self, script: str, clients: int, mode: str) -> dict[str, Any]:
        cmd = self.command(script, clients, mode)
        cpu0 = machine_cpu()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = self.children.popen(cmd, stdout=out, stderr=err, text=True)
            try:
                proc.wait(timeout=self.duration + 120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                self.children.forget(proc)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench {script} failed (exit {proc.returncode}):\n"
                               f"{stderr[-3000:]}\n{stdout[-2000:]}")
        tps = re.search(r"^tps = ([\d.]+)", stdout, re.M)
        tx = re.search(r"number of transactions actually processed: (\d+)", stdout)
        failed = re.search(r"number of failed transactions: (\d+)", stdout)
        progress = [float(m) for m in re.findall(r"^progress: [\d.]+ s, ([\d.]+) tps", stderr,
                                                 re.M)]
        if tps is None or tx is None:
            raise RuntimeError(f"cannot read pgbench's output:\n{stdout}\n{stderr[-2000:]}")
        cpu1 = machine_cpu()
        busy = (100 * (cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1])
                if cpu0 and cpu1 and cpu1[1] > cpu0[1] else None)
        return {"tps": float(tps.group(1)), "tx": int(tx.group(1)),
                "failed": int(failed.group(1)) if failed else 0, "progress": progress,
                "busy": busy}

    def _prepare(self, prefill: int = 0) -> None:
        self.db.reset()
        if prefill:
            self.db.prefill(prefill)
        self.db.settle()
        self.quiet.before()

    def simple(self, key: str, label: str, script: str, *, mode: str = "prepared",
               rows_per_tx: int = 1, unit: str = "tx/s") -> Ceiling:
        c = Ceiling(key, label, unit, 1, self.duration)
        self._prepare()
        r = self._pgbench(script, 1, mode)
        c.tps, c.transactions, c.failed = r["tps"], r["tx"], r["failed"]
        c.machine_busy_pct = r["busy"]
        c.value = r["tps"] * rows_per_tx
        c.per_second = [p * rows_per_tx for p in r["progress"]]
        self.db.reset()
        return c

    def claim_complete(self, clients: int, guess_jobs_per_s: float) -> Ceiling:
        c = Ceiling(f"claim_complete_c{clients}_jobs_per_s",
                    f"claim {CLAIM_LIMIT} + complete, {clients} client{'s' * (clients > 1)}",
                    "jobs/s", clients, self.duration)
        prefill = max(100_000, int(1.6 * guess_jobs_per_s * self.duration))
        for _attempt in range(2):
            self._prepare(prefill)
            _, hist0 = self.db.counts()
            r = self._pgbench("claim_complete", clients, "prepared")
            left, hist1 = self.db.counts()
            jobs = hist1 - hist0
            elapsed = r["tx"] / r["tps"] if r["tps"] else self.duration
            c.tps, c.transactions, c.failed = r["tps"], r["tx"], r["failed"]
            c.machine_busy_pct = r["busy"]
            c.value = jobs / elapsed
            per_tx = jobs / r["tx"] if r["tx"] else 0.0
            c.per_second = [p * per_tx for p in r["progress"]]
            c.note = f"{prefill:,} jobs pre-filled, {left:,} left"
            if left > 0:
                break
            log(f"  claim+complete ran dry with {prefill:,} jobs; again with twice as many")
            prefill *= 2
        else:
            c.note += " (RAN DRY: figure is a lower bound)"
        self.db.reset()
        return c

    def run_all(self) -> list[Ceiling]:
        """Every ceiling; one that cannot be measured is reported with a note, not fatal."""
        out: list[Ceiling] = []

        def step(key: str, label: str, unit: str, clients: int, script: str,
                 fn: Any) -> Ceiling:
            log(f"ceiling: {label} (pgbench -T {self.duration}) ...")
            t = time.perf_counter()
            if script in self.errors:
                c = Ceiling(key, label, unit, clients, self.duration, note=self.errors[script])
                log(f"  not measured: {c.note}")
            else:
                try:
                    c = fn()
                    log(f"  {c.value:,.0f} {c.unit} ({time.perf_counter() - t:.0f} s)")
                except (RuntimeError, psycopg.Error, OSError) as exc:
                    c = Ceiling(key, label, unit, clients, self.duration,
                                note=f"failed: {str(exc)[:500]}")
                    log(f"  failed: {exc}")
            out.append(c)
            return c

        step("insert_bare_per_s", "bare INSERT", "tx/s", 1, "insert_bare",
             lambda: self.simple("insert_bare_per_s", "INSERT 1 row, autocommit, 1 client",
                                 "insert_bare"))
        step("insert_notify_tx_per_s", "BEGIN; INSERT; pg_notify; COMMIT", "tx/s", 1,
             "insert_notify",
             lambda: self.simple("insert_notify_tx_per_s",
                                 "BEGIN; INSERT; pg_notify; COMMIT, 1 client", "insert_notify"))
        step("insert_one_tx_per_s", "BEGIN; pgqueue insert_one; COMMIT", "tx/s", 1,
             "insert_one_tx",
             lambda: self.simple("insert_one_tx_per_s",
                                 "BEGIN; pgqueue insert_one; COMMIT, 1 client", "insert_one_tx"))
        step("insert_1000_rows_per_s", "1,000-row INSERT", "rows/s", 1, "insert_1000",
             lambda: self.simple("insert_1000_rows_per_s",
                                 "INSERT 1,000 rows per statement, 1 client", "insert_1000",
                                 mode="simple", rows_per_tx=1000, unit="rows/s"))
        c1 = step("claim_complete_c1_jobs_per_s", "claim 50 + complete, 1 client", "jobs/s", 1,
                  "claim_complete", lambda: self.claim_complete(1, 40_000))
        step("claim_complete_c4_jobs_per_s", "claim 50 + complete, 4 clients", "jobs/s", 4,
             "claim_complete", lambda: self.claim_complete(4, 2.5 * (c1.value or 40_000)))
        return out
