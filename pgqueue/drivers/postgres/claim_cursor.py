"""Where a worker's next unlimited claim starts reading ``jobs_claim_idx``.

**Why.** A claimed job leaves its entry in ``jobs_claim_idx``: the claim's UPDATE writes a new
row version that the partial index no longer holds, but the old version's entry stays until
vacuum removes it. Meanwhile the first scan that finds the old version dead to every transaction
marks the entry, and later scans step over it without reading the table. Neither can happen
while a snapshot older than the claim stays open: a long report, a session left idle in a
transaction, a replica with ``hot_standby_feedback``. Every claim that reads the index from its
head then walks the entries of every job claimed since that snapshot, reading the table for each.
After five cycles of 50,000 jobs under one held snapshot a claim walked 400,000 such entries
and the drain had fallen to 0.15 of its rate (``python -m benchmarks.held_snapshot``,
``docs/performance.md``, "Held snapshot").

**What.** Each worker remembers, per queue, the key ``(priority, run_at, id)`` of the last job
its claims took, and its next claim reads the index after that key: the entries of the jobs it
already claimed lie behind it. A claim reads from the head instead when:

- it is the worker's first claim;
- the worker's previous claim read after a key and came back short (fewer jobs than it asked
  for), and reading from the head is cheap (not costly, as below): no ready job was left after
  the key, so any that is ready sorts before it, and this claim finds it. After a short claim
  the producer asks ``next_run_at``, which sees such a job and makes it claim again at once: a
  claim after a key never leaves a ready job unclaimed for longer than one more round trip (plus
  any lead of the database's clock over the worker's, as for every ``run_at`` the idle worker
  waits for). One that came back empty does not wait for that: the driver's claim reads from the
  head at once, in the same call, so that an empty claim still means no ready job was left
  (``TestQueue.drain`` stops on it);
- the last claim from the head is older than the sweep interval: :data:`SWEEP_FACTOR` times
  what that claim took, within :data:`SWEEP_MIN_S` and :data:`SWEEP_MAX_S`. Reading from the
  head costs about as much as reading after a key while nothing holds vacuum back (the interval
  is then the minimum); when it walks dead entries, the interval grows so that it takes at most
  about 1/:data:`SWEEP_FACTOR` of the time.

**A worker at low load while reading from the head is costly.** Its claims come back short
(one job per wake-up), so the rule above would send every claim to the head, and the idle
worker's ``next_run_at`` read from the head too: under a held snapshot with 200,000 claimed jobs
behind it, pickup took 100 ms instead of 2 (``python -m benchmarks.held_snapshot``, its pickup
phase). So once the last claim from the head took longer than :data:`COSTLY_HEAD_S`, a short
claim after the key does not send the next one to the head, a claim from the head that found
nothing in a queue keeps that queue's key, and ``next_run_at`` reads after the worker's keys too
(:meth:`ClaimCursors.next_run_at_from`), bounded by the next sweep: the worker wakes for it,
and its claim reads from the head. A job that sorts before the key then waits for that sweep
(at most :data:`SWEEP_MAX_S`) even on a worker with free slots, unless a claim after the key
comes back empty (it reads from the head at once, as above).

**The trade-off** (README, "priority"; docs/performance.md, "Held snapshot"). While a
worker's claims come back full, it takes jobs in key order after its key; a job that sorts
before the key and becomes ready meanwhile waits for the next claim from the head, at most the
sweep interval (at least 50 ms, more on a loaded worker, as the interval counts the whole
claim from the head, pool checkout and event-loop delays included; at most 1 s, while a held
snapshot makes reading from the head costly). Such a job: a higher priority (a lower number)
enqueued during a saturated drain, an enqueue whose transaction began before the jobs already
claimed (its ``run_at`` is its transaction's start), a job given a ``run_at`` in the past, a
job left waiting by a claim of another worker that rolled back. (Retried, rescued and released
jobs get a ``run_at`` of now or later, behind the key.) A worker with free slots does not make
it wait while reading from the head is cheap: its claim comes back short, the next one reads
from the head, and an empty claim after the key reads from the head at once.

Pure bookkeeping, no I/O: the PostgreSQL driver asks :meth:`ClaimCursors.start` which keys to
pass to the claims (``Statements.claim_one``/``claim_many``), reports what the claim took with
:meth:`ClaimCursors.done`, and asks :meth:`ClaimCursors.next_run_at_from` which keys to pass to
``next_run_at``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["COSTLY_HEAD_S", "HEAD", "SWEEP_FACTOR", "SWEEP_MAX_S", "SWEEP_MIN_S",
           "ClaimCursors", "ClaimStart", "Key"]

#: a key of ``jobs_claim_idx`` after its queue: (priority, run_at, id)
Key = tuple[int, dt.datetime, int]

#: A key before every job (priorities are 0..1000): reading after it reads from the head.
HEAD: Key = (-1, dt.datetime(1970, 1, 1, tzinfo=dt.UTC), 0)

#: the sweep interval is this many times the duration of the last claim from the head...
SWEEP_FACTOR = 20.0
#: ...but at least this (seconds): while claims are cheap, a job that sorts before the key
#: waits at most about this long
SWEEP_MIN_S = 0.05
#: ...and at most this (seconds), however costly reading from the head has become
SWEEP_MAX_S = 1.0
#: A claim from the head that took longer than this (seconds; a cheap one takes about a
#: millisecond) walked dead entries: until the next one, short claims and ``next_run_at`` read
#: after the worker's keys too. A worker's first claims do not count (until it has claimed
#: after a key once): they may include opening the pool's connections.
COSTLY_HEAD_S = 0.01


class _Claimed(Protocol):
    """What the bookkeeping reads of a claimed job."""

    @property
    def id(self) -> int: ...
    @property
    def queue(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def run_at(self) -> dt.datetime | None: ...


@dataclass(frozen=True, slots=True)
class ClaimStart:
    """One claim's starting points: ``after[i]`` is where ``queues[i]`` is read from."""

    worker_id: str
    queues: tuple[str, ...]
    after: tuple[Key, ...]
    from_head: bool
    #: the clock's reading when the claim was planned
    at: float


