"""How values look on the dashboard's pages (Jinja filters) and how stored JSON is read."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["FILTERS", "Figure", "errors_of", "pretty_json", "scrub"]


@dataclass(frozen=True)
class Figure:
    """A count the overview read with a bound: ``n`` exactly, or at least ``n`` when ``more``
    (the read stopped at its cap; the page shows ``10,000+``). Figures add up (a total is
    a lower bound when any part is)."""

    n: int
    more: bool = False

    @classmethod
    def capped(cls, read: int, cap: int) -> Figure:
        """The figure of a count that read ``read`` rows with ``LIMIT cap + 1``."""
        return cls(min(read, cap), read > cap)

    def __add__(self, other: Figure) -> Figure:
        return Figure(self.n + other.n, self.more or other.more)

    def __bool__(self) -> bool:
        return self.n > 0

#: ``user:password@`` in URLs and ``password=...`` in libpq strings
_SECRET = re.compile(r"(?i)(\w+://[^/\s:@]*:)[^@\s/]*@|(password\s*=\s*)('[^']*'|\S+)")


def scrub(text: str) -> str:
    """``text`` with any database password (in a URL or a libpq string) replaced by ``***``."""
    return _SECRET.sub(lambda m: f"{m[1]}***@" if m[1] else f"{m[2]}***", text)


def pretty_json(text: str | None) -> str:
    """Stored JSON text, indented for reading (the text as it is if it does not parse)."""
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except (ValueError, RecursionError):
        return text


def compact(text: str | None, limit: int = 120) -> str:
    """Stored JSON on one line, cut at ``limit`` characters."""
    if text is None:
        return ""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def errors_of(text: str | None) -> list[dict[str, Any]]:
    """A job's stored ``errors`` list (one record per failed attempt), tolerant of odd rows."""
    try:
        value = json.loads(text or "[]")
    except (ValueError, RecursionError):
        return []
    if not isinstance(value, list):
        return []
    return [{"attempt": e.get("attempt"), "error": str(e.get("error") or ""),
             "traceback": e.get("traceback") if isinstance(e.get("traceback"), str) else None,
             "at": _when(e.get("at")), "worker": e.get("worker")}
            for e in value if isinstance(e, dict)]


def _when(text: object) -> dt.datetime | None:
    """A stored ISO time (None when missing or unreadable)."""
    if not isinstance(text, str):
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.utcoffset() is not None else value.replace(tzinfo=dt.UTC)


def timestamp(value: dt.datetime | None) -> str:
    """``2026-01-31 14:00:05Z`` (UTC), or an em dash."""
    if value is None:
        return "—"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def iso(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).isoformat()


def duration(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4 min 05 s``, ``3 h 10 min``, ``2 d 4 h``; an em dash for None."""
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def number(value: Figure | int | float | None) -> str:
    """``1,234``; ``10,000+`` for a figure known only to be at least that; an em dash for
    None."""
    if isinstance(value, Figure):
        return f"{value.n:,}+" if value.more else f"{value.n:,}"
    return "—" if value is None else f"{value:,}"


FILTERS = {"ts": timestamp, "iso": iso, "dur": duration, "num": number, "compact": compact,
           "pretty": pretty_json}
