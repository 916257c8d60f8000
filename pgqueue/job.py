"""Jobs as handlers see them, jobs to insert, and the typed outcomes a handler can return or raise.

State diagram (a job row lives in ``jobs`` until it is finished)::

    enqueue ──> waiting ──claim──> running ──success──────────> job_history (succeeded)
       (run_at in the future:        │  ├──Cancel / cancel()──> job_history (cancelled)
        "scheduled")                 │  ├──error, attempts left─> waiting (run_at = now + backoff)
                 ^                   │  ├──Snooze(s)──────────> waiting (attempt not counted)
                 │                   │  └──error, last attempt / Fail ──> failed_jobs
                 └── redrive ────────┴──────────────────────────────────── failed_jobs
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pgqueue._defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY

__all__ = ["Cancel", "Fail", "Job", "NewJob", "Outcome", "Snooze"]


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job, as handed to a handler or returned by queue-control calls.

    ``attempt`` counts from 1 for the first run. ``payload`` is an alias of ``args`` (the
    backstage seed's name for it).
    """

    id: int
    queue: str
    task: str
    args: dict[str, Any]
    priority: int = DEFAULT_PRIORITY
    attempt: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    run_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    unique_key: str | None = None
    timeout_s: float | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    state: str = "waiting"

    @property
    def payload(self) -> dict[str, Any]:
        return self.args

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated job to insert. Built by :class:`pgqueue.App`; drivers take it as is.

    ``args_json`` is the already-serialised JSON text of ``args`` (serialised once, at
    validation). Exactly one of ``run_at`` and ``delay_s`` may be set.
    """

    queue: str
    task: str
    args_json: str
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    run_at: dt.datetime | None = None
    delay_s: float | None = None
    unique_key: str | None = None
    timeout_s: float | None = None
    meta_json: str = "{}"


class Outcome(Exception):
    """Base of the typed outcomes. A handler may ``return`` or ``raise`` one."""


class Snooze(Outcome):
    """Run the job again in ``seconds``; the attempt is not counted as a failure."""

    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("Snooze seconds must be >= 0")
        self.seconds = float(seconds)
        super().__init__(f"snoozed for {seconds} s")


class Cancel(Outcome):
    """Stop the job for good; it ends in ``job_history`` as ``cancelled``."""

    def __init__(self, reason: str = "cancelled by handler") -> None:
        self.reason = reason
        super().__init__(reason)


class Fail(Outcome):
    """Fail now, without further retries: the job goes to ``failed_jobs`` with this reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
