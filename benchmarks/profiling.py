"""Where a worker's time goes: profile ONE worker process draining a backlog.

    python -m benchmarks.profiling [--jobs 50000] [--concurrency 100] [--dsn URL]
                                   [--no-py-spy] [--no-cprofile] [--single 2000]

On a throwaway database (same server choice as ``benchmarks.run``), three drains of the same
backlog, each by a fresh worker subprocess:

1. **counted**: the worker's driver calls are wrapped and counted (claims and their batch sizes,
   completions and their batch sizes, ``next_run_at``, heartbeats, notifications), alongside
   the server's own counters (transactions and WAL per job, HOT updates);
2. **py-spy** (``pip install py-spy``): sampled wall-clock stacks, idle included, so the
   split between "waiting for the database" (the event loop in ``select``) and "running
   Python" is visible, with the functions and packages that take the Python time;
3. **cProfile**: exact Python function calls per job (cProfile's overhead inflates times;
   only the call counts and the ranking are used).

``--single N`` also profiles N single enqueues (one per transaction) in this process.
Prints a readable report and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pstats
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks._common import (
    REPO,
    Children,
    Db,
    Quiet,
    choose_server,
    git_head,
    log,
    machine_cpu,
    sigterm_as_interrupt,
    source_digest,
    throwaway_database,
)
from benchmarks._tasks import TASK, make_app

FRAME = re.compile(r"^(?P<name>.*) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")
IDLE_LEAVES = ("select", "poll", "epoll", "_run_once", "wait")


def _worker_cmd(dsn: str, concurrency: int, out: Path, extra: list[str],
                parent: int | None = None) -> list[str]:
    """The worker's command line; ``parent``: its expected parent pid (0: py-spy's child)."""
    return [sys.executable, "-m", "benchmarks._worker", "--dsn", dsn, "--mode", "drain",
            "--concurrency", str(concurrency), "--out", str(out),
            "--parent-pid", str(os.getpid() if parent is None else parent), *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


QUIET = Quiet()


def drain_once(db: Db, children: Children, n: int, cmd: list[str], out: Path,
               timeout: float) -> dict[str, Any]:
    db.reset()
    db.prefill(n)
    db.settle()
    busy_before = QUIET.before()
    s0, cpu0 = db.stats(), machine_cpu()
    logf = out.with_suffix(".log")
    with open(logf, "w") as lf:
        proc = children.popen(cmd, cwd=REPO, env=_env(), stdout=lf, stderr=lf)
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        children.forget(proc)
    cpu1 = machine_cpu()
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"worker failed ({proc.returncode}):\n{logf.read_text()[-3000:]}")
    left, done = db.counts()
    if left or done != n:
        raise RuntimeError(f"drain incomplete: {left} left, {done} done of {n}")
    time.sleep(0.2)
    s1 = db.stats()
    r: dict[str, Any] = json.loads(out.read_text())
    elapsed = r["t_end"] - r["t0"]
    r["jobs_per_s"] = n / elapsed
    r["server"] = {k: s1[k] - s0[k] for k in s0}
    r["machine_busy_before_pct"] = busy_before
    if cpu0 and cpu1:
        r["machine_busy_pct"] = 100 * (cpu1[0] - cpu0[0]) / max(1e-9, cpu1[1] - cpu0[1])
        r["machine_cpu_s"] = cpu1[0] - cpu0[0]
    return r


# ---- py-spy --------------------------------------------------------------------------------------
def _frame(text: str) -> tuple[str, str]:
    m = FRAME.match(text.strip())
    if not m:
        return text.strip(), ""
    return m.group("name"), m.group("path") or ""


def _package(path: str) -> str:
    p = "/" + path.replace("\\", "/")
    for key, label in (("/pgqueue/", "pgqueue"), ("/psycopg_pool/", "psycopg_pool"),
                       ("/psycopg/", "psycopg"), ("/psycopg_binary/", "psycopg (C)"),
                       ("/asyncio/", "asyncio"), ("/tenacity/", "tenacity"),
                       ("/json/", "json"), ("/logging/", "logging"),
                       ("/sqlalchemy/", "sqlalchemy"), ("/alembic/", "alembic"),
                       ("/benchmarks/", "benchmarks")):
        if key in p:
            return label
    if path in ("~", ""):
        return "builtins (C)"
    if path.startswith("<string>"):
        return "generated (dataclass __init__)"
    if path.startswith("<frozen"):
        return "import machinery"
    return "stdlib/other"


def summarise_pyspy(raws: list[Path], top: int = 25) -> dict[str, Any]:
    """Aggregate py-spy's collapsed stacks (``--format raw``) of one or more runs. Samples
    outside ``asyncio.run`` (interpreter start, imports, exit) are counted apart."""
    total = idle = outside = 0
    self_fn: collections.Counter[str] = collections.Counter()
    self_pkg: collections.Counter[str] = collections.Counter()
    incl_pgq: collections.Counter[str] = collections.Counter()
    for raw in raws:
        for line in raw.read_text().splitlines():
            stack_text, _, count_text = line.rpartition(" ")
            try:
                count = int(count_text)
            except ValueError:
                continue
            frames = [_frame(f) for f in stack_text.split(";") if f]
            if not frames:
                continue
            total += count
            leaf_name, leaf_path = frames[-1]
            if leaf_path.endswith("selectors.py") and leaf_name.endswith(".select"):
                idle += count
                continue
            if not any(path.endswith("asyncio/runners.py") for _, path in frames):
                outside += count
                continue
            self_fn[f"{leaf_name} ({_short(leaf_path)})"] += count
            self_pkg[_package(leaf_path)] += count
            seen: set[str] = set()
            for name, path in frames:
                if _package(path) == "pgqueue":
                    key = f"{name} ({_short(path)})"
                    if key not in seen:
                        seen.add(key)
                        incl_pgq[key] += count
    busy = total - idle - outside
    return {
        "samples": total,
        "idle_pct": 100 * idle / total if total else None,
        "busy_pct": 100 * busy / total if total else None,
        "outside_loop_pct": 100 * outside / total if total else None,
        "self_by_package_pct_of_busy": {k: 100 * v / busy for k, v in self_pkg.most_common()}
        if busy else {},
        "self_top_pct_of_busy": [(k, 100 * v / busy) for k, v in self_fn.most_common(top)]
        if busy else [],
        "pgqueue_inclusive_pct_of_busy": [(k, 100 * v / busy) for k, v in
                                          incl_pgq.most_common(top)] if busy else [],
    }


def _short(path: str) -> str:
    p = path.replace("\\", "/")
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in p:
            p = p.split(marker, 1)[1]
            break
    return p


# ---- cProfile ------------------------------------------------------------------------------------
#: the worker's phases, each the inclusive time of these (file, function) roots; a coroutine's
#: time counts only while it runs (cProfile stops its clock across an await), so these are CPU,
#: not waiting. Times are inflated by cProfile: read the shares.
PHASES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("claim: statement, rows fetched and decoded", (("postgres/driver.py", "_claim_unlimited"),
                                                    ("postgres/driver.py", "_claim_one_limited"),
                                                    ("postgres/driver.py", "_limited_plan"))),
    ("  of which: rows decoded into Jobs", (("postgres/driver.py", "_job"),)),
    ("dispatch: one task per job", (("worker/_producer.py", "_start"),
                                    ("worker/_producer.py", "_done"))),
    ("handler call (no-op) and its context", (("worker/_executor.py", "_call"),)),
    ("bookkeeping: events, metrics, spans", (("worker/_executor.py", "_emit"),
                                             ("_tracing.py", "start_consume"),
                                             ("_tracing.py", "end_consume"))),
    ("outcome encode and hand-off", (("_codec.py", "result_json"),
                                     ("worker/_completer.py", "add"),
                                     ("worker/_completer.py", "requeue"))),
    ("completer: batches written", (("postgres/driver.py", "finish_many"),
                                    ("postgres/driver.py", "requeue_many"))),
)


def summarise_cprofile(path: Path, n: int, top: int = 25) -> dict[str, Any]:
    st = pstats.Stats(str(path))
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total_calls = sum(v[1] for v in raw.values())  # primitive + recursive: v[1] = ncalls
    rows = []
    for (file, line, name), (_cc, nc, tt, ct, _) in raw.items():
        rows.append({"fn": f"{name} ({_short(file)}:{line})", "calls_per_job": nc / n,
                     "tottime_s": tt, "cumtime_s": ct, "pkg": _package(file)})
    by_calls = sorted(rows, key=lambda r: -r["calls_per_job"])[:top]
    by_tottime = sorted(rows, key=lambda r: -r["tottime_s"])[:top]
    calls_pkg: collections.Counter[str] = collections.Counter()
    for r in rows:
        calls_pkg[r["pkg"]] += r["calls_per_job"]
    phases = {}
    for phase, roots in PHASES:
        ct = sum(v[3] for (file, _line, name), v in raw.items()
                 if any(file.endswith(f) and name == fn for f, fn in roots))
        phases[phase] = {"us_per_job": 1e6 * ct / n, "pct": 100 * ct / max(1e-9, st.total_tt)}  # type: ignore[attr-defined]
    return {"function_calls_per_job": total_calls / n,
            "phases": phases,
            "calls_per_job_by_package": dict(calls_pkg.most_common()),
            "top_by_calls_per_job": by_calls, "top_by_tottime": by_tottime,
            "total_tottime_s": st.total_tt}  # type: ignore[attr-defined]


# ---- single enqueue ------------------------------------------------------------------------------
def profile_single(dsn: str, db: Db, n: int, out: Path) -> dict[str, Any]:
    import cProfile

    app = make_app(dsn)
    db.reset()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(10):
            with conn.transaction():
                app.enqueue(TASK, {"i": -i}, conn=conn)
        t = time.perf_counter()
        cpu = time.process_time()
        for i in range(n):
            with conn.transaction():
                app.enqueue(TASK, {"i": i}, conn=conn)
        plain = {"jobs_per_s": n / (time.perf_counter() - t),
                 "client_cpu_us_per_job": 1e6 * (time.process_time() - cpu) / n}
        prof = cProfile.Profile()
        prof.enable()
        for i in range(n):
            with conn.transaction():
                app.enqueue(TASK, {"i": i}, conn=conn)
        prof.disable()
        prof.dump_stats(str(out))
    app.close()
    db.reset()
    return {"plain": plain, "cprofile": summarise_cprofile(out, n)}


def profile_bulk(dsn: str, db: Db, n: int, out: Path) -> dict[str, Any]:
    import cProfile

    app = make_app(dsn)
    db.reset()
    app.enqueue_many(TASK, [{"i": i} for i in range(10)])
    db.reset()
    args = [{"i": i} for i in range(n)]
    t, cpu = time.perf_counter(), time.process_time()
    app.enqueue_many(TASK, args)
    plain = {"jobs_per_s": n / (time.perf_counter() - t),
             "client_cpu_us_per_job": 1e6 * (time.process_time() - cpu) / n}
    db.reset()
    prof = cProfile.Profile()
    prof.enable()
    app.enqueue_many(TASK, args)
    prof.disable()
    prof.dump_stats(str(out))
    app.close()
    db.reset()
    return {"plain": plain, "cprofile": summarise_cprofile(out, n)}


# ---- report --------------------------------------------------------------------------------------
def report(res: dict[str, Any]) -> str:
    n = res["jobs"]
    lines = [f"profile: drain of {n:,} no-op jobs, ONE worker, concurrency "
             f"{res['concurrency']}; pgqueue at {res.get('pgqueue_commit')}, source digest "
             f"{res.get('pgqueue_source_sha256')}", ""]
    c = res.get("counted")
    if c:
        srv = c["server"]
        lines += [f"machine busy with other work just before each drain: "
                  f"{', '.join(f'{x:.0f}%' for x in QUIET.samples)}",
                  f"counted run: {c['jobs_per_s']:,.0f} jobs/s; worker CPU "
                  f"{c['cpu_user_s'] + c['cpu_sys_s']:.2f} s = "
                  f"{100 * (c['cpu_user_s'] + c['cpu_sys_s']) / c['elapsed_s']:.0f}% of one "
                  f"core over {c['elapsed_s']:.2f} s; machine busy "
                  f"{c.get('machine_busy_pct', 0):.0f}% of all CPUs; worker CPU per job "
                  f"{1e6 * (c['cpu_user_s'] + c['cpu_sys_s']) / n:.0f} us, whole machine CPU "
                  f"per job {1e6 * c.get('machine_cpu_s', 0) / n:.0f} us",
                  f"  server: {srv['xact_commit'] / n:.3f} transactions/job, "
                  f"{srv['wal_bytes'] / n:,.0f} WAL bytes/job, jobs UPDATEs HOT: "
                  f"{srv['jobs_hot_upd']:.0f} of {srv['jobs_upd']:.0f}",
                  "  driver calls (calls, rows, wall s summed over concurrent awaits):"]
        for name, s in sorted(c["calls"].items(), key=lambda kv: -kv[1].get("calls", 0)):
            extra = ""
            if s.get("rows"):
                extra = f", {s['rows'] / s['calls']:.1f} rows/call"
            if name == "claim":
                extra += (f", asked {s['asked'] / s['calls']:.1f}/call, "
                          f"{s.get('empty', 0):.0f} empty")
            lines.append(f"    {name:<18}{s['calls']:>8.0f} calls ({s['calls'] / n:.4f}/job)"
                         f"{extra}, {s.get('wall_s', 0):.2f} s")
    p = res.get("pyspy")
    if p:
        rates = ", ".join(f"{r['jobs_per_s']:,.0f}" for r in res["pyspy_runs"])
        lines += ["", f"py-spy (wall clock, idle included; {p['samples']} samples over "
                  f"{len(res['pyspy_runs'])} drains; jobs/s under py-spy: {rates}):",
                  f"  event loop waiting in select: {p['idle_pct']:.1f}%   running Python in "
                  f"the loop: {p['busy_pct']:.1f}%   start-up/imports/exit: "
                  f"{p['outside_loop_pct']:.1f}%",
                  "  self time by package (% of the Python time):"]
        for k, v in p["self_by_package_pct_of_busy"].items():
            lines.append(f"    {k:<20}{v:6.1f}%")
        lines.append("  top functions, self time (% of the Python time):")
        for k, v in p["self_top_pct_of_busy"][:20]:
            lines.append(f"    {v:6.1f}%  {k}")
        lines.append("  pgqueue functions, inclusive (% of the Python time):")
        for k, v in p["pgqueue_inclusive_pct_of_busy"][:20]:
            lines.append(f"    {v:6.1f}%  {k}")
    cp = res.get("cprofile")
    if cp:
        lines += ["", f"cProfile: {cp['function_calls_per_job']:.0f} Python function calls "
                  "per job; by package (calls/job):"]
        for k, v in cp["calls_per_job_by_package"].items():
            lines.append(f"    {k:<20}{v:8.1f}")
        lines.append("  worker CPU by phase (inclusive, under cProfile: us/job, % of the "
                     "profiled time):")
        for k, v in cp.get("phases", {}).items():
            lines.append(f"    {k:<45}{v['us_per_job']:8.1f}  {v['pct']:5.1f}%")
        lines.append("  most-called functions (calls/job):")
        for r in cp["top_by_calls_per_job"][:15]:
            lines.append(f"    {r['calls_per_job']:8.2f}  {r['fn']}")
        lines.append("  most own time under cProfile (s, calls/job):")
        for r in cp["top_by_tottime"][:15]:
            lines.append(f"    {r['tottime_s']:7.3f} s  {r['calls_per_job']:6.2f}/job  "
                         f"{r['fn']}")
    for key, title in (("bulk", "bulk enqueue, app.enqueue_many"),
                       ("single", "single enqueue, one per transaction")):
        s = res.get(key)
        if not s:
            continue
        lines += ["", f"{title} ({res[key + '_jobs']:,} jobs): "
                  f"{s['plain']['jobs_per_s']:,.0f} jobs/s, client CPU "
                  f"{s['plain']['client_cpu_us_per_job']:.0f} us/job; "
                  f"{s['cprofile']['function_calls_per_job']:.0f} Python calls/job:"]
        for r in s["cprofile"]["top_by_tottime"][:15]:
            lines.append(f"    {r['tottime_s']:7.3f} s  {r['calls_per_job']:6.1f}/job  "
                         f"{r['fn']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profiling",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--dsn", default=None)
    ap.add_argument("--embedded", action="store_true", help="use the embedded server")
    ap.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    ap.add_argument("--pyspy-runs", type=int, default=3, help="drains sampled by py-spy")
    ap.add_argument("--no-py-spy", action="store_true")
    ap.add_argument("--no-cprofile", action="store_true")
    ap.add_argument("--single", type=int, default=0,
                    help="also profile this many single enqueues (0: skip)")
    ap.add_argument("--bulk", type=int, default=0,
                    help="also profile one enqueue_many of this many jobs (0: skip)")
    ap.add_argument("--keep", default=None, help="copy raw profiles into this directory")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each drain wait up to S s for the machine to be < 25%% busy")
    a = ap.parse_args(argv)
    QUIET.max_wait = a.wait_quiet
    sigterm_as_interrupt()
    children = Children()
    server = choose_server(a.dsn, embedded=a.embedded)
    res: dict[str, Any] = {"jobs": a.jobs, "concurrency": a.concurrency,
                           "pgqueue_commit": git_head(),
                           "pgqueue_source_sha256": source_digest()}
    timeout = max(120.0, a.jobs / 200)
    try:
        with tempfile.TemporaryDirectory(prefix="pgqueue-prof-") as tmp, \
                throwaway_database(server.admin_dsn) as dsn:
            work = Path(tmp)
            db = Db(dsn)
            try:
                log(f"counted drain of {a.jobs:,} jobs ...")
                out = work / "counted.json"
                res["counted"] = drain_once(db, children, a.jobs, _worker_cmd(
                    dsn, a.concurrency, out, ["--count-calls"]), out, timeout)
                pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                if not a.no_py_spy and Path(pyspy).exists():
                    raws, runs = [], []
                    for k in range(a.pyspy_runs):
                        log(f"py-spy drain {k + 1}/{a.pyspy_runs} ...")
                        out = work / f"pyspy{k}.json"
                        raw = work / f"pyspy{k}.txt"
                        cmd = [pyspy, "record", "--idle", "--nonblocking", "--rate",
                               str(a.rate), "--format", "raw", "-o", str(raw), "--",
                               *_worker_cmd(dsn, a.concurrency, out, [], parent=0)]
                        runs.append(drain_once(db, children, a.jobs, cmd, out, timeout))
                        raws.append(raw)
                        if a.keep:
                            Path(a.keep).mkdir(parents=True, exist_ok=True)
                            shutil.copy(raw, Path(a.keep) / f"pyspy-drain-{k}.txt")
                    res["pyspy_runs"] = runs
                    res["pyspy"] = summarise_pyspy(raws)
                elif not a.no_py_spy:
                    log("py-spy not installed (pip install py-spy): skipped")
                if not a.no_cprofile:
                    log("cProfile drain ...")
                    out = work / "cprofile.json"
                    prof = work / "drain.prof"
                    res["cprofile_run"] = drain_once(db, children, a.jobs, _worker_cmd(
                        dsn, a.concurrency, out, ["--cprofile", str(prof)]), out, timeout * 3)
                    res["cprofile"] = summarise_cprofile(prof, a.jobs)
                    if a.keep:
                        shutil.copy(prof, Path(a.keep) / "drain.prof")
                if a.bulk:
                    log(f"bulk enqueue of {a.bulk:,} (cProfile) ...")
                    res["bulk_jobs"] = a.bulk
                    res["bulk"] = profile_bulk(dsn, db, a.bulk, work / "bulk.prof")
                if a.single:
                    log(f"single enqueue x {a.single} (cProfile) ...")
                    res["single_jobs"] = a.single
                    res["single"] = profile_single(dsn, db, a.single, work / "single.prof")
            finally:
                children.kill_all()
                db.close()
    except KeyboardInterrupt:
        children.kill_all()
        log("interrupted")
        return 130
    finally:
        children.kill_all()
        server.stop()
    print(report(res))
    print(json.dumps(res, separators=(",", ":"), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
