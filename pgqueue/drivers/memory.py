"""The memory driver: the whole driver seam in one process, for tests and development.

Semantics follow the PostgreSQL driver operation by operation (see
:mod:`pgqueue.drivers.postgres.sql`):

- claim takes ready jobs of unpaused queues in ``(priority, run_at, id)`` order, adds one to
  ``attempt`` and gives the job a lease of ``lease_s`` seconds held by ``worker_id``;
- finish, requeue and archive only touch jobs that are ``running`` under the given worker (a
  worker whose job was rescued cannot complete it any more);
- requeue with ``count_attempt=False`` (snooze, shutdown release) gives the attempt back (a
  snooze also adds one to ``snoozes``), and an
  ``error`` record is appended to the job's ``errors``;
- archive moves the job to the failed archive with its errors and a reason; redrive puts it back
  to waiting with the same id, ``attempt`` 0 and its errors kept;
- rescue of expired leases follows the rule of :mod:`pgqueue.job`: a job goes back to waiting
  (its ``rescues`` counted when its worker died, the dead worker's jobs spread apart) or, when
  its worker died holding it too often, is quarantined to the archive
  (:func:`pgqueue.job.rescue_quarantines`), with the reasons it is given;
- cancel of a waiting job moves it to history as ``cancelled``; of a running job it sets the
  cancel-requested flag and tells the worker through the listener;
- count is waiting (including scheduled) + running; pop removes the next ready job, paused or not.

Declared limits (:attr:`MemoryDriver.capabilities`): jobs live in this process only (lost on exit,
invisible to other processes: ``cross_process=False``); no database transaction to join
(``transactional_enqueue=False``, ``transactional_completion=False``: :class:`pgqueue.App` refuses
``conn=`` with :class:`pgqueue.CapabilityError`). History keeps the last ``history_limit`` finished
jobs (default 10,000), readable with :meth:`MemoryDriver.history`.

Thread safety: every operation takes one lock, so an enqueuer in one thread and a worker's event
loop in another can share a driver. Async twins are generated
(:func:`~pgqueue.drivers.base.async_twin`) and run the sync code inline (nothing blocks for longer
than a dictionary update). Wake-ups are pushed to each started listener with
``loop.call_soon_threadsafe``: a worker wakes at once on insert, requeue, redrive and resume.

Run times (``run_at``) use the wall clock (``time.time()``); leases use ``time.monotonic()``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pgqueue._service import Service
from pgqueue.drivers.base import (
    DEP_CANCEL_REASON,
    DEP_FAIL_REASON,
    Capabilities,
    FailedJob,
    FinalOutcome,
    Finish,
    FinishedJob,
    NoDatabaseMixin,
    QueueStats,
    Requeue,
    WakeCallback,
    WorkflowJob,
    async_twin,
    mean_run_time,
)
from pgqueue.errors import CapabilityError, DependencyError, JobError, JobNotFoundError
from pgqueue.job import (
    QUARANTINE_AFTER,
    QUARANTINE_REASON,
    RESCUE_REASON,
    RESCUE_SPREAD_S,
    AttemptError,
    Job,
    JobState,
    NewJob,
    decode_stored,
    quarantine_reason_for,
    rescue_counts,
    rescue_quarantines,
)

__all__ = ["MemoryDriver", "MemoryListener"]

Note = tuple[str, Any]
R = TypeVar("R")


def _ts(value: dt.datetime) -> float:
    return value.timestamp()


def _dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


@dataclass(slots=True)
class _Rec:
    """One job: live (``waiting``/``running``) or archived (``failed``)."""

    id: int
    queue: str
    task: str
    args_json: str
    priority: int
    max_attempts: int
    run_at: float
    created_at: float
    unique_key: str | None
    timeout_s: float | None
    meta_json: str
    attempt: int = 0
    snoozes: int = 0
    state: str = "waiting"
    errors: list[AttemptError] = field(default_factory=list)
    last_error: str | None = None
    worker_id: str | None = None
    started_at: float | None = None
    lease_expires: float | None = None
    cancel_requested: bool = False
    #: rescues from a worker that died holding it (:func:`pgqueue.job.rescue_counts`)
    rescues: int = 0
    reason: str | None = None
    failed_at: float | None = None
    #: bumped whenever the job (re)enters waiting; heap entries with an older seq are stale
    seq: int = 0
    #: dependencies not finished yet (a ``blocked`` job)
    deps_left: int = 0


@dataclass(slots=True)
class _Edge:
    """A dependency: ``job_id`` waits for ``dep_id`` (see ``job_deps`` in the postgres
    schema)."""

    job_id: int
    dep_id: int
    policy: str
    arg: str | None = None
    pos: int | None = None
    awaited: bool = False
    outcome: str | None = None
    result_json: str | None = None


@dataclass(slots=True)
class _Queue:
    """Per-queue indexes. Heaps use lazy deletion: an entry is valid only if its job is still
    waiting with the same ``seq``."""

    #: ready jobs: (priority, run_at, id, seq)
    ready: list[tuple[int, float, int, int]] = field(default_factory=list)
    #: jobs whose run_at is in the future: (run_at, id, seq)
    delayed: list[tuple[float, int, int]] = field(default_factory=list)
    #: ids of the waiting jobs that are still in ``delayed``
    scheduled: set[int] = field(default_factory=set)
    #: ids of the live jobs (waiting + running)
    live: set[int] = field(default_factory=set)
    #: ids of the running jobs
    running: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _WorkerInfo:
    queues: list[str]
    concurrency: int
    heartbeat: float


class MemoryListener(Service):
    """Delivers a :class:`MemoryDriver`'s wake-ups to one event loop until stopped (a service:
    registered with the driver from start to stop, on the loop that started it)."""

    name = "memory-listener"

    def __init__(self, driver: MemoryDriver, callback: WakeCallback) -> None:
        super().__init__()
        self._driver = driver
        self._callback = callback
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Register with the driver; wake-ups are delivered on the current event loop."""
        self._loop = asyncio.get_running_loop()
        self._driver._add_listener(self)
        await super().start()

    async def run(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        self._driver._remove_listener(self)
        self._loop = None
        await super().stop()

    def deliver(self, kind: str, payload: Any) -> bool:
        """Schedule ``callback(kind, payload)`` on the listener's loop; False if it is gone."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(self._callback, kind, payload)
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True


class MemoryDriver(NoDatabaseMixin):
    """In-process driver (see the module docstring for semantics and declared limits).

    ``history_limit`` bounds the finished-job history (oldest entries are dropped first).
    """

    name = "memory"
    capabilities = Capabilities(
        transactional_enqueue=False,
        transactional_completion=False,
        cross_process=False,
        push_wakeups=True,
        history=True,
        priorities=True,
        delays=True,
        workflows=True,
    )

    def __init__(self, *, history_limit: int = 10_000) -> None:
        if history_limit < 1:
            raise ValueError("history_limit must be >= 1")
        self._lock = threading.Lock()
        self._next_id = 1
        self._jobs: dict[int, _Rec] = {}
        self._queues: dict[str, _Queue] = {}
        self._failed: dict[int, _Rec] = {}
        self._unique: dict[str, int] = {}
        self._paused: set[str] = set()
        #: queues that were ever paused or resumed (the ``queues`` table of postgres)
        self._known_queues: set[str] = set()
        self._history: deque[FinishedJob] = deque(maxlen=history_limit)
        self._workers: dict[str, _WorkerInfo] = {}
        self._listeners: list[MemoryListener] = []
        #: workflows: edges by dependency and by dependent, workflow members, step checkpoints,
        #: and a condition signalled when a job finishes for good (App.result)
        self._deps: dict[int, list[_Edge]] = {}
        self._edges_of: dict[int, list[_Edge]] = {}
        self._flows: dict[str, list[int]] = {}
        self._steps: dict[tuple[int, str], tuple[str, str]] = {}
        self._finished = threading.Condition(self._lock)

    def __repr__(self) -> str:
        return f"<pgqueue.MemoryDriver jobs={len(self._jobs)} failed={len(self._failed)}>"

    async def _offload(self, fn: Callable[..., R], *args: Any) -> R:
        """How the generated async twins run a sync operation: inline (it only takes the lock
        for a dictionary update)."""
        return fn(*args)

    # ---- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Nothing to release; jobs stay (a later call on this driver sees them)."""

    async def aclose(self) -> None:
        """Nothing to release; jobs stay."""

    def check(self) -> None:
        """Always usable."""

    # ---- helpers (call with the lock held) ---------------------------------------------------
    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue()
        return q

    def _valid(self, job_id: int, seq: int) -> _Rec | None:
        rec = self._jobs.get(job_id)
        if rec is not None and rec.state == "waiting" and rec.seq == seq:
            return rec
        return None

    def _push_waiting(self, rec: _Rec, now: float) -> None:
        rec.seq += 1
        q = self._queue(rec.queue)
        if rec.run_at <= now:
            heapq.heappush(q.ready, (rec.priority, rec.run_at, rec.id, rec.seq))
        else:
            heapq.heappush(q.delayed, (rec.run_at, rec.id, rec.seq))
            q.scheduled.add(rec.id)

    def _promote(self, q: _Queue, now: float) -> None:
        """Move due jobs from ``delayed`` to ``ready``."""
        while q.delayed and q.delayed[0][0] <= now:
            _, job_id, seq = heapq.heappop(q.delayed)
            rec = self._valid(job_id, seq)
            if rec is not None:
                q.scheduled.discard(job_id)
                heapq.heappush(q.ready, (rec.priority, rec.run_at, rec.id, rec.seq))

    def _top_ready(self, q: _Queue) -> tuple[int, float, int, int] | None:
        while q.ready:
            top = q.ready[0]
            if self._valid(top[2], top[3]) is not None:
                return top
            heapq.heappop(q.ready)
        return None

    def _top_delayed(self, q: _Queue) -> tuple[float, int, int] | None:
        while q.delayed:
            top = q.delayed[0]
            if self._valid(top[1], top[2]) is not None:
                return top
            heapq.heappop(q.delayed)
        return None

    def _remove_live(self, rec: _Rec) -> None:
        del self._jobs[rec.id]
        q = self._queue(rec.queue)
        q.live.discard(rec.id)
        q.running.discard(rec.id)
        q.scheduled.discard(rec.id)
        if rec.unique_key is not None and self._unique.get(rec.unique_key) == rec.id:
            del self._unique[rec.unique_key]

    def _add_live(self, rec: _Rec, now: float) -> None:
        rec.state = "waiting"
        self._jobs[rec.id] = rec
        self._queue(rec.queue).live.add(rec.id)
        if rec.unique_key is not None:
            self._unique[rec.unique_key] = rec.id
        self._push_waiting(rec, now)

    def _to_history(self, rec: _Rec, state: str, result_json: str | None, now: float) -> None:
        self._history.append(FinishedJob(
            id=rec.id, queue=rec.queue, task=rec.task, args=json.loads(rec.args_json),
            priority=rec.priority, state=state, attempt=rec.attempt,
            max_attempts=rec.max_attempts, errors=list(rec.errors),
            result=None if result_json is None else json.loads(result_json),
            worker_id=rec.worker_id, enqueued_at=_dt(rec.created_at),
            started_at=None if rec.started_at is None else _dt(rec.started_at),
            finished_at=_dt(now)))

    def _archive(self, rec: _Rec, error: AttemptError, reason: str, now: float) -> None:
        self._remove_live(rec)
        rec.errors.append(error)
        rec.last_error = error.error
        rec.state = JobState.FAILED
        rec.reason = reason
        rec.failed_at = now
        rec.lease_expires = None
        self._failed[rec.id] = rec

    def _requeue(self, rec: _Rec, delay_s: float, count_attempt: bool,
                 error: AttemptError | None, now: float, snooze: bool = False,
                 max_attempts: int | None = None) -> None:
        self._queue(rec.queue).running.discard(rec.id)
        rec.state = "waiting"
        rec.run_at = now + max(0.0, delay_s)
        if not count_attempt:
            rec.attempt -= 1
        if snooze:
            rec.snoozes += 1
        if max_attempts is not None:
            rec.max_attempts = max(rec.max_attempts, max_attempts)
        rec.worker_id = None
        rec.lease_expires = None
        if error is not None:
            rec.errors.append(error)
            rec.last_error = error.error
        self._push_waiting(rec, now)

    @staticmethod
    def _job(rec: _Rec) -> Job:
        # decoded job by job: one that cannot be decoded is archived by the worker, alone
        args, bad_args = decode_stored(rec.args_json, "args")
        meta, bad_meta = decode_stored(rec.meta_json, "meta")
        return Job(id=rec.id, queue=rec.queue, task=rec.task, args=args,
                   priority=rec.priority, attempt=rec.attempt, max_attempts=rec.max_attempts,
                   run_at=_dt(rec.run_at), created_at=_dt(rec.created_at),
                   unique_key=rec.unique_key, timeout_s=rec.timeout_s,
                   errors=list(rec.errors), meta=meta, state=rec.state,
                   decode_error=bad_args or bad_meta, snoozes=rec.snoozes)

    @staticmethod
    def _failed_job(rec: _Rec) -> FailedJob:
        assert rec.reason is not None and rec.failed_at is not None
        return FailedJob(id=rec.id, queue=rec.queue, task=rec.task,
                         args=decode_stored(rec.args_json)[0], priority=rec.priority,
                         attempt=rec.attempt, max_attempts=rec.max_attempts,
                         errors=list(rec.errors), reason=rec.reason,
                         enqueued_at=_dt(rec.created_at), failed_at=_dt(rec.failed_at))

    # ---- wake-ups ----------------------------------------------------------------------------
    def _add_listener(self, listener: MemoryListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def _remove_listener(self, listener: MemoryListener) -> None:
        with self._lock:
            self._listeners = [x for x in self._listeners if x is not listener]

    def _notify(self, notes: Iterable[Note]) -> None:
        """Deliver notes (outside the lock) to every started listener."""
        notes = list(notes)
        if not notes:
            return
        with self._lock:
            listeners = list(self._listeners)
        gone = []
        for listener in listeners:
            for kind, payload in notes:
                if not listener.deliver(kind, payload):
                    gone.append(listener)
                    break
        for listener in gone:
            self._remove_listener(listener)

    def listener(self, callback: WakeCallback) -> MemoryListener:
        """A listener pushing ``("job", queue)`` on insert/requeue/rescue/redrive and
        ``("control", {"op": "pause" | "cancel", ...})`` on pause/resume and cancel requests."""
        return MemoryListener(self, callback)

    # ---- enqueue -----------------------------------------------------------------------------
    def insert_many(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[int]:
        """Insert jobs atomically; returns ids in input order. A job whose ``unique_key`` is held
        by a live job is not inserted and that job's id is returned instead. (``conn`` is never
        given: :class:`pgqueue.App` refuses it for this driver.)"""
        if not jobs:
            return []
        if any(j.depends_on or j.workflow_id for j in jobs):
            return self._insert_flow(jobs)
        now = time.time()
        ids: list[int] = []
        queues: dict[str, None] = {}
        with self._lock:
            for j in jobs:
                if j.unique_key is not None and j.unique_key in self._unique:
                    ids.append(self._unique[j.unique_key])
                    continue
                run_at = _ts(j.run_at) if j.run_at is not None else now + (j.delay_s or 0.0)
                rec = _Rec(id=self._next_id, queue=j.queue, task=j.task, args_json=j.args_json,
                           priority=j.priority, max_attempts=j.max_attempts, run_at=run_at,
                           created_at=now, unique_key=j.unique_key, timeout_s=j.timeout_s,
                           meta_json=j.meta_json)
                self._next_id += 1
                self._add_live(rec, now)
                ids.append(rec.id)
                queues[j.queue] = None
        self._notify(("job", q) for q in queues)
        return ids

    insert_many_async = async_twin(insert_many)

    # ---- workflows (the semantics of the postgres driver's, see docs/workflows.md) ----------
    def _outcome(self, job_id: int) -> tuple[str, str | None, str | None] | None:
        """(state, result JSON, error) of a job that finished for good, or None."""
        rec = self._failed.get(job_id)
        if rec is not None:
            return "failed", None, rec.reason
        for f in reversed(self._history):
            if f.id == job_id:
                error = f.errors[-1].error if f.errors else None
                return f.state, None if f.result is None else json.dumps(f.result), error
        return None

    def _insert_flow(self, jobs: Sequence[NewJob]) -> list[int]:
        """Insert a batch with dependencies (or a workflow): all or nothing."""
        now = time.time()
        with self._lock:
            ext = {d.job_id for j in jobs for d in j.depends_on if d.job_id is not None}
            known: dict[int, tuple[str, str | None, str | None] | None] = {}
            for i in sorted(ext):
                known[i] = None if i in self._jobs else self._outcome(i)
                if i not in self._jobs and known[i] is None:
                    raise DependencyError(
                        f"depends_on: no job {i} (not live, not in the history nor the "
                        "archive); pass the id of an existing job")
            for j in jobs:
                for d in j.depends_on:
                    found = known.get(d.job_id) if d.job_id is not None else None
                    if (found is not None and found[0] != "succeeded"
                            and j.on_dependency_failure != "run"):
                        raise DependencyError(
                            f"depends_on: job {d.job_id} already {found[0]}; a job cannot wait "
                            f"for it (on_dependency_failure={j.on_dependency_failure!r}). "
                            "Re-drive it first, or enqueue with on_dependency_failure='run'")
            ids = list(range(self._next_id, self._next_id + len(jobs)))
            self._next_id += len(jobs)
            queues: dict[str, None] = {}
            settled: list[_Rec] = []
            for i, j in zip(ids, jobs, strict=True):
                run_at = _ts(j.run_at) if j.run_at is not None else now + (j.delay_s or 0.0)
                rec = _Rec(id=i, queue=j.queue, task=j.task, args_json=j.args_json,
                           priority=j.priority, max_attempts=j.max_attempts, run_at=run_at,
                           created_at=now, unique_key=None, timeout_s=j.timeout_s,
                           meta_json=j.meta_json)
                if j.workflow_id is not None:
                    self._flows.setdefault(j.workflow_id, []).append(i)
                if not j.depends_on:
                    self._add_live(rec, now)
                    queues[j.queue] = None
                    continue
                rec.state = JobState.BLOCKED
                self._jobs[i] = rec
                for d in j.depends_on:
                    dep = d.job_id if d.job_id is not None else ids[d.index or 0]
                    found = known.get(dep) if d.job_id is not None else None
                    edge = _Edge(i, dep, j.on_dependency_failure, d.arg, d.pos, False,
                                 found[0] if found else None, found[1] if found else None)
                    self._add_edge(edge)
                    rec.deps_left += edge.outcome is None
                if not rec.deps_left:
                    settled.append(rec)
            for rec in settled:
                self._unblock(rec, now)
                queues[rec.queue] = None
        self._notify(("job", q) for q in queues)
        return ids

    def _add_edge(self, edge: _Edge) -> None:
        self._deps.setdefault(edge.dep_id, []).append(edge)
        self._edges_of.setdefault(edge.job_id, []).append(edge)

    def _unblock(self, rec: _Rec, now: float) -> None:
        """A blocked job whose dependencies all finished: waiting, with their results in its
        arguments and the awaited jobs' outcomes in ``meta.awaited``."""
        edges = self._edges_of.get(rec.id, [])
        args = json.loads(rec.args_json)
        lists: dict[str, list[tuple[int, Any]]] = {}
        for e in edges:
            if e.awaited or e.arg is None:
                continue
            value = None if e.result_json is None else json.loads(e.result_json)
            if e.pos is None:
                args[e.arg] = value
            else:
                lists.setdefault(e.arg, []).append((e.pos, value))
        for arg, items in lists.items():
            args[arg] = [v for _, v in sorted(items, key=lambda t: t[0])]
        rec.args_json = json.dumps(args)
        awaited = {str(e.dep_id): {"state": e.outcome, "result": None if e.result_json is None
                                   else json.loads(e.result_json)}
                   for e in edges if e.awaited}
        if awaited:
            meta = json.loads(rec.meta_json)
            meta["awaited"] = awaited
            rec.meta_json = json.dumps(meta)
        rec.run_at = max(rec.run_at, now)
        self._add_live(rec, now)

    def _release(self, finished: Iterable[tuple[int, str, str | None]], now: float) -> set[str]:
        """Release the dependents of jobs that finished for good (with the lock held), down the
        graph; returns the queues that got ready jobs."""
        work = deque(finished)
        queues: set[str] = set()
        while work:
            dep_id, state, result_json = work.popleft()
            for e in self._deps.get(dep_id, []):
                if e.outcome is not None:
                    continue
                e.outcome, e.result_json = state, result_json
                rec = self._jobs.get(e.job_id)
                if rec is None or rec.state != JobState.BLOCKED:
                    continue
                if state == "succeeded" or e.policy == "run":
                    rec.deps_left -= 1
                    if rec.deps_left <= 0:
                        self._unblock(rec, now)
                        queues.add(rec.queue)
                elif e.policy == "cancel":
                    self._remove_live(rec)
                    rec.errors.append(AttemptError(rec.attempt, DEP_CANCEL_REASON, None,
                                                   _dt(now)))
                    self._to_history(rec, "cancelled", None, now)
                    work.append((rec.id, "cancelled", None))
                else:
                    self._archive(rec, AttemptError(rec.attempt, DEP_FAIL_REASON, None,
                                                    _dt(now)), DEP_FAIL_REASON, now)
                    work.append((rec.id, "failed", None))
        self._finished.notify_all()
        return queues

    async def park(self, job_id: int, *, worker_id: str, attempt: int | None,
                   awaited: Sequence[int]) -> tuple[bool, list[int]]:
        """Park a running job until ``awaited`` finish (see the driver seam)."""
        now = time.time()
        with self._lock:
            known = {i: None if i in self._jobs else self._outcome(i) for i in awaited}
            missing = [i for i in awaited if i not in self._jobs and known[i] is None]
            if missing:
                return False, missing
            rec = self._jobs.get(job_id)
            if not _held(rec, worker_id, attempt):
                return False, []
            assert rec is not None
            q = self._queue(rec.queue)
            q.running.discard(rec.id)
            q.live.discard(rec.id)
            old = [e for e in self._edges_of.get(job_id, []) if e.awaited]
            for e in old:
                self._edges_of[job_id].remove(e)
                self._deps[e.dep_id].remove(e)
            meta = json.loads(rec.meta_json)
            meta.pop("awaited", None)
            rec.meta_json = json.dumps(meta)
            rec.state = JobState.BLOCKED
            rec.attempt -= 1
            rec.worker_id = None
            rec.lease_expires = None
            rec.deps_left = 0
            for i in awaited:
                found = known[i]
                self._add_edge(_Edge(job_id, i, "run", None, None, True,
                                     found[0] if found else None, found[1] if found else None))
                rec.deps_left += found is None
            ready = rec.deps_left == 0
            if ready:
                self._unblock(rec, now)
        if ready:
            self._notify([("job", rec.queue)])
        return True, []

    def wait_result(self, job_id: int, timeout_s: float | None) -> FinalOutcome | None:
        """Wait until the job has finished for good (a condition signalled by every final
        outcome); its outcome, or None at the timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            while True:
                found = self._outcome(job_id)
                if found is not None:
                    state, result_json, error = found
                    return FinalOutcome(state, None if result_json is None
                                        else json.loads(result_json), error)
                if job_id not in self._jobs:
                    raise JobNotFoundError(f"no job {job_id} (live, in history or failed)")
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                self._finished.wait(wait)

    async def wait_result_async(self, job_id: int,
                                timeout_s: float | None) -> FinalOutcome | None:
        """Async twin of :meth:`wait_result` (waits in a thread: the worker may be on this
        loop)."""
        return await asyncio.to_thread(self.wait_result, job_id, timeout_s)

    def workflow(self, workflow_id: str) -> list[WorkflowJob]:
        """Every job of a workflow with its state, in workflow order."""
        out = []
        with self._lock:
            for i in self._flows.get(workflow_id, []):
                rec = self._jobs.get(i) or self._failed.get(i)
                if rec is not None:
                    out.append(WorkflowJob(
                        i, rec.task, str(rec.state),
                        None if rec.started_at is None else _dt(rec.started_at),
                        None if rec.failed_at is None else _dt(rec.failed_at),
                        rec.reason or rec.last_error))
                    continue
                f = next((h for h in reversed(self._history) if h.id == i), None)
                if f is not None:
                    out.append(WorkflowJob(i, f.task, f.state, f.started_at, f.finished_at,
                                           f.errors[-1].error if f.errors else None))
        return out

    workflow_async = async_twin(workflow)

    def get_step(self, job_id: int, name: str, *, conn: Any = None) -> tuple[str, Any] | None:
        """A durable step's checkpoint (function name, result), or None."""
        if conn is not None:
            raise CapabilityError("the memory driver cannot checkpoint a step in your "
                                  "transaction; drop conn= or use the postgres driver")
        with self._lock:
            found = self._steps.get((job_id, name))
        return None if found is None else (found[0], json.loads(found[1]))

    def put_step(self, job_id: int, name: str, fn: str, result_json: str, *,
                 conn: Any = None) -> None:
        """Write a durable step's checkpoint (the first one written stays)."""
        if conn is not None:
            raise CapabilityError("the memory driver cannot checkpoint a step in your "
                                  "transaction; drop conn= or use the postgres driver")
        with self._lock:
            self._steps.setdefault((job_id, name), (fn, result_json))

    def advance_waiting(self, by_s: float | None, queues: Sequence[str],
                        kind: str = "all") -> int:
        """Time travel for tests (:mod:`pgqueue.testing`): bring the future waiting jobs of
        ``queues`` forward by ``by_s`` seconds (None: make them all due now), never earlier than
        now. ``kind``: ``"scheduled"`` (never attempted nor snoozed), ``"retries"`` (waiting
        after a failed attempt or a snooze) or ``"all"``. Returns how many moved."""
        now = time.time()
        moved: dict[str, None] = {}
        count = 0
        with self._lock:
            for name in dict.fromkeys(queues):
                q = self._queues.get(name)
                if q is None:
                    continue
                for job_id in sorted(q.scheduled):
                    rec = self._jobs.get(job_id)
                    if rec is None or rec.state != "waiting" or rec.run_at <= now:
                        continue
                    retry = rec.attempt > 0 or rec.snoozes > 0
                    if kind != "all" and (kind == "retries") != retry:
                        continue
                    later = rec.run_at - by_s if by_s is not None else now
                    rec.run_at = max(now, later)
                    q.scheduled.discard(job_id)
                    self._push_waiting(rec, now)  # the old heap entry goes stale (seq)
                    count += 1
                    moved[name] = None
        self._notify(("job", q) for q in moved)
        return count

    advance_waiting_async = async_twin(advance_waiting)

    # ---- worker ------------------------------------------------------------------------------
    async def claim(self, queues: Sequence[str], limit: int, *, worker_id: str,
                    lease_s: float) -> list[Job]:
        """Claim up to ``limit`` ready jobs of the unpaused ``queues`` in
        ``(priority, run_at, id)`` order across all of them."""
        now, mono = time.time(), time.monotonic()
        out: list[Job] = []
        with self._lock:
            qs = [self._queues[n] for n in dict.fromkeys(queues)
                  if n in self._queues and n not in self._paused]
            for q in qs:
                self._promote(q, now)
            while len(out) < limit:
                best: tuple[tuple[int, float, int, int], _Queue] | None = None
                for q in qs:
                    top = self._top_ready(q)
                    if top is not None and (best is None or top < best[0]):
                        best = (top, q)
                if best is None:
                    break
                heapq.heappop(best[1].ready)
                rec = self._jobs[best[0][2]]
                rec.state = "running"
                rec.attempt += 1
                rec.worker_id = worker_id
                rec.started_at = now
                rec.lease_expires = mono + lease_s
                best[1].running.add(rec.id)
                out.append(self._job(rec))
        return out

    async def finish_many(self, items: Sequence[Finish], *, worker_id: str) -> list[int]:
        """Move running jobs of ``worker_id`` to history; returns the ids that were moved."""
        now = time.time()
        done: list[int] = []
        with self._lock:
            for item in items:
                rec = self._jobs.get(item.job_id)
                if not _held(rec, worker_id, item.attempt):
                    continue
                assert rec is not None
                self._remove_live(rec)
                self._to_history(rec, item.state, item.result_json, now)
                done.append(rec.id)
            queues = self._release(((i.job_id, i.state, i.result_json) for i in items
                                    if i.job_id in set(done)), now)
        self._notify(("job", q) for q in queues)
        return done

    async def requeue_many(self, items: Sequence[Requeue], *, worker_id: str) -> list[int]:
        """Put running jobs of ``worker_id`` back to waiting after their delay."""
        now = time.time()
        done: list[int] = []
        queues: dict[str, None] = {}
        with self._lock:
            for item in items:
                rec = self._jobs.get(item.job_id)
                if not _held(rec, worker_id, item.attempt):
                    continue
                assert rec is not None
                self._requeue(rec, item.delay_s, item.count_attempt, item.error, now,
                              item.snooze, item.max_attempts)
                done.append(rec.id)
                queues[rec.queue] = None
        self._notify(("job", q) for q in queues)
        return done

    async def archive(self, job_id: int, *, worker_id: str, error: AttemptError,
                      reason: str, attempt: int | None = None) -> bool:
        """Move a running job of ``worker_id`` to the failed archive with ``error`` appended."""
        now = time.time()
        with self._lock:
            rec = self._jobs.get(job_id)
            if not _held(rec, worker_id, attempt):
                return False
            assert rec is not None
            self._archive(rec, error, reason, now)
            queues = self._release([(job_id, "failed", None)], now)
        self._notify(("job", q) for q in queues)
        return True

    async def next_run_at(self, queues: Sequence[str], *,
                          worker_id: str | None = None) -> dt.datetime | None:
        """When the next waiting job of the unpaused ``queues`` is due. With ready jobs this is
        a time not after now (the ``run_at`` of the next job in claim order); None when no job
        waits. Always exact (``worker_id`` is not used)."""
        best: float | None = None
        with self._lock:
            for name in dict.fromkeys(queues):
                q = self._queues.get(name)
                if q is None or name in self._paused:
                    continue
                ready = self._top_ready(q)
                delayed = self._top_delayed(q)
                for value in (ready[1] if ready else None, delayed[0] if delayed else None):
                    if value is not None and (best is None or value < best):
                        best = value
        return None if best is None else _dt(best)

    async def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def register_worker(self, *, worker_id: str, queues: Sequence[str],
                              concurrency: int) -> None:
        with self._lock:
            self._workers[worker_id] = _WorkerInfo(list(queues), concurrency, time.monotonic())

    async def unregister_worker(self, *, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)

    def _running_recs(self) -> list[_Rec]:
        return [self._jobs[i] for q in self._queues.values() for i in q.running]

    async def heartbeat(self, *, worker_id: str, lease_s: float,
                        job_ids: Sequence[int] | None = None) -> None:
        """Extend the leases of the listed jobs that ``worker_id`` runs (every job it runs when
        ``job_ids`` is None), and its registry heartbeat. A job the worker does not know it
        holds is not extended, so it expires and is rescued."""
        mono = time.monotonic()
        with self._lock:
            info = self._workers.get(worker_id)
            if info is not None:
                info.heartbeat = mono
            if job_ids is None:
                recs = [r for r in self._running_recs() if r.worker_id == worker_id]
            else:
                recs = [r for r in (self._jobs.get(i) for i in job_ids)
                        if r is not None and r.state == "running" and r.worker_id == worker_id]
            for rec in recs:
                rec.lease_expires = mono + lease_s

    async def rescue_expired(self, *, limit: int = 1000, reason: str = RESCUE_REASON,
                             quarantine_after: int = QUARANTINE_AFTER,
                             quarantine_reason: str = QUARANTINE_REASON,
                             spread_s: float = RESCUE_SPREAD_S) -> tuple[list[int], list[int]]:
        """Rescue the running jobs whose lease expired by the rule of :mod:`pgqueue.job` (see
        :meth:`pgqueue.drivers.base.Driver.rescue_expired`); returns (requeued ids, quarantined
        ids). A worker is alive when its registry heartbeat is newer than the job's lease."""
        now, mono = time.time(), time.monotonic()
        after, spread = max(1, int(quarantine_after)), max(0.0, float(spread_s))
        rescued: list[int] = []
        failed: list[int] = []
        queues: dict[str, None] = {}
        with self._lock:
            running = self._running_recs()
            expired = sorted((r for r in running
                              if r.lease_expires is not None and r.lease_expires < mono),
                             key=lambda r: (r.lease_expires or 0.0, r.id))[:limit]
            # the verdicts first, on the state before this rescue changes anything
            held: dict[str | None, list[_Rec]] = {}
            for r in running:
                held.setdefault(r.worker_id, []).append(r)
            verdicts: list[tuple[_Rec, bool, bool]] = []
            for rec in expired:
                info = self._workers.get(rec.worker_id) if rec.worker_id is not None else None
                alive = (info is not None and rec.lease_expires is not None
                         and info.heartbeat >= rec.lease_expires)
                died = rescue_counts(alive)
                others = [o.rescues for o in held.get(rec.worker_id, []) if o is not rec]
                quarantine = died and rescue_quarantines(
                    rec.rescues, max(others) if others else None, after)
                verdicts.append((rec, died, quarantine))
            ranks: dict[int, int] = {}
            by_worker: dict[str | None, list[_Rec]] = {}
            for rec, died, _q in verdicts:
                if died:
                    by_worker.setdefault(rec.worker_id, []).append(rec)
            for group in by_worker.values():
                for i, rec in enumerate(sorted(group, key=lambda r: (r.rescues, r.id))):
                    ranks[rec.id] = i
            for rec, died, quarantine in verdicts:
                error = AttemptError(rec.attempt, reason, None, _dt(now), rec.worker_id)
                if quarantine:
                    self._archive(rec, error, quarantine_reason_for(rec.rescues + 1,
                                                                    quarantine_reason), now)
                    failed.append(rec.id)
                    queues.update(dict.fromkeys(
                        self._release([(rec.id, "failed", None)], now)))
                else:
                    rec.rescues += int(died)
                    self._requeue(rec, ranks.get(rec.id, 0) * spread, True, error, now)
                    rescued.append(rec.id)
                    queues[rec.queue] = None
        self._notify(("job", q) for q in queues)
        return rescued, failed

    async def cancel_requested(self, *, worker_id: str,
                               job_ids: Sequence[int] | None = None) -> list[int]:
        among = None if job_ids is None else set(job_ids)
        with self._lock:
            return sorted(r.id for r in self._running_recs()
                          if r.worker_id == worker_id and r.cancel_requested
                          and (among is None or r.id in among))

    async def prune_workers(self, *, older_than_s: float) -> None:
        cutoff = time.monotonic() - older_than_s
        with self._lock:
            for wid in [w for w, info in self._workers.items() if info.heartbeat < cutoff]:
                del self._workers[wid]

    def workers(self) -> dict[str, dict[str, Any]]:
        """The registered workers: ``{id: {"queues", "concurrency", "heartbeat_age_s"}}``."""
        mono = time.monotonic()
        with self._lock:
            return {w: {"queues": list(i.queues), "concurrency": i.concurrency,
                        "heartbeat_age_s": mono - i.heartbeat}
                    for w, i in self._workers.items()}

    # ---- queue control -----------------------------------------------------------------------
    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue; listeners get ``("control", {"op": "pause", ...})``."""
        with self._lock:
            self._known_queues.add(queue)
            if paused:
                self._paused.add(queue)
            else:
                self._paused.discard(queue)
        self._notify([("control", {"op": "pause", "queue": queue, "paused": paused})])

    set_paused_async = async_twin(set_paused)

    def paused_queues(self) -> set[str]:
        with self._lock:
            return set(self._paused)

    paused_queues_async = async_twin(paused_queues)

    def forget_queue(self, queue: str) -> bool:
        """Drop the queue's pause state and listing; jobs stay. True if either was stored."""
        with self._lock:
            known = queue in self._known_queues or queue in self._paused
            self._known_queues.discard(queue)
            was_paused = queue in self._paused
            self._paused.discard(queue)
        if was_paused:
            self._notify([("control", {"op": "pause", "queue": queue, "paused": False})])
        return known

    forget_queue_async = async_twin(forget_queue)

    def count(self, queue: str) -> int:
        """Waiting (including scheduled) + running jobs of ``queue``."""
        with self._lock:
            q = self._queues.get(queue)
            return len(q.live) if q is not None else 0

    count_async = async_twin(count)

    def sizes(self, queue: str) -> dict[str, int]:
        """``waiting`` (ready now), ``scheduled`` (run_at ahead), ``running`` and ``failed``."""
        now = time.time()
        with self._lock:
            failed = sum(1 for r in self._failed.values() if r.queue == queue)
            q = self._queues.get(queue)
            if q is None:
                return {"waiting": 0, "scheduled": 0, "running": 0, "failed": failed}
            self._promote(q, now)
            scheduled = len(q.scheduled)
            running = len(q.running)
            return {"waiting": len(q.live) - running - scheduled, "scheduled": scheduled,
                    "running": running, "failed": failed}

    sizes_async = async_twin(sizes)

    def clear(self, queue: str) -> int:
        """Delete the waiting and scheduled jobs of ``queue``; running jobs finish normally."""
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                return 0
            waiting = [self._jobs[i] for i in q.live - q.running]
            for rec in waiting:
                self._remove_live(rec)
            q.ready.clear()
            q.delayed.clear()
            q.scheduled.clear()
            return len(waiting)

    clear_async = async_twin(clear)

    def pop(self, queue: str) -> Job | None:
        """Remove the next ready job of ``queue`` (paused or not) and return it: the caller owns
        it now. It does not go to history."""
        now = time.time()
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                return None
            self._promote(q, now)
            top = self._top_ready(q)
            if top is None:
                return None
            heapq.heappop(q.ready)
            rec = self._jobs[top[2]]
            self._remove_live(rec)
            return self._job(rec)

    pop_async = async_twin(pop)

    def cancel(self, job_id: int) -> bool:
        """Cancel a waiting job (to history as ``cancelled``) or flag a running one (its worker
        is told); False when no live job has that id."""
        now = time.time()
        note: Note | None = None
        notes: list[Note] = []
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None:
                return False
            if rec.state in ("waiting", JobState.BLOCKED):
                self._remove_live(rec)
                self._to_history(rec, "cancelled", None, now)
                for q in self._release([(job_id, "cancelled", None)], now):
                    notes.append(("job", q))
            else:
                rec.cancel_requested = True
                note = ("control", {"op": "cancel", "id": rec.id, "worker": rec.worker_id})
        if note is not None:
            notes.append(note)
        self._notify(notes)
        return True

    cancel_async = async_twin(cancel)

    def get_job(self, job_id: int) -> Job | None:
        """A live (waiting or running) job, or None."""
        with self._lock:
            rec = self._jobs.get(job_id)
            return self._job(rec) if rec is not None else None

    get_job_async = async_twin(get_job)

    def list_failed(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]:
        """Archived jobs, newest failure first."""
        with self._lock:
            recs = [r for r in self._failed.values() if queue is None or r.queue == queue]
            recs.sort(key=lambda r: (r.failed_at or 0.0, r.id), reverse=True)
            return [self._failed_job(r) for r in recs[:max(0, limit)]]

    list_failed_async = async_twin(list_failed)

    def get_failed(self, job_id: int) -> FailedJob | None:
        with self._lock:
            rec = self._failed.get(job_id)
            return self._failed_job(rec) if rec is not None else None

    get_failed_async = async_twin(get_failed)

    def get_finished(self, job_id: int) -> FinishedJob | None:
        with self._lock:
            return next((f for f in self._history if f.id == job_id), None)

    get_finished_async = async_twin(get_finished)

    def redrive(self, ids: Sequence[int] | None = None, queue: str | None = None) -> list[int]:
        """Put archived jobs (``ids``, or all of ``queue``, or all) back to waiting with their
        id, ``attempt`` 0 and their errors kept. All or nothing: raises
        :class:`pgqueue.JobError` if a live job already holds one's ``unique_key``."""
        now = time.time()
        with self._lock:
            wanted = self._failed.keys() if ids is None else [i for i in ids if i in self._failed]
            recs = [self._failed[i] for i in sorted(set(wanted))
                    if queue is None or self._failed[i].queue == queue]
            keys = [r.unique_key for r in recs if r.unique_key is not None]
            if any(k in self._unique for k in keys) or len(keys) != len(set(keys)):
                raise JobError("cannot re-drive: a live job already holds the same unique_key; "
                               "cancel or finish it first")
            for rec in recs:
                del self._failed[rec.id]
                rec.attempt = 0
                rec.snoozes = 0
                rec.rescues = 0
                rec.run_at = now
                rec.worker_id = None
                rec.started_at = None
                rec.lease_expires = None
                rec.cancel_requested = False
                rec.reason = None
                rec.failed_at = None
                rec.last_error = rec.errors[-1].error if rec.errors else None
                self._add_live(rec, now)
            queues = {r.queue: None for r in recs}
        self._notify(("job", q) for q in queues)
        return [r.id for r in recs]

    redrive_async = async_twin(redrive)

    def _failed_matching(self, queue: str | None, before: dt.datetime | None,
                         ids: Sequence[int] | None, task: str | None) -> list[int]:
        """Ids of the archived jobs matching every given filter (call with the lock held)."""
        cutoff = None if before is None else _ts(before)
        wanted = None if ids is None else set(ids)
        return [i for i, r in self._failed.items()
                if (wanted is None or i in wanted) and (queue is None or r.queue == queue)
                and (task is None or r.task == task)
                and (cutoff is None or (r.failed_at or 0.0) < cutoff)]

    def purge_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        """Delete archived jobs (``ids``, of ``queue``, of ``task``, failed before ``before``:
        every given filter applies); returns how many."""
        with self._lock:
            doomed = self._failed_matching(queue, before, ids, task)
            for i in doomed:
                del self._failed[i]
            return len(doomed)

    purge_failed_async = async_twin(purge_failed)

    def count_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        """How many archived jobs match the filters (as for :meth:`purge_failed`)."""
        with self._lock:
            return len(self._failed_matching(queue, before, ids, task))

    count_failed_async = async_twin(count_failed)

    def history(self, queue: str | None = None, limit: int = 100) -> list[FinishedJob]:
        """Finished jobs (succeeded or cancelled), newest first; at most the last
        ``history_limit`` are kept."""
        with self._lock:
            out: list[FinishedJob] = []
            for h in reversed(self._history):
                if len(out) >= limit:
                    break
                if queue is None or h.queue == queue:
                    out.append(h)
            return out

    history_async = async_twin(history)

    def stats(self) -> list[QueueStats]:
        """Per-queue counts, as the postgres ``queue_stats`` view gives them: queues with live
        or failed jobs, queues ever paused/resumed, and queues with history in the last hour."""
        now = time.time()
        hour_ago = now - 3600
        with self._lock:
            recent = [h for h in self._history if _ts(h.finished_at) > hour_ago]
            names = ({n for n, q in self._queues.items() if q.live} | self._known_queues
                     | {r.queue for r in self._failed.values()} | {h.queue for h in recent})
            out = []
            for name in sorted(names):
                q = self._queues.get(name)
                if q is not None:
                    self._promote(q, now)
                live = [self._jobs[i] for i in q.live] if q is not None else []
                ready = [r for r in live if r.state == "waiting" and r.run_at <= now]
                failed = [r for r in self._failed.values() if r.queue == name]
                done = [h for h in recent if h.queue == name]
                out.append(QueueStats(
                    queue=name, paused=name in self._paused, waiting=len(ready),
                    scheduled=sum(1 for r in live if r.state == "waiting" and r.run_at > now),
                    running=sum(1 for r in live if r.state == "running"),
                    failed=len(failed), finished_last_hour=len(done),
                    failed_last_hour=sum(1 for r in failed if (r.failed_at or 0.0) > hour_ago),
                    oldest_wait_s=(now - min(r.run_at for r in ready)) if ready else None,
                    mean_run_time_s=mean_run_time(done)))
            return out

    stats_async = async_twin(stats)


def _held(rec: Any, worker_id: str, attempt: int | None) -> bool:
    """Whether ``rec`` is running under ``worker_id`` (at the claimed ``attempt``, if given)."""
    return (rec is not None and rec.state == "running" and rec.worker_id == worker_id
            and (attempt is None or rec.attempt == attempt))
