"""How the ``pgqueue`` command prints: plain-text tables and JSON-ready dicts.

Only presentation lives here; no database access, no pgqueue internals.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from pgqueue import FailedJob, QueueStats

__all__ = ["age", "failed_dict", "failed_text", "queue_stats_dict", "short", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed line under the headers.

    Every cell is printed with ``str()``; trailing spaces are stripped from each line.
    """
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def age(seconds: float | None) -> str:
    """A duration for a table cell: ``-`` for none, then seconds, minutes or hours."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def short(text: str, n: int = 60) -> str:
    """The first line of ``text``, cut to ``n`` characters (default 60) with ``...``."""
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= n else line[: n - 3] + "..."


def failed_dict(failed: FailedJob, *, brief: bool) -> dict[str, Any]:
    """A failed job as a dict for JSON; ``brief`` leaves out the per-attempt errors."""
    d = dataclasses.asdict(failed)
    if brief:
        d.pop("errors", None)
    else:  # each attempt as it is stored (ISO times), not as dataclass fields
        d["errors"] = [e.to_json() for e in failed.errors]
    return d


def queue_stats_dict(stats: QueueStats) -> dict[str, Any]:
    """One queue's counts as a dict for JSON, without the driver-specific ``extra`` field."""
    return {k: v for k, v in dataclasses.asdict(stats).items() if k != "extra"}


def failed_text(failed: FailedJob) -> str:
    """A failed job for people: its fields, its arguments as JSON, then each attempt with its
    error and its traceback as Python printed it (``failed show``; ``--json`` for machines)."""
    when = "%Y-%m-%d %H:%M:%S %Z"
    lines = [
        f"failed job {failed.id}: task {failed.task}, queue {failed.queue}",
        f"attempts:  {failed.attempt}/{failed.max_attempts}",
        f"enqueued:  {failed.enqueued_at.strftime(when)}",
        f"failed:    {failed.failed_at.strftime(when)}",
        f"reason:    {failed.reason}",
        f"args:      {json.dumps(failed.args, default=str)}",
    ]
    for e in failed.errors:
        at = f" ({e.at.strftime(when)})" if e.at is not None else ""
        lines += ["", f"--- attempt {e.attempt}{at}: {e.error}"]
        if e.traceback:
            lines.append(e.traceback.rstrip("\n"))
    return "\n".join(lines)
