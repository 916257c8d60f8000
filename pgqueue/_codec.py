"""How job results are stored: one encoder shared by the worker and ``App.complete()``."""

from __future__ import annotations

import json
import logging
from typing import Any

__all__ = ["result_json"]

log = logging.getLogger("pgqueue.worker")


def result_json(value: Any) -> str | None:
    """A handler's return value as JSON, or None when it is None or not JSON-serialisable
    (a value that cannot be stored is logged and dropped; the job still succeeds)."""
    if value is None:
        return None
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        log.warning("job result of type %s is not JSON-serialisable; not stored",
                    type(value).__name__)
        return None
