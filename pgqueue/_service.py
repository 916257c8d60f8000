"""The service contract: one lifecycle for every long-running part of pgqueue.

A *service* is a part of the runtime with a task of its own -- the producer (claims), the
completer (batched writes), the listener (LISTEN connection) and each maintenance duty
(heartbeat, rescue, vacuum, ...). They all share this small contract:

- ``await start()`` starts the service's task and returns at once; ``await stop()`` asks it to
  stop, waits for it, and is idempotent. Both are called from the event loop that runs it.
- ``started`` and ``stopped`` are :class:`asyncio.Event` signals a test (or a supervisor) can
  await instead of sleeping.
- ``log`` is a logger named after the service (``pgqueue.<name>``).
- ``clock`` is injectable (:class:`SystemClock` by default; :class:`ManualClock` in tests), and
  every wait of a service goes through :meth:`Service.sleep`, which a stop request interrupts.

:class:`PeriodicService` is the shape of a maintenance duty: ``tick()`` every ``interval``
seconds. A tick that raises is logged and retried with exponential backoff (tenacity) up to
``max_backoff``, on its own task, so one failing duty never delays another.

This module sits below the driver seam (drivers' listeners are services too) and imports nothing
from pgqueue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import logging
import time
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

__all__ = ["Clock", "ManualClock", "PeriodicService", "Service", "SystemClock"]


class Clock(Protocol):
    """Time as a service sees it. Inject a :class:`ManualClock` to drive services in tests."""

    def monotonic(self) -> float:
        """Seconds on a monotonic scale (for intervals)."""
        ...

    def now(self) -> dt.datetime:
        """The current UTC time (aware)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, UTC now and :func:`asyncio.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that only moves when told to (:meth:`advance`); for deterministic tests.

    ``sleep(s)`` returns once the clock was advanced by ``s`` or more from when it was called.
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._t = 0.0
        self._start = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._t

    def now(self) -> dt.datetime:
        return self._start + dt.timedelta(seconds=self._t)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._t + seconds, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many sleeps are pending (a test can wait until its services are all asleep)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleep that is now due."""
        self._t += seconds
        while self._sleepers and self._sleepers[0][0] <= self._t:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)


class Service:
    """Base of every service: one task, ``start``/``stop``, signals, a logger and a clock.

    Subclasses implement :meth:`run`, which should return when :attr:`stopping` is set (it is
    checked by :meth:`sleep`, which returns early on a stop request). ``cancel_on_stop``
    services (maintenance duties) are cancelled on stop instead of being waited for.
    """

    #: the service's name: its logger is ``pgqueue.<name>`` and its task is named after it
    name = "service"
    #: cancel the task on stop (true for duties whose work can be interrupted at any point)
    cancel_on_stop = False
    #: seconds :meth:`stop` waits for the task before abandoning it (None: as long as it takes)
    stop_timeout: float | None = None

    def __init__(self, *, clock: Clock | None = None, logger: logging.Logger | None = None,
                 name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self.clock: Clock = clock or SYSTEM_CLOCK
        self.log = logger or logging.getLogger(f"pgqueue.{self.name}")
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = ("stopped" if self.stopped.is_set() else "running" if self._task is not None
                 else "new")
        return f"<{type(self).__name__} {self.name} {state}>"

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping.is_set()

    async def start(self) -> None:
        """Start the service's task (idempotent); returns at once."""
        if self._task is not None:
            return
        self._stopping.clear()
        self.stopped.clear()
        self._task = asyncio.create_task(self._main(), name=f"pgqueue-{self.name}")

    async def stop(self) -> None:
        """Ask the service to stop and wait until it has (idempotent)."""
        self._stopping.set()
        task = self._task
        if task is None:
            return
        if self.cancel_on_stop:
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self.stop_timeout)
        if not done:
            self.log.warning("%s did not stop within %s s; abandoning it", self.name,
                             self.stop_timeout)
        elif not task.cancelled() and task.exception() is not None:
            self.log.debug("%s ended with %r", self.name, task.exception())
        self._task = None

    async def wait(self) -> None:
        """Wait until the service's task ends (by :meth:`stop` or by itself)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _main(self) -> None:
        self.started.set()
        try:
            await self.run()
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise
        except Exception:
            self.log.exception("%s stopped on an unexpected error", self.name)
            raise
        finally:
            self.stopped.set()

    async def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        """Sleep on the service's clock; returns early when the service is asked to stop."""
        if self._stopping.is_set():
            return
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()


class PeriodicService(Service):
    """A duty run every ``interval`` seconds on its own task.

    ``first_delay`` is the wait before the first tick (default 0: tick at once). A tick that
    raises is logged at WARNING and retried after an exponentially growing wait (``interval``,
    doubling, at most ``max_backoff``; default ``8 * interval``); a tick that succeeds resets
    the backoff. ``ticks`` counts ticks that succeeded, ``failures`` those that raised.
    """

    cancel_on_stop = True

    def __init__(self, *, interval: float, first_delay: float = 0.0,
                 max_backoff: float | None = None, clock: Clock | None = None,
                 logger: logging.Logger | None = None, name: str | None = None) -> None:
        super().__init__(clock=clock, logger=logger, name=name)
        if interval <= 0:
            raise ValueError(f"{self.name}: interval must be positive, not {interval!r}")
        self.interval = float(interval)
        self.first_delay = float(first_delay)
        self.max_backoff = float(max_backoff if max_backoff is not None else 8 * interval)
        self.ticks = 0
        self.failures = 0
        self._progress = asyncio.Condition()

    async def tick(self) -> None:  # pragma: no cover - abstract
        """One round of the duty."""
        raise NotImplementedError

    async def run(self) -> None:
        await self.sleep(self.first_delay)
        while not self.stopping:
            retrying = AsyncRetrying(
                retry=retry_if_exception(lambda e: isinstance(e, Exception)
                                         and not self.stopping),
                wait=wait_exponential(multiplier=self.interval, min=self.interval,
                                      max=max(self.interval, self.max_backoff)),
                sleep=self.sleep,
                before_sleep=self._failed,
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        if self.stopping:
                            return
                        await self.tick()
            except Exception:  # only when stopping: tenacity gave the last error back
                return
            await self._count(ok=True)
            await self.sleep(self.interval)

    async def _failed(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        self.log.warning("%s failed: %s; retrying in %.1f s", self.name, exc,
                         state.upcoming_sleep,
                         extra={"event": "maintenance_error", "duty": self.name})
        await self._count(ok=False)

    async def _count(self, *, ok: bool) -> None:
        async with self._progress:
            if ok:
                self.ticks += 1
            else:
                self.failures += 1
            self._progress.notify_all()

    async def wait_rounds(self, rounds: int) -> None:
        """Wait until ``rounds`` ticks have been attempted (succeeded or failed) in total."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.ticks + self.failures >= rounds)
