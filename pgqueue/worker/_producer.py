"""The producer: claims jobs and hands them to the executor (a service).

Who owns what: the producer's task owns claiming and the ``running`` map (job id -> the asyncio
task running it); wake-ups (:meth:`wake`, :meth:`on_notify`) may come from any callback on the
loop. It claims as many jobs as there are free slots, in one statement, and otherwise sleeps
until a wake-up (NOTIFY for its queues, a freed slot, the next known ``run_at``) or the poll
interval, whichever comes first.

Backpressure: outcomes not yet written keep their jobs ``running`` in the database, so while
the completer's backlog is large the producer claims nothing and waits for the backlog to drain;
the database never holds far more claimed jobs than the worker runs (and heartbeats stay small).

Burst mode: the producer's task ends by itself once nothing is ready, running or scheduled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from pgqueue._service import Clock, Service, SystemClock
from pgqueue.drivers.base import Driver
from pgqueue.errors import PgQueueError
from pgqueue.job import Job
from pgqueue.worker._completer import Completer
from pgqueue.worker._executor import Executor

log = logging.getLogger("pgqueue.worker")

__all__ = ["Producer"]

#: seconds before the producer tries again after the database failed a claim or a look-up
UNAVAILABLE_RETRY_S = 2.0


class Producer(Service):
    """Claims jobs of ``queues`` for ``worker_id`` while there are free slots."""

    name = "producer"

    def __init__(self, driver: Driver, executor: Executor, completer: Completer, *,
                 worker_id: str, queues: Sequence[str], concurrency: int,
                 poll_interval: float, lease_s: float, burst: bool = False,
                 clock: Clock | None = None) -> None:
        super().__init__(clock=clock, logger=log)
        self.driver = driver
        self.executor = executor
        self.completer = completer
        self.worker_id = worker_id
        self.queues = list(queues)
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease_s = lease_s
        self.burst = burst
        #: jobs being run: id -> the asyncio task running it
        self.running: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        #: the future :meth:`_wait_wake` waits on (resolved by :meth:`wake`), if it waits
        self._waiter: asyncio.Future[None] | None = None
        #: Unix time of the last claim query that succeeded (None before the first)
        self.last_claim: float | None = None
        # outcomes not yet written keep their jobs claimed: past this backlog, claim no more
        self.max_backlog = 3 * max(concurrency, completer.batch_size)
        # a retry written to the database changes the earliest run_at: look again
        completer.on_requeued = self.wake
        #: whether the last claim took fewer jobs than it asked for (a limit may have held
        #: jobs back: the next written outcomes free slots, so claim again then)
        self._short = False
        completer.on_flushed.append(self._after_flush)

    # ---- wake-ups (callbacks on the loop) ---------------------------------------------------
    def wake(self) -> None:
        """Claim again as soon as possible."""
        self._wake.set()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_notify(self, kind: str, payload: Any) -> None:
        """A listener notification: new jobs, a queue paused or resumed, a cancel request, a
        reconnection (anything may have been missed: look again)."""
        if kind == "job":
            if payload in self.queues:
                self.wake()
        elif kind == "control":
            op = payload.get("op") if isinstance(payload, dict) else None
            if op == "pause" and payload.get("queue") in self.queues:
                self.wake()
            elif op == "cancel" and payload.get("worker") == self.worker_id:
                self.cancel_local(int(payload["id"]))
        elif kind == "reconnected":
            self.wake()

    def _after_flush(self) -> None:
        """Outcomes were written: slots of a limited queue may be free now. Only a producer
        whose last claim came back short looks again (a full one claims when a job ends), and
        only when limits may have held jobs back (without limits, a short claim found every
        ready job, or, on PostgreSQL, left ready ones only behind its worker's last key, which
        ``next_run_at`` then shows as due, so :meth:`_idle` claims again at once, from the
        head -- or, while reading from the head is costly, at the claim cursor's next sweep;
        new jobs bring a NOTIFY or a ``run_at``, and an empty claim here would only keep the
        worker busy when that NOTIFY comes)."""
        if self._short and self.driver.limits_hold(self.queues):
            self.wake()

    def cancel_local(self, job_id: int) -> None:
        """Cancel a job this worker runs: set its cooperative flag and cancel its task."""
        ctx = self.executor.contexts.get(job_id)
        if ctx is not None:
            ctx.cancelled.set()
        task = self.running.get(job_id)
        if task is not None:
            task.cancel()

    def held_ids(self) -> list[int]:
        """Jobs whose leases this worker must keep alive: running, or outcome not written."""
        return [*self.running, *self.completer.held_ids()]

    async def stop(self) -> None:
        self.wake()
        await super().stop()

    # ---- the claim loop -----------------------------------------------------------------------
    async def run(self) -> None:
        driver, completer = self.driver, self.completer
        while not self.stopping:
            if completer.backlog >= self.max_backlog:
                await completer.drain()
            free = self.concurrency - len(self.running)
            if free <= 0:
                await self._wait_for_slot()
                continue
            self._wake.clear()
            try:
                claimed = await driver.claim(self.queues, free, worker_id=self.worker_id,
                                             lease_s=self.lease_s)
            except PgQueueError as exc:  # unavailable, or a transient conflict
                log.warning("cannot claim jobs: %s; retrying", exc,
                            extra={"event": "db_unavailable"})
                await self.sleep(min(self.poll_interval, UNAVAILABLE_RETRY_S))
                continue
            self.last_claim = time.time()
            self._short = len(claimed) < free
            for job in claimed:
                self._start(job)
            # let the jobs start before the next round trip: preparing and sending it would
            # otherwise come between the claim and the handlers (about 0.3 ms of pickup latency)
            await asyncio.sleep(0)
            if len(claimed) == free:  # claim again when a slot frees
                if self.concurrency - len(self.running) <= 0:
                    await self._wait_for_slot()
                continue
            # fewer jobs than free slots: sleep until something can change
            if await self._idle(claimed):
                return

    def _start(self, job: Job) -> None:
        t = asyncio.create_task(self.executor.run(job))
        self.running[job.id] = t
        t.add_done_callback(lambda _t, i=job.id: self._done(i))  # type: ignore[misc]

    def _done(self, job_id: int) -> None:
        self.running.pop(job_id, None)
        # A freed slot is worth a claim when the last claim filled every slot (more jobs may
        # be ready), or when a burst worker's last job ended (it may be done). After a short
        # claim it is not: nothing was ready then, new jobs bring a NOTIFY or a run_at, and a
        # limit's slot frees when the outcome is written (``_after_flush``). Claiming anyway
        # kept an idle worker busy with empty claims after every job, so that the NOTIFY of
        # the next job waited for them.
        if not self._short or (self.burst and not self.running):
            self.wake()

    async def _idle(self, claimed: list[Job]) -> bool:
        """Wait for the next chance to claim; true when a burst worker is done."""
        timeout = self.poll_interval
        # a burst worker that may be done needs the exact answer (it stops on None); any other
        # sleeps on it, and the driver may answer from where this worker's claims read
        may_be_done = self.burst and not self.running and not claimed
        try:
            nxt = await self.driver.next_run_at(
                self.queues, worker_id=None if may_be_done else self.worker_id)
        except PgQueueError:  # unavailable (failing over?): look again soon, not after a poll
            nxt = None
            timeout = min(timeout, UNAVAILABLE_RETRY_S)
        if nxt is not None:
            timeout = min(timeout, max(0.0, (nxt - self.clock.now()).total_seconds()))
        elif may_be_done:
            await self.completer.drain()
            if await self.driver.next_run_at(self.queues) is None and not self.running:
                left = await self._left_behind()
                log.info("burst: nothing left that this worker can run, stopping; %s",
                         left or "its queues are empty", extra={"event": "burst_done"})
                return True
        if timeout > 0:
            await self._wait_wake(timeout)
        return False

    async def _left_behind(self) -> str:
        """What a stopping burst worker leaves in its queues, and why it cannot run it: jobs
        of paused queues, jobs held by another worker (running, or a dead worker's until its
        lease expires and they are rescued). Empty when nothing is left."""
        try:
            paused = await self.driver.paused_queues_async()
            parts = []
            for q in self.queues:
                n = await self.driver.sizes_async(q)
                if q in paused and n["waiting"] + n["scheduled"]:
                    parts.append(f"{n['waiting'] + n['scheduled']} job(s) wait in paused queue "
                                 f"{q!r} (pgqueue resume {q})")
                if n["running"]:
                    parts.append(f"{n['running']} job(s) of queue {q!r} are held by another "
                                 "worker (running, or a dead worker's until its lease expires "
                                 "and they are rescued)")
        except PgQueueError:
            return ""
        return "left: " + "; ".join(parts) if parts else ""

    async def _wait_for_slot(self) -> None:
        """Every slot is busy: wait until a job ends (which wakes the producer) or a stop.
        Earlier wake-ups (a NOTIFY, a flush) are dropped: nothing can be claimed before a slot
        frees, and the claim then looks afresh; waiting on a wake-up already set would return
        at once, again and again, spinning the event loop until a job ends."""
        self._wake.clear()
        await self._wait_wake(None)

    async def _wait_wake(self, timeout: float | None) -> None:
        """Wait for a wake-up, a stop request or ``timeout`` seconds of the clock.

        One future, resolved by :meth:`wake` (which :meth:`stop` calls before it sets
        :attr:`stopping`) or by a timer:
        a NOTIFY reaches the claim in one turn of the event loop, without the tasks and the
        ``asyncio.wait`` bookkeeping of waiting on several events (about 0.1 ms of pickup)."""
        if self.stopping or self._wake.is_set():
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer: asyncio.TimerHandle | None = None
        sleeper: asyncio.Future[None] | None = None
        if timeout is not None:
            if isinstance(self.clock, SystemClock):
                timer = loop.call_later(max(0.0, timeout), _resolve, waiter)
            else:  # an injected clock (tests): its own sleep
                sleeper = asyncio.ensure_future(self.clock.sleep(timeout))
                sleeper.add_done_callback(lambda _s: _resolve(waiter))
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
            if sleeper is not None:
                sleeper.cancel()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