@dataclass(slots=True)
class _Cursor:
    #: per queue, the key of the last job claimed since the last claim from the head
    last: dict[str, Key] = field(default_factory=dict)
    #: the clock's reading at the last claim from the head, what it took, and the interval
    #: it set
    swept_at: float = 0.0
    took: float = 0.0
    interval: float = SWEEP_MIN_S
    #: whether the worker has claimed after a key yet
    claimed_after_key: bool = False
    #: the previous claim read after a key and came back short: the next reads from the head
    head_next: bool = True

    @property
    def costly(self) -> bool:
        """Whether the last claim from the head walked dead entries (see COSTLY_HEAD_S)."""
        return self.claimed_after_key and self.took > COSTLY_HEAD_S


class ClaimCursors:
    """Every worker's claim cursor, by worker id (one driver serves every worker of an App)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cursors: dict[str, _Cursor] = {}

    def start(self, worker_id: str, queues: Sequence[str], *,
              from_head: bool = False) -> ClaimStart:
        """Where the next claim of ``queues`` by ``worker_id`` reads from (``from_head``: from
        the head whatever the bookkeeping says)."""
        now = self._clock()
        c = self._cursors.get(worker_id)
        if from_head or c is None or c.head_next or now - c.swept_at >= c.interval:
            return ClaimStart(worker_id, tuple(queues), tuple(HEAD for _ in queues), True, now)
        return ClaimStart(worker_id, tuple(queues),
                          tuple(c.last.get(q, HEAD) for q in queues), False, now)

    def done(self, start: ClaimStart, jobs: Sequence[_Claimed], limit: int) -> None:
        """Record what the claim planned by ``start`` took (it asked for ``limit`` jobs)."""
        now = self._clock()
        c = self._cursors.setdefault(start.worker_id, _Cursor())
        last: dict[str, Key] = {}
        for j in jobs:
            if j.run_at is None:  # not from jobs_claim_idx (claimed rows always have one)
                continue
            k = (j.priority, j.run_at, j.id)
            if j.queue not in last or k > last[j.queue]:
                last[j.queue] = k
        if start.from_head:
            # a claim from the head starts the walk again: its queues' keys are what it took;
            # a queue it took nothing from keeps its key while the head is costly to read
            c.took = now - start.at
            for q in start.queues:
                if q in last:
                    c.last[q] = last[q]
                elif not c.costly:
                    c.last.pop(q, None)
            c.swept_at = start.at
            c.interval = min(SWEEP_MAX_S, max(SWEEP_MIN_S, SWEEP_FACTOR * c.took))
            c.head_next = False
        else:
            c.last.update(last)
            c.claimed_after_key = True
            c.head_next = len(jobs) < limit and not c.costly

    def next_run_at_from(self, worker_id: str | None,
                         queues: Sequence[str]) -> tuple[tuple[Key, ...], float | None]:
        """Where ``next_run_at`` for ``worker_id`` reads each of ``queues`` from, and in how
        many seconds the answer must wake the worker at the latest (None: no bound).

        From the head (and no bound) unless the worker's last claim from the head was costly
        and the next sweep is not due yet; then after the worker's keys, and the worker is to
        wake when the sweep is due, so that a job sorting before a key waits no longer than it
        would for a claim. ``worker_id`` None: from the head (an exact answer)."""
        c = self._cursors.get(worker_id) if worker_id is not None else None
        head = tuple(HEAD for _ in queues)
        if c is None or not c.costly:
            return head, None
        due_in = c.swept_at + c.interval - self._clock()
        if due_in <= 0:
            return head, None
        return tuple(c.last.get(q, HEAD) for q in queues), due_in

    def forget(self, worker_id: str) -> None:
        """The worker is gone (unregistered)."""
        self._cursors.pop(worker_id, None)
