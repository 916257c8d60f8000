"""What the dashboard accepts from URLs and forms, validated before anything reaches the
database: filters, cursors, ids, times. Every refusal is a :class:`pgqueue.ValidationError`
whose message the page shows (never a traceback)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgqueue._names import validate_name
from pgqueue.errors import ValidationError

__all__ = ["MAX_FIELD", "Cursor", "Filters", "parse_age_or_time", "parse_cursor", "parse_filters",
           "parse_id", "parse_ids"]

#: the longest value a filter field may have (characters); args JSON may be longer
MAX_FIELD = 200
#: the longest args JSON filter (characters)
MAX_ARGS = 2000

_AGE = re.compile(r"(\d{1,6})\s*([smhdw])")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _field(raw: Mapping[str, str], name: str, limit: int = MAX_FIELD) -> str | None:
    value = raw.get(name, "").strip()
    if len(value) > limit:
        raise ValidationError(f"the {name} filter is too long ({len(value):,} characters; at "
                              f"most {limit:,})")
    return value or None


def parse_time(text: str, what: str) -> dt.datetime:
    """An ISO 8601 date or date-time (``2026-01-31``, ``2026-01-31T14:00``, with or without a
    zone; UTC when it has none)."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{what} {_short(text)!r} is not a date/time: use 2026-01-31 or "
                              "2026-01-31T14:00 (UTC unless a zone is given)") from None
    return value if value.utcoffset() is not None else value.replace(tzinfo=dt.UTC)


def parse_age_or_time(text: str, now: dt.datetime, what: str) -> dt.datetime:
    """``7d``, ``12h``, ``30m`` (that long before ``now``) or an ISO date/time."""
    age = _AGE.fullmatch(text.strip())
    if age:
        return now - dt.timedelta(seconds=int(age[1]) * _AGE_UNITS[age[2]])
    return parse_time(text.strip(), what)


def parse_id(text: object, what: str = "job id") -> int:
    """A positive integer id (a bigint)."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() \
            or len(text) > 19 or not 0 < int(text) < 2**63:
        shown = _short(text) if isinstance(text, str) else text
        raise ValidationError(f"{what} must be a positive whole number, not {shown!r}")
    return int(text)


def parse_ids(values: list[str]) -> list[int]:
    """Several ids (checkboxes); at least one."""
    if not values:
        raise ValidationError("select at least one job first")
    if len(values) > 1000:
        raise ValidationError("at most 1,000 jobs at once; use \"all matching\" instead")
    return sorted({parse_id(v) for v in values})


@dataclass(frozen=True)
class Filters:
    """The filters of a listing (None: not filtered)."""

    queue: str | None = None
    task: str | None = None
    state: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    #: the args containment filter, as normalised JSON text
    args: str | None = None

    def params(self) -> dict[str, Any]:
        """The bound parameters of the dashboard statements."""
        return {"queue": self.queue, "task": self.task, "state": self.state,
                "since": self.since, "until": self.until, "args": self.args}

    def query(self) -> dict[str, str]:
        """The filters as URL query parameters (for the next page's link)."""
        out = {"queue": self.queue, "task": self.task, "state": self.state,
               "since": self.since.isoformat() if self.since else None,
               "until": self.until.isoformat() if self.until else None, "args": self.args}
        return {k: v for k, v in out.items() if v}

    @property
    def active(self) -> bool:
        return any(self.params().values())


def parse_filters(raw: Mapping[str, str], states: tuple[str, ...]) -> Filters:
    """The filters of a query string or form: ``queue``, ``task``, ``state`` (one of
    ``states``), ``since``/``until`` (ISO dates or date-times, UTC unless zoned) and ``args``
    (a JSON object or array the job's args must contain)."""
    queue, task, state = _field(raw, "queue"), _field(raw, "task"), _field(raw, "state")
    if queue is not None:
        queue = validate_name(queue, "queue")
    if task is not None:
        task = validate_name(task, "task")
    if state is not None and state not in states:
        raise ValidationError(f"unknown state {_short(state)!r}: choose one of "
                              f"{', '.join(states)}")
    since_text, until_text = _field(raw, "since"), _field(raw, "until")
    since = None if since_text is None else parse_time(since_text, "since")
    until = None if until_text is None else parse_time(until_text, "until")
    if since and until and since >= until:
        raise ValidationError("the time range is empty: 'since' must be before 'until'")
    args_text = _field(raw, "args", MAX_ARGS)
    args = None
    if args_text is not None:
        try:
            value = json.loads(args_text)
        except (ValueError, RecursionError):
            raise ValidationError('the args filter is not valid JSON: write an object such as '
                                  '{"order_id": 42}') from None
        if not isinstance(value, dict | list):
            raise ValidationError('the args filter must be a JSON object or array, e.g. '
                                  '{"order_id": 42}')
        args = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return Filters(queue, task, state, since, until, args)


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after (``at``, ``id``) in newest-first order."""

    at: dt.datetime | None
    id: int

    def text(self) -> str:
        return f"{self.id}" if self.at is None else f"{self.at.isoformat()}~{self.id}"


def parse_cursor(text: str | None, timed: bool) -> Cursor | None:
    """A page cursor from the URL: ``ID`` or ``TIME~ID`` (what a "next page" link carries)."""
    if not text:
        return None
    if len(text) > 80:
        raise ValidationError("the page cursor is too long: start again from the first page")
    if not timed:
        return Cursor(None, parse_id(text, "the page cursor"))
    at_text, sep, id_text = text.rpartition("~")
    if not sep:
        raise ValidationError(f"the page cursor {_short(text)!r} is malformed: start again "
                              "from the first page")
    return Cursor(parse_time(at_text, "the page cursor"), parse_id(id_text, "the page cursor"))
