"""Run ``pgqueue worker`` (or, with ``enqueue`` as the only argument, the trace test's
enqueuing side) with an in-memory OpenTelemetry exporter, then write the finished spans as JSON
to the file named by ``OTEL_SPANS_FILE``. Each side is a process of its own, so the global
tracer provider never leaks into other tests.

    python -m tests.apps.otel_worker enqueue
    python -m tests.apps.otel_worker worker tests.apps.obs:app --queues obs --burst
"""

from __future__ import annotations

import json
import os
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pgqueue
from pgqueue.cli import main


def run() -> int:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    extra: dict[str, object] = {}
    if sys.argv[1:] == ["enqueue"]:
        code = 0
        app = pgqueue.App(database_url=os.environ["PGQUEUE_DATABASE_URL"])
        with trace.get_tracer("test").start_as_current_span("POST /orders"):
            extra["job_id"] = app.enqueue("flaky", queue="obs")  # fails once, then succeeds
            app.enqueue_many("ok", [{} for _ in range(3)], queue="obs")
        app.close()
    else:
        code = main(sys.argv[1:])
    spans = [{"name": s.name, "kind": s.kind.name,
              "trace_id": f"{s.context.trace_id:032x}", "span_id": f"{s.context.span_id:016x}",
              "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
              "attributes": dict(s.attributes or {}),
              "events": [e.name for e in s.events], "status": s.status.status_code.name}
             for s in exporter.get_finished_spans()]
    with open(os.environ["OTEL_SPANS_FILE"], "w") as f:
        json.dump({"spans": spans, **extra}, f)
    return code


if __name__ == "__main__":
    raise SystemExit(run())
