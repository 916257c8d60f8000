"""Batched state writes for one worker.

Finished jobs (succeeded, cancelled) are buffered and written by one statement per flush: a
flush happens when ``batch_size`` items are waiting or ``flush_interval`` seconds after the first
one arrived. Requeues (retries, snoozes, releases) are batched the same way. Archiving a job is
written at once (the dead-letter hook must run after the archive row exists).

Every write retries with exponential backoff (tenacity) while the database is unreachable, so
nothing buffered is lost on a connection error; :meth:`Completer.stop` flushes what is left.
If the process dies with items still buffered, those jobs are still ``running`` with this
worker's lease, and the rescuer puts them back when the lease expires: at-least-once, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from pgqueue._service import Clock, Service
from pgqueue.drivers.base import Driver, Finish, Requeue
from pgqueue.errors import DatabaseUnavailableError, TransientDatabaseError
from pgqueue.job import AttemptError

log = logging.getLogger("pgqueue.completer")

T = TypeVar("T")

__all__ = ["Completer"]


class Completer(Service):
    """Buffers outcomes and writes them in batches (a service: ``start``/``stop``).

    The executor calls :meth:`finish`, :meth:`requeue` and :meth:`archive`; the completer's
    own task owns the buffers' flushing. ``stop()`` writes everything left before returning.
    """

    name = "completer"

    def __init__(self, driver: Driver, *, worker_id: str, batch_size: int = 200,
                 flush_interval: float = 0.005, retry_for: float = 3600.0,
                 clock: Clock | None = None) -> None:
        super().__init__(clock=clock, logger=log)
        self.driver = driver
        self.worker_id = worker_id
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_for = retry_for
        self._finishes: list[Finish] = []
        self._requeues: list[Requeue] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._flushing = False
        #: true while the run loop lets a batch build up: an item then wakes it only once
        #: the batch is full (not once per event-loop turn that finished jobs)
        self._filling = False
        self._inflight: list[Finish | Requeue] = []
        self.flushes = 0
        self.written = 0
        #: called on the loop after requeues (retries, snoozes, releases) were written: the
        #: producer's wake-up, so that it looks again for the earliest ``run_at`` -- a requeue
        #: written after the producer last looked (late, e.g. while the database was failing
        #: over) would otherwise wait for the next poll
        self.on_requeued: Callable[[], None] | None = None
        #: called (on the loop) after each flush that wrote something: the slots of a limited
        #: queue that those jobs held are free in the database from then on
        self.on_flushed: list[Callable[[], None]] = []

    async def stop(self) -> None:
        """Flush everything buffered, then stop."""
        self._wake.set()
        await super().stop()

    def held_ids(self) -> list[int]:
        """Jobs whose outcome is buffered or being written (their leases must stay alive)."""
        return [i.job_id for i in (*self._finishes, *self._requeues, *self._inflight)]

    @property
    def backlog(self) -> int:
        """Outcomes not yet written: buffered plus being written."""
        return self.pending + len(self._inflight)

    @property
    def pending(self) -> int:
        return len(self._finishes) + len(self._requeues)

    async def finish(self, item: Finish) -> None:
        """Buffer a finished job; returns at once (the write happens at the next flush)."""
        self.add(item)

    def add(self, item: Finish) -> None:
        """Buffer a finished job (the write happens at the next flush): :meth:`finish`
        without the coroutine, for the executor's once-per-job call."""
        finishes = self._finishes
        finishes.append(item)
        if not self._filling or len(finishes) + len(self._requeues) >= self.batch_size:
            self._wake.set()

    async def requeue(self, item: Requeue) -> None:
        self._requeues.append(item)
        self._signal()

    async def archive(self, job_id: int, error: AttemptError, reason: str,
                      attempt: int | None = None) -> bool:
        """Move a job to ``failed_jobs`` now (retrying on connection errors)."""
        return await self._retry(lambda: self.driver.archive(
            job_id, worker_id=self.worker_id, error=error, reason=reason, attempt=attempt))

    async def park(self, job_id: int, awaited: list[int],
                   attempt: int | None = None) -> tuple[bool, list[int]]:
        """Park a job until ``awaited`` finish (:class:`pgqueue.Await`), now (retrying on
        connection errors): (parked, awaited ids that do not exist)."""
        return await self._retry(lambda: self.driver.park(
            job_id, worker_id=self.worker_id, attempt=attempt, awaited=awaited))

    async def drain(self) -> None:
        """Wait until everything buffered so far is written (including a flush in flight)."""
        while self.pending or self._flushing:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            self._wake.set()
            await fut

    def _signal(self) -> None:
        if not self._filling or self.pending >= self.batch_size:
            self._wake.set()

    async def run(self) -> None:
        while True:
            if not self.stopping:
                await self._wake.wait()
            if not self.stopping and self.pending < self.batch_size:
                # let a batch build up for a few ms after the first item
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full(), self.flush_interval)
            self._wake.clear()
            await self._flush()
            if self.stopping and not self.pending:
                return

    async def _full(self) -> None:
        self._filling = True
        try:
            while self.pending < self.batch_size and not self.stopping:
                self._wake.clear()
                await self._wake.wait()
        finally:
            self._filling = False

    async def _flush(self) -> None:
        finishes, self._finishes = self._finishes, []
        requeues, self._requeues = self._requeues, []
        self._flushing = True
        self._inflight = [*finishes, *requeues]
        try:
            for i in range(0, len(finishes), self.batch_size):
                await self._write(finishes[i:i + self.batch_size], self.driver.finish_many)
            for i in range(0, len(requeues), self.batch_size):
                await self._write(requeues[i:i + self.batch_size], self.driver.requeue_many)
            if requeues and self.on_requeued is not None:
                self.on_requeued()
            self.flushes += 1
            self.written += len(finishes) + len(requeues)
            if finishes or requeues:
                for callback in self.on_flushed:
                    callback()
        finally:
            self._flushing = False
            self._inflight = []
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def _write(self, chunk: list[Any], write: Callable[..., Awaitable[Any]]) -> None:
        """Write one chunk, retrying while the database is unavailable.

        A chunk that fails for another reason is split in halves and each half written on its
        own, so one row the database refuses never costs the others their outcome (they would
        be rescued and run again). A single finished job whose row is still refused is written
        once more without its result; what still fails is logged and left to the rescuer.
        """
        try:
            await self._retry(lambda: write(chunk, worker_id=self.worker_id))
            return
        except Exception as exc:
            error = exc
        if len(chunk) > 1:
            half = len(chunk) // 2
            await self._write(chunk[:half], write)
            await self._write(chunk[half:], write)
            return
        item = chunk[0]
        if isinstance(item, Finish) and item.result_json is not None:
            log.warning("job %s: its result could not be stored (%s); finishing it without one",
                        item.job_id, error)
            await self._write([dataclasses.replace(item, result_json=None)], write)
            return
        log.error("completer could not write the outcome of job %s: %s; it will be rescued "
                  "when its lease expires", item.job_id, error, exc_info=error)

    async def _retry(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:  # the usual: it works at once (no retrying machinery built for every write)
            return await fn()
        except (DatabaseUnavailableError, TransientDatabaseError) as exc:
            log.warning("database unavailable while writing job states: %s; retrying", exc)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((DatabaseUnavailableError, TransientDatabaseError)),
            wait=wait_exponential(multiplier=0.05, max=5.0) + wait_random(0, 0.05),
            stop=stop_after_delay(self.retry_for),
            reraise=True,
            before_sleep=lambda rs: log.warning(
                "database unavailable while writing job states (attempt %d): %s; retrying",
                rs.attempt_number, rs.outcome.exception() if rs.outcome else None),
        ):
            with attempt:
                return await fn()
        raise AssertionError("unreachable")  # pragma: no cover
