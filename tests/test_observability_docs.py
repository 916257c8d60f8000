"""docs/observability.md and the Grafana dashboard name only metrics that pgqueue exports."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pgqueue
from pgqueue.job import Job
from pgqueue.worker._metrics import OUTCOMES, QueueMetrics, WorkerMetrics, WorkerState

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "pgqueue-dashboard.json"
DOC = ROOT / "docs" / "observability.md"
NAME = re.compile(r"\bpgqueue_[a-z_]+")
#: the series a histogram or counter family exports besides its name
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported(app: pgqueue.App) -> set[str]:
    """Every family and sample name of a worker's registry with the queue gauges, after one
    job went through every outcome (so every labelled series exists)."""
    state = WorkerState(busy=lambda: 1, concurrency=2, completer_backlog=lambda: 0,
                        listener_connected=lambda: True, last_claim=lambda: 1.0,
                        stopping=lambda: False)
    metrics = WorkerMetrics(state)
    metrics.registry.register(QueueMetrics(app.stats))
    now = dt.datetime.now(dt.UTC)
    job = Job(id=1, queue="q", task="t", args={}, attempt=1, run_at=now, created_at=now)
    for outcome in OUTCOMES:
        metrics.on_event("started", job)
        metrics.on_event(outcome, job)
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


def test_every_metric_the_dashboard_queries_exists(app: pgqueue.App) -> None:
    app.enqueue("t", queue="q")  # a queue, so the queue gauges have series
    names = exported(app)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queried = {m for e in exprs for m in NAME.findall(e)}
    assert queried and queried <= names, sorted(queried - names)
    families = {n for n in names if not n.endswith(SUFFIXES)} | {
        n[:-len("_total")] for n in names if n.endswith("_total")}
    # every family is on the dashboard (as itself or one of its series)
    shown = {f for f in families if any(q == f or q.startswith(f + "_") for q in queried)}
    assert shown == families, sorted(families - shown)


def test_every_metric_the_doc_names_exists_and_the_table_lists_them_all(
        app: pgqueue.App) -> None:
    app.enqueue("t", queue="q")
    names = exported(app)
    text = DOC.read_text()
    mentioned = set(NAME.findall(text)) - {"pgqueue_queue_"}
    assert mentioned <= names | {n[:-len("_total")] for n in names}, sorted(mentioned - names)
    table = set(re.findall(r"^\| `(pgqueue_[a-z_]+)` \|", text, re.M))
    families = {n for n in names if not n.endswith(SUFFIXES)}
    families |= {"pgqueue_jobs_total"}
    families -= {"pgqueue_jobs"}
    assert table == families, (sorted(families - table), sorted(table - families))
