"""OpenTelemetry from enqueue to run, across a worker process: the job's consumer spans are
children of the producer span (same trace id), after a retry too; a batch is one span."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pgqueue
from pgqueue import _tracing

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.processes

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """The in-memory exporter of this process's tracer provider (set once per process)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    return _EXPORTER


def test_consumer_spans_in_a_worker_process_continue_the_enqueuing_trace(
        spans: InMemorySpanExporter, clean: str, conn: psycopg.Connection[Any],
        tmp_path: Path) -> None:
    app = pgqueue.App(database_url=clean)
    tracer = trace.get_tracer("test")
    try:
        with tracer.start_as_current_span("POST /orders") as request:
            job_id = app.enqueue("flaky", queue="obs")      # fails once, then succeeds
            app.enqueue_many("ok", [{} for _ in range(3)], queue="obs")
    finally:
        app.close()
    trace_id = f"{request.get_span_context().trace_id:032x}"
    producers = [s for s in spans.get_finished_spans() if s.name == "publish obs"]
    assert len(producers) == 2  # one for the job, one for the batch of 3
    single, batch = producers
    assert single.kind.name == "PRODUCER"
    assert single.parent is not None and single.parent.span_id == request.get_span_context().span_id
    assert single.attributes is not None and batch.attributes is not None
    assert single.attributes["messaging.message.id"] == str(job_id)
    assert single.attributes["messaging.destination.name"] == "obs"
    assert batch.attributes["messaging.batch.message_count"] == 3
    stored = conn.execute("SELECT meta FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()
    assert stored is not None and stored[0][_tracing.META_KEY]["traceparent"].split("-")[1] \
        == trace_id  # the context survives in the database

    out = tmp_path / "spans.json"
    env = {**os.environ, "PGQUEUE_DATABASE_URL": clean, "PYTHONPATH": str(ROOT),
           "OTEL_SPANS_FILE": str(out)}
    proc = subprocess.run([sys.executable, "-m", "tests.apps.otel_worker", "worker",
                           "tests.apps.obs:app", "--queues", "obs", "--burst"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    consumed = [s for s in json.loads(out.read_text()) if s["name"] == "process obs"]
    attempts = [s for s in consumed if s["attributes"]["messaging.message.id"] == str(job_id)]
    assert [s["attributes"]["pgqueue.attempt"] for s in attempts] == [1, 2]
    single_id = f"{single.context.span_id:016x}"
    for s in attempts:
        assert s["kind"] == "CONSUMER"
        assert s["trace_id"] == trace_id          # across the process boundary
        assert s["parent_id"] == single_id        # a child of the producer span
        assert s["attributes"]["messaging.system"] == "pgqueue"
        assert s["attributes"]["messaging.operation.type"] == "process"
    first, second = attempts
    assert first["attributes"]["pgqueue.outcome"] == "retried"
    assert first["status"] == "ERROR" and "exception" in first["events"]
    assert second["attributes"]["pgqueue.outcome"] == "succeeded"
    batch_children = [s for s in consumed if s["parent_id"] == f"{batch.context.span_id:016x}"]
    assert len(batch_children) == 3 and all(s["trace_id"] == trace_id for s in batch_children)


def test_without_opentelemetry_nothing_is_imported_or_stored(clean: str) -> None:
    code = f"""
import builtins, sys
real = builtins.__import__
def guard(name, *a, **k):
    if name.startswith("opentelemetry"):
        raise ImportError("no opentelemetry (test)")
    return real(name, *a, **k)
builtins.__import__ = guard
import pgqueue
app = pgqueue.App(database_url={clean!r})
job = app.enqueue("ok", queue="obs")
assert not any(m.startswith("opentelemetry") for m in sys.modules), "imported"
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(clean) as c:
        row = c.execute("SELECT meta FROM pgqueue.jobs").fetchone()
    assert row is not None and _tracing.META_KEY not in row[0]


def test_json_log_lines_carry_the_current_trace_id(spans: InMemorySpanExporter) -> None:
    import logging

    from pgqueue._logging import JsonFormatter

    record = logging.LogRecord("pgqueue.worker", logging.INFO, __file__, 1, "hello", (), None)
    assert "trace_id" not in json.loads(JsonFormatter().format(record))
    with trace.get_tracer("test").start_as_current_span("job") as span:
        line = json.loads(JsonFormatter().format(record))
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
