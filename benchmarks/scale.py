"""How pgqueue scales out on one PostgreSQL: many worker processes, many queues, many listeners.

    python -m benchmarks.scale --dsn URL [--jobs N] [--idle-workers 50] [--notifies 20]

On the server at ``--dsn`` (else ``PGQUEUE_DATABASE_URL`` / ``DATABASE_URL`` / 127.0.0.1:5432)
a throwaway database ``pgqueue_bench_<hex>`` is created, migrated and dropped at the end. It
prints one markdown table (docs/scaling.md holds one) and, as its last line, a JSON object.

- **drain**: ``--jobs`` no-op jobs (default 20,000) inserted server-side, then 1, 2, 4 and 8
  worker processes (``burst=True``, concurrency 10 each) drain them, on one queue and on 8
  queues (every worker takes all 8). Throughput = jobs / (last ``finished_at`` - first
  ``started_at``), so process start-up does not count.
- **PostgreSQL CPU per job**: the CPU time (user + system) of the server's processes during
  the drain, divided by the jobs: read from ``/proc`` (the postmaster's children that live,
  plus the postmaster's ``cutime``/``cstime``, which collect the backends that exited).
  It includes everything the server did meanwhile (autovacuum, checkpointer, WAL writer), so
  run it on a server of its own. Needs the server on this host (else the column is empty).
- **connections per worker process**: the most backends of the benchmark database seen at
  once during the drain (sampled every 50 ms), minus this script's own, divided by the workers.
- **pickup with idle listeners**: ``--idle-workers`` idle workers (concurrency 1, in processes
  of 5 workers that share their process's App and pools, each with its own LISTEN connection;
  poll interval one hour so that only NOTIFY wakes them); ``--notifies`` jobs enqueued one at
  a time. Latency = handler start minus the enqueue's commit; *claims per NOTIFY* = the claim
  statements the workers ran while the jobs were enqueued, per job (one of them gets it; the
  rest are wasted).

Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from psycopg import sql

from benchmarks._common import (
    REPO,
    Children,
    Db,
    choose_server,
    log,
    percentile,
    throwaway_database,
)
from benchmarks._tasks import QUEUE, SCHEMA, TASK, make_app

PROCESSES = (1, 2, 4, 8)
QUEUE_COUNTS = (1, 8)
CONCURRENCY = 10
IDLE_PER_PROCESS = 5
_TICK = os.sysconf("SC_CLK_TCK")


def queue_names(n: int) -> list[str]:
    return [QUEUE] if n == 1 else [f"{QUEUE}-{i}" for i in range(n)]


# ---- the worker processes ----------------------------------------------------------------------
def worker_main(a: argparse.Namespace) -> int:
    """One process: ``--workers`` workers on ``--queues``; drain (burst) or idle."""
    queues = a.queues.split(",")
    idle = a.mode == "idle"
    starts: dict[int, float] = {}
    claims: list[float] = []  # when each claim statement returned
    stop = asyncio.Event()

    def record(i: int) -> None:
        starts[i] = time.time()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # the workers of one process share its App (its pools); each has its own listener
        app = make_app(a.dsn, record if idle else None)
        claim = app.driver.claim

        async def counted(*args: Any, **kw: Any) -> Any:
            jobs = await claim(*args, **kw)
            claims.append(time.time())
            return jobs

        app.driver.claim = counted  # type: ignore[method-assign]
        workers = [app.worker(queues=queues, concurrency=a.concurrency, burst=not idle,
                              poll_interval=3600.0 if idle else 1.0)
                   for _ in range(a.workers)]
        runs = [asyncio.create_task(w.run()) for w in workers]
        if idle:
            await asyncio.gather(*(asyncio.to_thread(w.started.wait, 60) for w in workers))
            Path(a.out + ".ready").touch()
            await stop.wait()
            for w in workers:
                w.stop()
        await asyncio.gather(*runs)
        await app.aclose()
        app.close()

    asyncio.run(main())
    with open(a.out, "w") as f:
        json.dump({"starts": starts, "claims": claims}, f)
    return 0


def spawn(children: Children, dsn: str, out: str, *, mode: str, queues: list[str],
          workers: int = 1, concurrency: int = CONCURRENCY) -> Any:
    return children.popen(
        [sys.executable, "-m", "benchmarks.scale", "--worker", "--dsn", dsn, "--out", out,
         "--mode", mode, "--queues", ",".join(queues), "--workers", str(workers),
         "--concurrency", str(concurrency)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


# ---- measurements --------------------------------------------------------------------------------
def server_cpu(postmaster: int | None) -> float | None:
    """Seconds of CPU the server used so far: its live processes plus the reaped ones."""
    if postmaster is None:
        return None
    total = 0
    try:
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    except OSError:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def find_postmaster(db: Db) -> int | None:
    """The postmaster's pid: the parent of our backend, if it runs on this host."""
    pid = db.one("SELECT pg_backend_pid()")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        comm = Path(f"/proc/{fields[1]}/comm").read_text().strip()
    except OSError:
        return None
    return int(fields[1]) if comm.startswith("postgres") else None


