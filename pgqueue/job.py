"""Jobs and their outcome policy, in one typed place.

This module is the one home of: the job states (:class:`JobState`), the record of a failed
attempt (:class:`AttemptError`), the outcome table (:data:`OUTCOMES`: which outcome leads to which
state, table and attempt count), the rescue rule (:func:`rescue_counts`,
:func:`rescue_quarantines`, :data:`QUARANTINE_AFTER`, :data:`RESCUE_SPREAD_S`) and its reasons
(:data:`RESCUE_REASON`, :data:`QUARANTINE_REASON`), the typed outcomes a handler can return or
raise (:class:`Snooze`, :class:`Cancel`, :class:`Fail`, :class:`Await`), and the job rows the
drivers return (:class:`Job`, :class:`FailedJob`, :class:`FinishedJob`). Drivers take the policy
as parameters (the rescue reasons and limits are bound SQL parameters and Lua ``ARGV``) instead of
writing it again.

State diagram (a job row lives in ``jobs`` until it is finished)::

    enqueue ──> waiting ──claim──> running ──success──────────> job_history (succeeded)
       (run_at in the future:        │  ├──Cancel / cancel()──> job_history (cancelled)
        "scheduled")                 │  ├──error, attempts left─> waiting (run_at = now + backoff)
                 ^                   │  ├──Snooze(s)──────────> waiting (attempt not counted,
                 │                   │  │                        snoozes + 1; past the task's
                 │                   │  │                        max_snoozes: failed_jobs)
                 │                   │  ├──error, last attempt / Fail ──> failed_jobs
                 │                   │  ├──lease expired ──────> waiting (rescued, RESCUE_REASON,
                 │                   │  │                     run_at spread over the dead
                 │                   │  │                     worker's jobs)
                 │                   │  └──lease expired, its worker died while running it
                 │                   │       QUARANTINE_AFTER times ──> failed_jobs
                 │                   │       (quarantined, QUARANTINE_REASON)
                 └── redrive ────────┴──────────────────────────────────── failed_jobs
"""

from __future__ import annotations

import datetime as dt
import json
import json.scanner
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, overload

from pgqueue._defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY
from pgqueue.errors import ValidationError

__all__ = [
    "DEP_POLICIES",
    "MAX_JSON_DEPTH",
    "OUTCOMES",
    "QUARANTINE_AFTER",
    "QUARANTINE_REASON",
    "RESCUE_REASON",
    "RESCUE_SPREAD_S",
    "AttemptError",
    "Await",
    "Cancel",
    "Dependency",
    "Fail",
    "FailedJob",
    "FinishedJob",
    "Job",
    "JobState",
    "NewJob",
    "NewJobs",
    "Outcome",
    "OutcomeRule",
    "Snooze",
    "WorkflowJob",
    "attempt_errors",
    "build_job",
    "decode_stored",
    "quarantine_reason_for",
    "rescue_counts",
    "rescue_quarantines",
]

#: How deeply a job's ``args`` and ``meta`` may nest objects and arrays (the top-level object is
#: level 1). Enqueue refuses deeper values with :class:`pgqueue.ValidationError`: Python's JSON
#: decoder gives up (``RecursionError``) somewhere below 1,000 levels, and a job the worker
#: cannot decode cannot run.
MAX_JSON_DEPTH = 64


class JobState(StrEnum):
    """Where a job is in its life. A member equals its text (``JobState.WAITING == "waiting"``),
    which is what the stores keep."""

    #: in ``jobs``, ready now or at ``run_at`` ("scheduled" when run_at is ahead)
    WAITING = "waiting"
    #: in ``jobs``, claimed by a worker under a lease
    RUNNING = "running"
    #: in ``jobs``, waiting for the jobs it depends on (``depends_on``, a workflow) or awaits
    #: (:class:`Await`); never claimed until they finish
    BLOCKED = "blocked"
    #: in ``job_history``: the handler returned
    SUCCEEDED = "succeeded"
    #: in ``job_history``: cancelled while waiting, or by the handler / a cancel request
    CANCELLED = "cancelled"
    #: in ``failed_jobs``: no attempts left, ``Fail``, an unknown task, or quarantined (its
    #: worker died while running it, again and again)
    FAILED = "failed"


