"""Structured log lines: ``time level logger message key=value ...`` or one JSON object a line.

pgqueue logs with ``extra={"event": ..., "job_id": ...}`` (the fields ``event``, ``worker``,
``job_id``, ``queue``, ``task``, ``attempt``, ``duration`` where they apply), so a handler of
your own reads them as record attributes. :class:`KeyValueFormatter` appends them as
``key=value`` pairs; :class:`JsonFormatter` writes one JSON object per line with ``time``,
``level``, ``logger``, ``message``, those fields and ``trace_id`` when an OpenTelemetry span
is current. One line per job state change at DEBUG, summaries at INFO.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """A :class:`logging.Formatter` that appends a record's ``extra`` fields as ``key=value``
    (values with spaces or ``=`` are quoted); takes the same arguments as its base class."""

    def format(self, record: logging.LogRecord) -> str:
        """The base class's line, then the record's extra fields in the order they were set."""
        base = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if not extras:
            return base
        pairs = " ".join(f"{k}={_quote(v)}" for k, v in extras.items())
        return f"{base} {pairs}"


def _quote(value: object) -> str:
    text = str(value)
    return repr(text) if (" " in text or "=" in text or not text) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    the record's extra fields (``event``, ``job_id``, ``queue``...), ``trace_id`` (32 hex digits)
    when an OpenTelemetry span is current, and ``exception`` (the traceback) if any.

    Example line::

        {"time": "2026-01-01T12:00:00.123+00:00", "level": "INFO", "logger": "pgqueue.worker",
         "message": "job 7 attempt 1 failed: ...", "event": "retry", "job_id": 7}
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (values that are not JSON become strings)."""
        out: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        trace_id = _trace_id()
        if trace_id is not None and "trace_id" not in out:
            out["trace_id"] = trace_id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _trace_id() -> str | None:
    """The current OpenTelemetry span's trace id, if OpenTelemetry is loaded and a span is
    recording; never imports it (no cost when it is not used)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


#: the ``--log-format`` choices
LOG_FORMATS = ("keyvalue", "json")


def configure(level: int | str = logging.INFO, fmt: str = "keyvalue") -> None:
    """Send pgqueue's logs (the ``pgqueue`` logger, no longer propagating to the root logger)
    to stderr at ``level`` (default INFO) as key=value lines, or with ``fmt="json"`` one JSON
    object per line (:class:`JsonFormatter`). Used by the CLI (``--log-format``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("pgqueue")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
