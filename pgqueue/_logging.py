"""Structured log lines: ``time level logger message key=value ...``.

pgqueue logs with ``extra={"event": ..., "job_id": ...}``; this formatter appends those fields as
``key=value`` pairs so that log lines can be grepped and parsed. One line per job state change at
DEBUG, summaries at INFO.
"""

from __future__ import annotations

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


def configure(level: int | str = logging.INFO) -> None:
    """Send pgqueue's logs (the ``pgqueue`` logger, no longer propagating to the root logger)
    to stderr as key=value lines at ``level`` (default INFO). Used by the CLI."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("pgqueue")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
