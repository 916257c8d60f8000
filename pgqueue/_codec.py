"""What the worker stores about a job's outcome, made storable: results and error text.

PostgreSQL cannot store everything Python can hold: ``text`` and ``jsonb`` refuse the NUL
character (U+0000), and UTF-8 has no encoding for a lone surrogate (``"\\ud800"``). A handler's
result or an exception message containing either used to make the completer's whole batch fail.
The rule (documented in docs/outcomes.md): **NUL and lone surrogates in a result or in error text
are replaced by U+FFFD (the replacement character)**, and error text is capped, keeping its head
and tail, so a 10 MB traceback costs kilobytes, not megabytes, in the row and in the logs.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

__all__ = ["ERROR_TEXT_LIMIT", "TRACEBACK_LIMIT", "cap_text", "clean_text", "result_json"]

log = logging.getLogger("pgqueue.worker")

#: characters kept of an error message (head and tail), in the row and in log lines
ERROR_TEXT_LIMIT = 4_000
#: characters kept of a traceback (head and tail)
TRACEBACK_LIMIT = 32_000

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD (unchanged when clean)."""
    return _UNSTORABLE.sub(_REPLACEMENT, text) if _UNSTORABLE.search(text) else text


def cap_text(text: str, limit: int) -> str:
    """``text`` cleaned, and cut to about ``limit`` characters keeping its head and tail."""
    text = clean_text(text)
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n... [{cut} characters cut] ...\n{text[-tail:]}"


def _clean_value(value: Any, depth: int = 0) -> Any:
    if depth > 200:
        raise ValueError("result nested too deeply to store")
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)) if isinstance(k, str) else k: _clean_value(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_value(v, depth + 1) for v in value]
    return value


def result_json(value: Any) -> str | None:
    """A handler's return value as JSON text PostgreSQL can store, or None when it is None or
    cannot be stored (not JSON-serialisable, NaN, nested too deeply: logged, and the job still
    succeeds without a stored result). NUL and lone surrogates in strings become U+FFFD."""
    if value is None:
        return None
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        if _UNSTORABLE.search(text) or "\\u0000" in text:
            text = json.dumps(_clean_value(value), allow_nan=False, ensure_ascii=False)
        return text
    except (TypeError, ValueError, RecursionError) as exc:
        log.warning("job result of type %s cannot be stored (%s); not stored",
                    type(value).__name__, cap_text(str(exc), 200))
        return None