# ---- the rescue rule -------------------------------------------------------------------------
# A job whose lease expired is rescued: it goes back to waiting with an error record
# (RESCUE_REASON). When its worker died holding it (rescue_counts), its ``rescues`` count goes
# up -- a counter apart from ``attempt`` -- and the jobs of that dead worker come back
# RESCUE_SPREAD_S apart. A job whose count reaches QUARANTINE_AFTER while it is the prime suspect
# of its worker's death (rescue_quarantines) is quarantined to the archive (QUARANTINE_REASON).
# A rescue never archives a job for want of attempts. Why, and what it cannot tell apart:
# CONTRIBUTING.md, "Rescue".

#: The text of the error recorded on a job whose lease expired: its worker died, froze or lost
#: the database while running it. Drivers receive it as a parameter of ``rescue_expired``.
RESCUE_REASON = "worker died while running"

#: The archive reason of a quarantined job (``{n}`` is replaced by its rescue count): a job
#: whose worker died while running it :data:`QUARANTINE_AFTER` times, each time the prime suspect
#: among the jobs that worker held (see :func:`rescue_quarantines`). Typically a handler that
#: kills its process (``os._exit``, a segfault in an extension, the OOM killer) or freezes it.
QUARANTINE_REASON = ("quarantined: its worker process died while running it {n} times "
                     "(the job kills or freezes its worker: os._exit, a crash, out of memory)")

#: How many deaths of its worker a job is blamed for before it is quarantined (default 3).
QUARANTINE_AFTER = 3

#: Jobs rescued together from one dead worker go back with their ``run_at`` spread this many
#: seconds apart (0, 1x, 2x, ...; the most-rescued last), so they are not claimed together
#: again and a job that kills its worker meets other neighbours next time. (The last of a dead
#: worker's 100 jobs is back 20 s after the first.)
RESCUE_SPREAD_S = 0.2


def rescue_counts(worker_alive: bool) -> bool:
    """Whether a rescue counts against the job (adds one to its ``rescues``).

    A lease expires for two reasons: the worker died (crashed, was killed, froze, lost the
    database) while holding the job, or the worker is alive but did not list the job in its
    heartbeat (a claim whose answer was lost: the job never ran). Only the first is evidence
    against the job; the stores tell them apart by the worker's registry heartbeat: a worker that
    heartbeated after the job's lease expired is alive (``worker_alive``), and then the rescue is
    not counted."""
    return not worker_alive


def rescue_quarantines(rescues: int, co_held_max: int | None, quarantine_after: int) -> bool:
    """The quarantine rule, applied to each job rescued from a dead worker.

    ``rescues`` is the job's rescue count *before* this rescue; ``co_held_max`` the highest count
    among the other jobs the same dead worker held (None if it held no other). The job is
    quarantined -- archived with :data:`QUARANTINE_REASON` instead of requeued -- when this rescue
    makes its count reach ``quarantine_after`` **and** it is the prime suspect: its count is higher
    than every co-held job's. A job that kills its worker is in every death it causes, whereas an
    innocent job claimed alongside it is in some of them only, so (as long as the deaths are the
    killer's) its count never exceeds the killer's: innocents are not quarantined for a killer's
    deaths. A tie (the same jobs claimed
    together each time) blames nobody; the spread run times separate them, and at twice
    ``quarantine_after`` a job is quarantined whatever its neighbours.

    >>> rescue_quarantines(2, None, 3)   # alone on its third dead worker
    True
    >>> rescue_quarantines(2, 2, 3)      # tied with a neighbour: not yet
    False
    >>> rescue_quarantines(1, 2, 3)      # an innocent neighbour of a killer
    False
    """
    after = rescues + 1
    if after < quarantine_after:
        return False
    return co_held_max is None or rescues > co_held_max or after >= 2 * quarantine_after


def quarantine_reason_for(rescues: int, template: str = QUARANTINE_REASON) -> str:
    """The archive reason of a job quarantined after ``rescues`` deaths of its worker."""
    return template.replace("{n}", str(rescues))


