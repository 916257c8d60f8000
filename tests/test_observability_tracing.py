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
from opentelemetry.sdk.trace import TracerProvider

from pgqueue import _tracing

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.processes

def otel_process(dsn: str, out: Path, *args: str) -> dict[str, Any]:
    """Run tests.apps.otel_worker (an in-memory exporter in a process of its own) and return
    what it wrote: ``spans`` and, for ``enqueue``, the ``job_id``."""
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT),
           "OTEL_SPANS_FILE": str(out)}
    proc = subprocess.run([sys.executable, "-m", "tests.apps.otel_worker", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_consumer_spans_in_a_worker_process_continue_the_enqueuing_trace(
        clean: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    enqueued = otel_process(clean, tmp_path / "enqueue.json", "enqueue")
    job_id = enqueued["job_id"]
    [request] = [s for s in enqueued["spans"] if s["name"] == "POST /orders"]
    trace_id = request["trace_id"]
    producers = [s for s in enqueued["spans"] if s["name"] == "publish obs"]
    assert len(producers) == 2  # one for the job, one for the batch of 3
    single, batch = producers
    assert single["kind"] == "PRODUCER" and single["parent_id"] == request["span_id"]
    assert single["trace_id"] == trace_id
    assert single["attributes"]["messaging.message.id"] == str(job_id)
    assert single["attributes"]["messaging.destination.name"] == "obs"
    assert batch["attributes"]["messaging.batch.message_count"] == 3
    stored = conn.execute("SELECT meta FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()
    assert stored is not None and stored[0][_tracing.META_KEY]["traceparent"].split("-")[1] \
        == trace_id  # the context survives in the database

    worked = otel_process(clean, tmp_path / "worker.json", "worker", "tests.apps.obs:app",
                          "--queues", "obs", "--burst")
    consumed = [s for s in worked["spans"] if s["name"] == "process obs"]
    attempts = [s for s in consumed if s["attributes"]["messaging.message.id"] == str(job_id)]
    assert [s["attributes"]["pgqueue.attempt"] for s in attempts] == [1, 2]
    for s in attempts:
        assert s["kind"] == "CONSUMER"
        assert s["trace_id"] == trace_id               # across the process boundary
        assert s["parent_id"] == single["span_id"]     # a child of the producer span
        assert s["attributes"]["messaging.system"] == "pgqueue"
        assert s["attributes"]["messaging.operation.type"] == "process"
    first, second = attempts
    assert first["attributes"]["pgqueue.outcome"] == "retried"
    assert first["status"] == "ERROR" and "exception" in first["events"]
    assert second["attributes"]["pgqueue.outcome"] == "succeeded"
    batch_children = [s for s in consumed if s["parent_id"] == batch["span_id"]]
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


def test_json_log_lines_carry_the_current_trace_id() -> None:
    import logging

    from pgqueue._logging import JsonFormatter

    record = logging.LogRecord("pgqueue.worker", logging.INFO, __file__, 1, "hello", (), None)
    assert "trace_id" not in json.loads(JsonFormatter().format(record))
    tracer = TracerProvider().get_tracer("test")  # not the global provider: no leak
    with tracer.start_as_current_span("job") as span:
        line = json.loads(JsonFormatter().format(record))
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"


@pytest.mark.parametrize("carrier", [
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},  # unsampled
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
     "tracestate": "vendor=abc,other=1"},                                        # the SDK's path
    {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},  # invalid ids
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"},
    {"traceparent": "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"},  # not lowercase
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x"},
    {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"traceparent": "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later"},
    {"traceparent": "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
     "baggage": "user=1"},
    {"traceparent": 42}, {"traceparent": ""}, {"b3": "another-propagator"}, {},
    ["not", "a", "carrier"],
])
def test_the_stored_context_decodes_as_the_propagator_decodes_it(carrier: Any) -> None:
    """start_consume decodes a lone W3C traceparent itself (cheaper than the propagator, and
    the last one kept): whatever is stored, the parent it finds, the first time and the next,
    is the one ``propagate.extract`` finds."""
    from opentelemetry import propagate, trace

    assert _tracing.enabled()
    ours = _tracing._remote_parent(carrier)
    try:
        theirs = propagate.extract(carrier) if isinstance(carrier, dict) else None
    except TypeError:  # the propagator raises on a traceparent that is not a string
        theirs = None
    expected = trace.get_current_span(theirs).get_span_context() if theirs is not None else None
    again = _tracing._remote_parent(carrier)  # the same carrier again (a batch's next job)
    for found in (ours, again):
        got = trace.get_current_span(found).get_span_context() if found is not None else None
        if expected is None or not expected.is_valid:
            assert got is None or not got.is_valid
        else:
            assert got == expected and got.is_remote and got.trace_state == expected.trace_state