def prefill(db: Db, n: int, queues: list[str]) -> None:
    db.conn.execute(sql.SQL(
        "INSERT INTO {} (queue, task, args) SELECT (%s::text[])[1 + g %% %s], %s, "
        "jsonb_build_object('i', g) FROM generate_series(1, %s) g").format(db.t("jobs")),
        (queues, len(queues), TASK, n))
    db.conn.execute(sql.SQL("ANALYZE {}").format(db.t("jobs")))


def drain(db: Db, children: Children, tmp: str, postmaster: int | None, *, jobs: int,
          processes: int, queues: list[str]) -> dict[str, Any]:
    db.reset()
    prefill(db, jobs, queues)
    db.settle()
    cpu0 = server_cpu(postmaster)
    procs = [spawn(children, db.dsn, f"{tmp}/d{i}.json", mode="drain", queues=queues)
             for i in range(processes)]
    peak = 0
    while any(p.poll() is None for p in procs):
        n = db.one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND pid <> pg_backend_pid()")
        peak = max(peak, int(n))
        time.sleep(0.05)
    cpu1 = server_cpu(postmaster)
    for p in procs:
        if p.returncode != 0:
            raise SystemExit(f"a drain worker failed with code {p.returncode}")
        children.forget(p)
    left, done = db.counts()
    if left or done != jobs:
        raise SystemExit(f"drain incomplete: {left} left, {done} finished of {jobs}")
    span = float(db.one(sql.SQL("SELECT extract(epoch FROM max(finished_at) - min(started_at)) "
                                "FROM {}").format(db.t("job_history"))))
    return {"processes": processes, "queues": len(queues), "jobs": jobs,
            "per_s": jobs / span,
            "pg_cpu_ms_per_job": (None if cpu0 is None or cpu1 is None
                                  else 1000 * (cpu1 - cpu0) / jobs),
            "connections_per_process": peak / processes}