def _parse_at(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class AttemptError:
    """The record of one failed attempt, kept in a job's ``errors`` (oldest first).

    ``attempt`` is the attempt it belongs to (from 1); ``error`` the one-line description
    (``"ValueError: boom"``, a timeout, :data:`RESCUE_REASON`, ...); ``traceback`` the formatted
    traceback when there was an exception; ``at`` when it happened (UTC; None only for a stored
    record without a readable time); ``worker`` the worker whose lease expired, for a rescue.

    Stored as JSON (:meth:`to_json` / :meth:`from_json`). Reading it like the dict it was before
    (``err["error"]``) still works and gives the stored JSON value.
    """

    attempt: int
    error: str
    traceback: str | None = None
    at: dt.datetime | None = None
    worker: str | None = None

    @classmethod
    def now(cls, attempt: int, error: str, traceback: str | None = None) -> AttemptError:
        """A record of ``attempt`` failing now."""
        return cls(attempt, error, traceback, dt.datetime.now(dt.UTC))

    def to_json(self) -> dict[str, Any]:
        """The stored form: ``{"attempt", "error", "traceback", "at"}`` (``at`` in ISO 8601),
        plus ``"worker"`` for a rescue."""
        out: dict[str, Any] = {"attempt": self.attempt, "error": self.error,
                               "traceback": self.traceback,
                               "at": None if self.at is None else self.at.isoformat()}
        if self.worker is not None:
            out["worker"] = self.worker
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> AttemptError:
        """Read a stored record (tolerant of missing keys in old rows)."""
        try:
            attempt = int(value.get("attempt") or 0)
        except (TypeError, ValueError):
            attempt = 0
        error = value.get("error")
        traceback = value.get("traceback")
        worker = value.get("worker")
        return cls(attempt=attempt,
                   error="" if error is None else str(error),
                   traceback=None if traceback is None else str(traceback),
                   at=_parse_at(value.get("at")),
                   worker=None if worker is None else str(worker))

    def __getitem__(self, key: str) -> Any:
        """``err["error"]``: the stored JSON value (read access of the former dict form)."""
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        """``err.get("error")``, as on the former dict form."""
        return self.to_json().get(key, default)


def attempt_errors(stored: Sequence[Mapping[str, Any]] | None) -> list[AttemptError]:
    """A stored ``errors`` list (JSON) as typed records."""
    return [AttemptError.from_json(e) for e in stored or ()]


#: the C scanner behind ``json.loads``, called directly (``json.loads`` adds two Python calls and
#: two regular-expression matches around it for every value)
_SCAN: Any = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _loads(text: str) -> Any:
    """``json.loads(text)``, faster for text that starts with the value (as PostgreSQL's jsonb
    output does); anything else goes to ``json.loads``, which raises the usual errors."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def decode_stored(text: str | bytes | None,
                  what: str = "args") -> tuple[dict[str, Any], str | None]:
    """Decode one stored JSON object (a job's ``args`` or ``meta``) on its own.

    Returns ``(value, None)``, or ``({}, reason)`` when the text cannot be decoded: nested more
    deeply than the decoder can follow (a row written around pgqueue's validation, e.g. by SQL),
    not JSON, or not an object. Drivers decode each claimed job with it, so that one such row
    fails only its own job (the worker archives it with ``reason``, see
    :attr:`Job.decode_error`) instead of the whole claim::

        decode_stored('{"n": 1}')   # ({'n': 1}, None)
    """
    if text is None or text == "{}":  # no arguments / no meta: the common case
        return {}, None
    try:
        if type(text) is str:  # _loads, inlined (once per claimed job with arguments)
            try:
                value, end = _SCAN(text, 0)
            except StopIteration:
                value = json.loads(text)  # not a value at 0: json.loads says why
            else:
                if end != len(text):
                    value = json.loads(text)
        else:
            value = json.loads(text)
    except RecursionError:
        return {}, (f"the stored {what} cannot be decoded: nested more deeply than the JSON "
                    f"decoder can follow (pgqueue refuses more than {MAX_JSON_DEPTH} levels at "
                    "enqueue; this row was written around it)")
    except ValueError as exc:
        return {}, f"the stored {what} cannot be decoded: not valid JSON ({exc})"
    if not isinstance(value, dict):
        return {}, (f"the stored {what} cannot be decoded: a JSON object was expected, not "
                    f"{type(value).__name__}")
    return value, None


Where = Literal["jobs", "job_history", "failed_jobs"]


@dataclass(frozen=True, slots=True)
class OutcomeRule:
    """What one outcome does to a running job."""

    #: the state it ends in
    state: JobState
    #: the table (or store) it ends in
    where: Where
    #: whether the attempt counts against ``max_attempts`` (False: it is given back)
    counts_attempt: bool
    #: whether an :class:`AttemptError` is appended to the job's errors
    records_error: bool


#: The outcome table: every way a running job can end its attempt.
OUTCOMES: Mapping[str, OutcomeRule] = {
    #: the handler returned (or completed the job in its own transaction)
    "succeeded": OutcomeRule(JobState.SUCCEEDED, "job_history", True, False),
    #: ``Cancel`` returned/raised, or a cancel request stopped it
    "cancelled": OutcomeRule(JobState.CANCELLED, "job_history", True, False),
    #: ``Snooze(s)``: waiting again in ``s`` seconds, ``snoozes`` + 1 (past the task's
    #: ``max_snoozes`` the snooze is a ``failed`` outcome instead)
    "snoozed": OutcomeRule(JobState.WAITING, "jobs", False, False),
    #: ``Await(ids)``: blocked until those jobs finish, then waiting again (attempt not counted)
    "awaiting": OutcomeRule(JobState.BLOCKED, "jobs", False, False),
    #: the worker shut down before the handler finished: waiting again at once
    "released": OutcomeRule(JobState.WAITING, "jobs", False, False),
    #: an error with attempts left: waiting again after the retry policy's backoff
    "retried": OutcomeRule(JobState.WAITING, "jobs", True, True),
    #: an error on the last attempt, ``Fail``, or an unknown task
    "failed": OutcomeRule(JobState.FAILED, "failed_jobs", True, True),
    #: the lease expired (:data:`RESCUE_REASON`): waiting again, ``run_at`` spread over the dead
    #: worker's jobs (:data:`RESCUE_SPREAD_S`); ``rescues`` counted when the worker died
    #: (:func:`rescue_counts`). The claim counted the attempt and it stays counted (the outcome
    #: guard needs one number per claim), but a rescue never archives a job for want of
    #: attempts: it runs again, past ``max_attempts`` if need be.
    "rescued": OutcomeRule(JobState.WAITING, "jobs", True, True),
    #: its worker died while running it :data:`QUARANTINE_AFTER` times, each time the prime
    #: suspect (:func:`rescue_quarantines`): archived with :data:`QUARANTINE_REASON`
    "quarantined": OutcomeRule(JobState.FAILED, "failed_jobs", True, True),
}


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job, as handed to a handler or returned by queue-control calls.

    ``attempt`` counts from 1 for the first run. ``payload`` is an alias of ``args`` (the
    backstage seed's name for it).

    ``decode_error`` is None, except for a job whose stored ``args`` or ``meta`` could not be
    decoded (see :func:`decode_stored`): its ``args``/``meta`` are then empty, and the worker
    archives it with this reason without running it. ``snoozes`` counts the
    :class:`Snooze` outcomes of earlier runs (0 for a job that never snoozed); inside a handler,
    ``pgqueue.current_job().snoozes``.
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
    errors: list[AttemptError] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    state: str = JobState.WAITING
    decode_error: str | None = None
    #: times the job was snoozed (:class:`Snooze`) so far; a snooze gives its attempt back, so
    #: this is what bounds a job that snoozes again and again (the task's ``max_snoozes``)
    snoozes: int = 0

    @property
    def payload(self) -> dict[str, Any]:
        """The job's arguments (``args``), under the Backstage seed's name for them."""
        return self.args

    @property
    def awaited(self) -> dict[int, Any] | None:
        """After an :class:`Await`: each awaited job's result by id (None for one that failed
        or was cancelled); None when the job has not awaited anything."""
        found = self.meta.get("awaited")
        if not isinstance(found, dict):
            return None
        return {int(k): (v.get("result") if isinstance(v, dict) else None)
                for k, v in found.items()}

    @property
    def awaited_states(self) -> dict[int, str] | None:
        """After an :class:`Await`: each awaited job's final state (``succeeded``,
        ``cancelled``, ``failed``) by id; None when the job has not awaited anything."""
        found = self.meta.get("awaited")
        if not isinstance(found, dict):
            return None
        return {int(k): str(v.get("state")) if isinstance(v, dict) else "unknown"
                for k, v in found.items()}

    @property
    def is_last_attempt(self) -> bool:
        """True when this attempt is the last one ``max_attempts`` allows: an error now sends
        the job to ``failed_jobs`` instead of a retry."""
        return self.attempt >= self.max_attempts


class _JobSlots:
    """Builds a :class:`Job` faster than its own ``__init__`` (see :func:`build_job`): Job's
    slots, set by plain attribute stores."""

    __slots__ = Job.__slots__  # the same names in the same order: the same layout

    def __init__(self, id: int, queue: str, task: str, args: dict[str, Any], priority: int,
                 attempt: int, max_attempts: int, run_at: dt.datetime | None,
                 created_at: dt.datetime | None, unique_key: str | None,
                 timeout_s: float | None, errors: list[AttemptError], meta: dict[str, Any],
                 state: str, decode_error: str | None, snoozes: int) -> None:
        self.id = id
        self.queue = queue
        self.task = task
        self.args = args
        self.priority = priority
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.run_at = run_at
        self.created_at = created_at
        self.unique_key = unique_key
        self.timeout_s = timeout_s
        self.errors = errors
        self.meta = meta
        self.state = state
        self.decode_error = decode_error
        self.snoozes = snoozes


def build_job(id: int, queue: str, task: str, args: dict[str, Any], priority: int,
              attempt: int, max_attempts: int, run_at: dt.datetime | None,
              created_at: dt.datetime | None, unique_key: str | None, timeout_s: float | None,
              errors: list[AttemptError], meta: dict[str, Any], state: str,
              decode_error: str | None, snoozes: int) -> Job:
    """``Job(...)`` with every field given, for the drivers' claims (one per claimed job).

    The same object as ``Job``'s own ``__init__`` makes, at about a fifth of its cost: a frozen
    dataclass sets each field through ``object.__setattr__`` (about 0.15 us a field, 2-4 us a
    job here), where :class:`_JobSlots` stores them directly and then becomes a ``Job`` (same
    slots, same layout: Python allows the class change, and the frozen ``Job`` is what the
    caller gets)."""
    job: Any = _JobSlots(id, queue, task, args, priority, attempt, max_attempts, run_at,
                         created_at, unique_key, timeout_s, errors, meta, state, decode_error,
                         snoozes)
    job.__class__ = Job
    return job  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class FailedJob:
    """A row of the ``failed_jobs`` archive: ``errors`` holds every failed attempt, ``reason``
    why the job was archived."""

    id: int
    queue: str
    task: str
    args: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    errors: list[AttemptError]
    reason: str
    enqueued_at: dt.datetime
    failed_at: dt.datetime

    @property
    def payload(self) -> dict[str, Any]:
        """The archived job's arguments (``args``), under the Backstage seed's name."""
        return self.args


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """A row of the ``job_history``: a job that left the live set as ``succeeded`` or
    ``cancelled``. ``result`` is the handler's JSON result (or None)."""

    id: int
    queue: str
    task: str
    args: dict[str, Any]
    priority: int
    state: str
    attempt: int
    max_attempts: int
    errors: list[AttemptError]
    result: Any
    worker_id: str | None
    enqueued_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime


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
    #: at most the queue's ``key_concurrency`` (default 1) jobs with this key run at once
    concurrency_key: str | None = None
    #: the jobs this one waits for (it is ``blocked`` until they finish)
    depends_on: tuple[Dependency, ...] = ()
    #: what it does when a dependency fails for good or is cancelled (:data:`DEP_POLICIES`)
    on_dependency_failure: str = "cancel"
    #: the workflow this job belongs to (:func:`pgqueue.chain`, :func:`pgqueue.group`)
    workflow_id: str | None = None


class NewJobs(Sequence[NewJob]):
    """Jobs that differ only in their arguments, as :meth:`pgqueue.App.enqueue_many` builds
    them: one validated ``template`` and each job's arguments, so that a batch of 100,000 jobs
    is not 100,000 objects (making a frozen :class:`NewJob` cost about twice as much as
    validating and serialising its arguments).

    Given ``serialise``, ``args`` are the arguments as passed, validated and serialised when
    first needed: reading the batch as a sequence (any driver does) first serialises every
    job, so a ValidationError (naming the bad one, ``args_list[7]: ...``) comes before the
    driver sees a single job; only :meth:`texts` serialises a slice at a time (the PostgreSQL
    driver's COPY, in a transaction of its own: the client serialises while the server takes
    in the rows before, and a bad row rolls the whole batch back). Without ``serialise``,
    ``args`` are the JSON texts already."""

    __slots__ = ("_args", "_serialise", "template")

    def __init__(self, template: NewJob, args: list[Any],
                 serialise: Callable[[Any], str] | None = None) -> None:
        self.template = template
        self._args = args
        self._serialise = serialise

    @property
    def args_json(self) -> list[str]:
        """The JSON text of every job's arguments (serialised now if not yet)."""
        if self._serialise is not None:
            self._args = self.texts(0, len(self._args))
            self._serialise = None
        return self._args

    def texts(self, start: int, stop: int) -> list[str]:
        """The JSON texts of the jobs ``[start:stop]``, serialised now if not yet (and not
        kept: for one pass over a large batch)."""
        serialise = self._serialise
        part = self._args[start:stop]
        if serialise is None:
            return part
        out: list[str] = []
        append = out.append
        i = -1
        try:
            for i, args in enumerate(part):  # noqa: B007 (i names the bad one)
                append(serialise(args))
        except ValidationError as exc:
            raise type(exc)(f"args_list[{start + i}]: {exc}") from exc
        return out

    def __len__(self) -> int:
        return len(self._args)

    @overload
    def __getitem__(self, index: int) -> NewJob: ...
    @overload
    def __getitem__(self, index: slice) -> NewJobs: ...
    def __getitem__(self, index: int | slice) -> NewJob | NewJobs:
        if isinstance(index, slice):
            return NewJobs(self.template, self.args_json[index])
        return self._job(self.args_json[index])

    def __iter__(self) -> Iterator[NewJob]:
        return map(self._job, self.args_json)

    def _job(self, args_json: str) -> NewJob:
        t = self.template
        return NewJob(t.queue, t.task, args_json, t.priority, t.max_attempts, t.run_at,
                      t.delay_s, t.unique_key, t.timeout_s, t.meta_json, t.concurrency_key,
                      t.depends_on, t.on_dependency_failure, t.workflow_id)

    def __repr__(self) -> str:
        return f"NewJobs({self.template!r}, <{len(self._args)} jobs>)"


#: What a dependent job does when one of its dependencies fails for good or is cancelled:
#: ``cancel`` it (the default: it ends in history as cancelled), ``run`` it anyway (the failed
#: dependency's result is None), or ``fail`` it (to ``failed_jobs``). Its own dependents then
#: follow their policies in turn, in the same transaction.
DEP_POLICIES = ("cancel", "run", "fail")


@dataclass(frozen=True, slots=True)
class Dependency:
    """One job a new job waits for: an existing job (``job_id``) or the job at ``index`` in the
    same insert batch (a workflow). When it succeeds, its result goes into the new job's
    argument ``arg`` (at position ``pos`` of a list argument when set); ``arg`` None: not
    passed."""

    job_id: int | None = None
    index: int | None = None
    arg: str | None = None
    pos: int | None = None


@dataclass(frozen=True, slots=True)
class WorkflowJob:
    """One job of a workflow as :meth:`pgqueue.App.workflow` reports it: its id, task, state
    (``blocked``, ``waiting``, ``running``, ``succeeded``, ``cancelled``, ``failed``), when it
    started and finished, and its last error (or archive reason)."""

    id: int
    task: str
    state: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None


class Outcome(Exception):
    """Base of the typed outcomes. A handler may ``return`` or ``raise`` one."""


class Snooze(Outcome):
    """Run the job again in ``seconds``; the attempt is not counted as a failure.

    Each snooze is counted on the job (:attr:`Job.snoozes`). A task allows at most
    ``max_snoozes`` of them (default :data:`pgqueue._defaults.DEFAULT_MAX_SNOOZES`, 100;
    ``@app.task(max_snoozes=None)`` for no limit): the snooze after that archives the job in
    ``failed_jobs`` with a reason saying so, so a handler that always snoozes cannot loop
    forever. Example::

        @app.task(max_snoozes=10)
        def ship(order_id: int) -> None:
            if not warehouse_ready(order_id):
                raise pgqueue.Snooze(30)   # again in 30 s; the 11th snooze fails the job
    """

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


class Await(Outcome):
    """Park the job until the jobs ``job_ids`` have finished, then run it again (a handler
    returns or raises it). While parked the job is ``blocked``: it holds no worker slot, and
    the attempt is not counted. When it runs again, ``pgqueue.current_job().awaited`` maps each
    awaited id to its result (None for a job that failed or was cancelled; see
    :attr:`Job.awaited_states`). Example::

        @app.task
        def total(n: int) -> int:
            done = pgqueue.current_job().awaited
            if done is None:
                raise pgqueue.Await([part.enqueue(i=i) for i in range(n)])
            return sum(done.values())

    Needs a driver with the ``workflows`` capability.
    """

    def __init__(self, job_ids: Sequence[int]) -> None:
        ids = list(job_ids)
        if not ids or any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in ids):
            raise ValueError("Await needs a non-empty list of job ids (positive integers)")
        self.job_ids = list(dict.fromkeys(ids))
        super().__init__(f"awaiting {len(self.job_ids)} job(s)")


class Fail(Outcome):
    """Fail now, without further retries: the job goes to ``failed_jobs`` with this reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
