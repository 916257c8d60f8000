"""OpenTelemetry spans from enqueue to run (``pip install 'pgqueue-tx[otel]'``).

- **Enqueue** (:func:`publish`): one PRODUCER span ``publish <queue>`` per call --
  :meth:`pgqueue.App.enqueue` and each batch of :meth:`~pgqueue.App.enqueue_many` /
  :meth:`~pgqueue.App.insert` alike (a batch records its size as
  ``messaging.batch.message_count``). The span's W3C trace context (``traceparent``, and
  ``tracestate`` if any) is stored in each job's ``meta`` under :data:`META_KEY`, so it survives
  in the database until a worker runs the job, in any process.
- **Run** (:func:`consume`): each attempt runs in a CONSUMER span ``process <queue>`` whose
  **parent** is the stored context: the job's attempts appear inside the trace of the request
  that enqueued it, with the same trace id, retries included (each attempt a sibling under the
  producer span). A parent, not a span link, because one enqueue leads to one job: the trace
  reads as one story. (Links suit fan-in, a span consuming many messages; pgqueue runs one
  job per span.) The span carries the messaging semantic-convention attributes
  (``messaging.system`` = ``pgqueue``, ``messaging.destination.name`` = the queue,
  ``messaging.operation.type`` = ``process``, ``messaging.message.id`` = the job id) with
  ``pgqueue.task``, ``pgqueue.attempt`` and, at the end, ``pgqueue.outcome``; a failed
  attempt records its exception as an event and sets the span status to ERROR.

Near-zero cost when tracing is off: when OpenTelemetry is not installed the import is tried
once and every function here returns at once after that; when the API is installed but no SDK
tracer provider is configured (the API's default proxy, or its no-op provider), no span is
started and no job is rebuilt -- one type check of the global provider per call. With a
provider configured, the tracer is looked up once per provider, and a successful attempt adds one
attribute (``pgqueue.outcome``) to its span; other outcomes also add an event
(``pgqueue.retried``...). pgqueue ships the API only: the application configures the SDK and its
exporter.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["META_KEY", "Publishing", "Running", "active", "enabled", "end_consume", "publish",
           "record_error", "set_outcome", "stamp_meta", "start_consume"]

#: the key of a job's ``meta`` that holds the enqueuing span's W3C trace context
META_KEY = "otel"
#: the instrumentation scope of pgqueue's spans
TRACER_NAME = "pgqueue"

_UNSET: Any = object()
#: (trace, propagate, SpanKind, StatusCode, context) once imported; None if not installed
_api: Any = _UNSET
_idle_providers: tuple[type, ...] = ()  # the API's providers that make no spans
_tracer: tuple[Any, Any] = (None, None)  # (provider, its pgqueue tracer)
_no_provider_from_env = True  # OTEL_PYTHON_TRACER_PROVIDER unset when the API was loaded
#: what start_consume needs, bound once the API is loaded (see _load)
_remote_parent: Any = None
_attach: Any = None
_in_context: Any = None
_CONSUMER: Any = None
#: a version-00 W3C ``traceparent``: trace id, parent span id, flags (lowercase hex)
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _load() -> Any:
    global _api, _idle_providers, _no_provider_from_env, _remote_parent, _attach, _in_context
    global _CONSUMER
    if _api is _UNSET:
        try:
            from opentelemetry import context, propagate, trace
            from opentelemetry.trace import (
                NonRecordingSpan,
                NoOpTracerProvider,
                ProxyTracerProvider,
                SpanContext,
                SpanKind,
                StatusCode,
                TraceFlags,
            )
        except ImportError:
            _api = None
        else:
            _idle_providers = (ProxyTracerProvider, NoOpTracerProvider)
            _no_provider_from_env = "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ
            _api = (trace, propagate, SpanKind, StatusCode, context)
            _attach, _in_context, _CONSUMER = context.attach, trace.set_span_in_context, \
                SpanKind.CONSUMER
            empty = context.Context()
            extract = propagate.extract
            fullmatch = _TRACEPARENT.fullmatch
            last: list[tuple[str, Any]] = [("", None)]  # the last traceparent decoded, its context

            def remote_parent(stored: Any) -> Any:
                """The context of the span that enqueued the job (see :func:`start_consume`)."""
                if type(stored) is not dict:
                    return None
                header = stored.get("traceparent")
                if type(header) is not str:
                    # another propagator's keys, or no string (the propagator would raise)
                    return extract(stored) if header is None else None
                cached = last[0]  # one read: a (header, context) pair, whatever other threads do
                if header == cached[0] and len(stored) == 1:
                    return cached[1]  # the jobs of one batch, a job's next attempt
                found = fullmatch(header) if len(stored) == 1 else None
                if found is None:  # tracestate, baggage, another version: the propagator
                    return extract(stored)
                trace_id, span_id, flags = found.groups()
                if trace_id == "0" * 32 or span_id == "0" * 16:
                    return None  # invalid: a root span, as the propagator decides too
                parent = _in_context(NonRecordingSpan(SpanContext(
                    int(trace_id, 16), int(span_id, 16), is_remote=True,
                    trace_flags=TraceFlags(int(flags, 16)))), empty)
                last[0] = (header, parent)  # contexts are immutable: safe to share
                return parent

            _remote_parent = remote_parent
    return _api


def enabled() -> bool:
    """True when the OpenTelemetry API can be imported."""
    return _load() is not None


def active() -> Any:
    """The tracer to make spans with, or None when tracing is off: OpenTelemetry not
    installed, or no tracer provider configured (the API's proxy or no-op provider)."""
    global _tracer
    api = _api if _api is not _UNSET else _load()
    if api is None:
        return None
    # the API keeps the configured provider in ``_TRACER_PROVIDER`` (None until one is set);
    # reading it skips get_tracer_provider's environment lookup on every job while tracing is
    # off. Fall back to the public call if a later API version moves it.
    provider = getattr(api[0], "_TRACER_PROVIDER", _UNSET)
    if provider is None and _no_provider_from_env:
        return None
    provider = api[0].get_tracer_provider()
    if type(provider) in _idle_providers:
        return None
    if _tracer[0] is not provider:
        _tracer = (provider, provider.get_tracer(TRACER_NAME))
    return _tracer[1]


class Publishing:
    """The current PRODUCER span of an enqueue: its trace context (``carrier``) and
    :meth:`set_ids` to record the job id(s) once inserted."""

    def __init__(self, span: Any, carrier: dict[str, str]) -> None:
        self.span = span
        self.carrier = carrier

    def set_ids(self, ids: Sequence[int]) -> None:
        """Record the inserted job's id (one job) or the batch's size (several)."""
        if len(ids) == 1:
            self.span.set_attribute("messaging.message.id", str(ids[0]))


@contextlib.contextmanager
def publish(queue: str, task: str, count: int = 1) -> Iterator[Publishing | None]:
    """A PRODUCER span around an enqueue of ``count`` jobs of ``task`` into ``queue``; yields
    the :class:`Publishing` (None when OpenTelemetry is not installed). An exception inside
    is recorded on the span and re-raised."""
    tracer = active()
    if tracer is None:
        yield None
        return
    _, propagate, kind, _, _ = _api
    attributes: dict[str, Any] = {
        "messaging.system": "pgqueue", "messaging.destination.name": queue,
        "messaging.operation.type": "publish", "messaging.operation.name": "publish",
        "pgqueue.task": task}
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    with tracer.start_as_current_span(f"publish {queue}", kind=kind.PRODUCER,
                                      attributes=attributes) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield Publishing(span, carrier)


def stamp_meta(meta_json: str, carrier: dict[str, str] | None) -> str:
    """``meta_json`` (a JSON object) with the trace context under :data:`META_KEY` (unchanged
    when there is no context to store)."""
    if not carrier:
        return meta_json
    meta = json.loads(meta_json)
    meta[META_KEY] = carrier
    return json.dumps(meta, separators=(",", ":"))


class Running:
    """The CONSUMER span of a running attempt and the context token that made it current."""

    __slots__ = ("span", "token")

    def __init__(self, span: Any, token: object) -> None:
        self.span = span
        self.token = token


def start_consume(job: Any) -> Running | None:
    """Start the CONSUMER span of one attempt of ``job`` (a :class:`pgqueue.Job`), current from
    now on, whose parent is the trace context stored at enqueue (a root span if there is none);
    None when tracing is off. End it with :func:`end_consume`.

    The stored context is what :func:`publish` injected with the global propagator. The usual
    one, a lone version-00 ``traceparent``, is decoded here, by the W3C rules the SDK's
    ``TraceContextTextMapPropagator`` applies (one match, two ints: about a third of the
    propagator's cost), and the last one decoded is kept (the jobs of one ``enqueue_many``
    share their context, and a retry has its job's); any other carrier (``tracestate``,
    baggage, another propagator's keys) goes through ``opentelemetry.propagate.extract``."""
    tracer = active()
    if tracer is None:
        return None
    meta = job.meta
    parent = _remote_parent(meta.get(META_KEY)) if meta else None
    queue = job.queue
    span = tracer.start_span(f"process {queue}", context=parent, kind=_CONSUMER, attributes={
        "messaging.system": "pgqueue", "messaging.destination.name": queue,
        "messaging.operation.type": "process", "messaging.operation.name": "process",
        "messaging.message.id": str(job.id), "pgqueue.task": job.task,
        "pgqueue.attempt": job.attempt}, record_exception=False,
        set_status_on_exception=False)
    return Running(span, _attach(_in_context(span, parent)))


def end_consume(running: Running | None) -> None:
    """End the span :func:`start_consume` started (nothing when it returned None)."""
    if running is not None:
        _api[4].detach(running.token)
        running.span.end()


def set_outcome(running: Running, event: str) -> None:
    """Record the attempt's outcome (``succeeded``, ``retried``...) on its span: the
    ``pgqueue.outcome`` attribute, and an event for every outcome but success."""
    running.span.set_attribute("pgqueue.outcome", event)
    if event != "succeeded":
        running.span.add_event(f"pgqueue.{event}")


def record_error(running: Running, exc: BaseException | None, message: str) -> None:
    """Record a failed attempt on its span: the exception (if any) as an event, and the
    status ERROR with ``message``."""
    if exc is not None:
        running.span.record_exception(exc)
    running.span.set_status(_api[3].ERROR, message)