def pickup(db: Db, children: Children, tmp: str, *, idle_workers: int,
           notifies: int) -> dict[str, Any]:
    db.reset()
    app = make_app(db.dsn)
    groups = [min(IDLE_PER_PROCESS, idle_workers - i)
              for i in range(0, idle_workers, IDLE_PER_PROCESS)]
    procs = [spawn(children, db.dsn, f"{tmp}/p{i}.json", mode="idle", queues=[QUEUE],
                   workers=g, concurrency=1) for i, g in enumerate(groups)]
    deadline = time.monotonic() + 120
    while not all(Path(f"{tmp}/p{i}.json.ready").exists() for i in range(len(procs))):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit("the idle workers did not start")
        time.sleep(0.1)
    connections = int(db.one("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                             "current_database() AND pid <> pg_backend_pid()"))
    time.sleep(2.0)  # let start-up claims settle before counting
    enqueued: dict[int, float] = {}
    window = (time.time(), 0.0)
    for i in range(notifies):
        app.enqueue(TASK, {"i": i})
        enqueued[i] = time.time()
        time.sleep(0.3)
    window = (window[0], time.time())
    time.sleep(1.0)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    starts: dict[int, float] = {}
    calls = 0
    for i, p in enumerate(procs):
        p.wait(60)
        children.forget(p)
        out = json.loads(Path(f"{tmp}/p{i}.json").read_text())
        starts |= {int(k): v for k, v in out["starts"].items()}
        calls += sum(window[0] <= t <= window[1] for t in out["claims"])
    app.close()
    lat = [1000 * (starts[i] - enqueued[i]) for i in enqueued if i in starts]
    if len(lat) != notifies:
        raise SystemExit(f"pickup: {notifies - len(lat)} jobs were not picked up")
    return {"idle_workers": idle_workers, "notifies": notifies,
            "p50_ms": statistics.median(lat), "p95_ms": percentile(lat, 95),
            "claims_per_notify": calls / notifies,
            "connections_per_worker": connections / idle_workers}


def table(drains: list[dict[str, Any]], pick: dict[str, Any]) -> str:
    one = {d["processes"]: d["per_s"] for d in drains if d["queues"] == 1}
    lines = ["| worker processes | queues | jobs/s | vs 1 process | PostgreSQL CPU ms/job "
             "| connections/process |", "|---:|---:|---:|---:|---:|---:|"]
    for d in drains:
        base = one.get(1) if d["queues"] == 1 else next(
            (x["per_s"] for x in drains if x["queues"] == d["queues"] and x["processes"] == 1),
            None)
        cpu = "n/a" if d["pg_cpu_ms_per_job"] is None else f"{d['pg_cpu_ms_per_job']:.3f}"
        ratio = f"{d['per_s'] / base:.2f}x" if base else ""
        lines.append(f"| {d['processes']} | {d['queues']} | {d['per_s']:,.0f} | {ratio} | {cpu} "
                     f"| {d['connections_per_process']:.1f} |")
    lines += ["", "| idle listening workers | jobs (one NOTIFY each) | pickup p50 ms | p95 ms "
              "| claims per NOTIFY | connections/worker |", "|---:|---:|---:|---:|---:|---:|",
              f"| {pick['idle_workers']} | {pick['notifies']} | {pick['p50_ms']:.1f} "
              f"| {pick['p95_ms']:.1f} | {pick['claims_per_notify']:.1f} "
              f"| {pick['connections_per_worker']:.1f} |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", default=None, help="server (a throwaway database is created on it)")
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (default 20,000)")
    p.add_argument("--idle-workers", type=int, default=50)
    p.add_argument("--notifies", type=int, default=20)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("drain", "idle"), help=argparse.SUPPRESS)
    p.add_argument("--queues", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker_main(a)
    server = choose_server(a.dsn)
    children = Children()
    try:
        with throwaway_database(server.admin_dsn) as dsn, \
                tempfile.TemporaryDirectory(prefix="pgqueue-scale-") as tmp:
            db = Db(dsn)
            postmaster = find_postmaster(db)
            if postmaster is None:
                log("the server is not on this host: no PostgreSQL CPU figures")
            drains = []
            for nq in QUEUE_COUNTS:
                for n in PROCESSES:
                    log(f"drain: {n} process(es), {nq} queue(s), {a.jobs} jobs")
                    drains.append(drain(db, children, tmp, postmaster, jobs=a.jobs,
                                        processes=n, queues=queue_names(nq)))
            log(f"pickup: {a.idle_workers} idle workers, {a.notifies} jobs")
            pick = pickup(db, children, tmp, idle_workers=a.idle_workers,
                          notifies=a.notifies)
            db.close()
    finally:
        children.kill_all()
        server.stop()
    print(table(drains, pick))
    print(json.dumps({"schema": SCHEMA, "drain": drains, "pickup": pick,
                      "loadavg": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
