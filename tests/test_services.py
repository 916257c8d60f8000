"""The service contract: one lifecycle for every service, duties that fail alone.

Duties run on a :class:`ManualClock`, so "on time" is counted in clock steps, never in
wall-clock sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue._service import ManualClock, PeriodicService, Service
from pgqueue.worker.maintenance import DutyInputs, Heartbeat, Rescuer, default_duties

pytestmark = pytest.mark.asyncio


class Broken(PeriodicService):
    """A duty that raises on every tick."""

    name = "broken"

    async def tick(self) -> None:
        raise RuntimeError("this duty always fails")


class Counting(PeriodicService):
    name = "counting"

    async def tick(self) -> None:
        pass


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)
    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_service_lifecycle_signals_and_idempotent_stop() -> None:
    clock = ManualClock()
    duty = Counting(interval=1.0, clock=clock)
    assert not duty.started.is_set()
    await duty.start()
    await duty.start()  # idempotent
    await asyncio.wait_for(duty.started.wait(), 5)
    await asyncio.wait_for(duty.wait_rounds(1), 5)  # first tick at once
    clock.advance(1.0)
    await asyncio.wait_for(duty.wait_rounds(2), 5)
    await duty.stop()
    await duty.stop()
    assert duty.stopped.is_set() and duty.ticks == 2 and duty.failures == 0


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_failing_duty_backs_off_alone_while_another_keeps_its_schedule() -> None:
    clock = ManualClock()
    lines = _Lines()  # on the duty's own logger: other tests may reconfigure propagation
    broken = Broken(interval=1.0, max_backoff=4.0, clock=clock)
    broken.log.addHandler(lines)
    healthy = Counting(interval=1.0, clock=clock)
    for s in (broken, healthy):
        await s.start()
    await asyncio.wait_for(healthy.wait_rounds(1), 5)
    await asyncio.wait_for(broken.wait_rounds(1), 5)
    for step in range(1, 11):
        await _until(lambda: clock.sleepers >= 2, "both duties asleep")
        clock.advance(1.0)
        await asyncio.wait_for(healthy.wait_rounds(1 + step), 5)
    # the healthy duty ticked once per interval; the broken one retried at 1, 2, 4, 4... s
    assert healthy.ticks == 11 and healthy.failures == 0
    assert broken.ticks == 0 and 4 <= broken.failures <= 6
    assert any("broken failed: this duty always fails" in line for line in lines.lines)
    for s in (broken, healthy):
        await s.stop()
    broken.log.removeHandler(lines)


async def test_a_service_that_ends_on_an_error_sets_stopped() -> None:
    class Crashes(Service):
        name = "crashes"

        async def run(self) -> None:
            raise ValueError("boom")

    s = Crashes()
    await s.start()
    await asyncio.wait_for(s.stopped.wait(), 5)
    with pytest.raises(ValueError, match="boom"):
        await s.wait()


async def test_worker_duties_are_separate_services_heartbeat_and_rescue_run_on_time(
        app: pgqueue.App, clean: str) -> None:
    """One duty raises on every tick; the heartbeat and the rescuer of the same worker still
    run once per interval of the (manual) clock, and jobs still run."""
    clock = ManualClock()
    built: list[PeriodicService] = []

    def duties(inputs: DutyInputs) -> list[PeriodicService]:
        built.extend(default_duties(dataclasses.replace(inputs, clock=clock)))
        built.append(Broken(interval=0.5, max_backoff=0.5, clock=clock))
        return built

    done: list[int] = []

    @app.task(name="svc.job", queue="svc")
    def job(n: int) -> None:
        done.append(n)

    worker = app.worker(["svc"], lease_s=3.0, duties=duties)
    run = asyncio.create_task(worker.run())
    await asyncio.to_thread(worker.started.wait, 10)
    heartbeat = next(d for d in built if isinstance(d, Heartbeat))
    rescuer = next(d for d in built if isinstance(d, Rescuer))
    broken = next(d for d in built if isinstance(d, Broken))
    assert heartbeat.interval == 1.0 and rescuer.interval == 1.5
    await asyncio.wait_for(heartbeat.wait_rounds(1), 5)
    await asyncio.wait_for(rescuer.wait_rounds(1), 5)

    # a job claimed by a worker that died: its lease is already over
    app.strict = False  # a task this app does not register (another service's)
    job_id = await app.enqueue_async("svc.other", {}, queue="elsewhere")
    claimed = await app.driver.claim(["elsewhere"], 1, worker_id="dead:1:x", lease_s=0.001)
    assert [j.id for j in claimed] == [job_id]
    with psycopg.connect(clean, autocommit=True) as c:
        def lease_over() -> bool:
            row = c.execute("SELECT lease_expires_at < now() FROM pgqueue.jobs WHERE id = %s",
                            (job_id,)).fetchone()
            return bool(row and row[0])
        await _until(lease_over, "the dead worker's lease to pass")

        def beat() -> Any:
            row = c.execute("SELECT heartbeat_at FROM pgqueue.workers WHERE id = %s",
                            (worker.id,)).fetchone()
            return row[0] if row else None

        beats = [beat()]
        for step in range(1, 7):  # six clock seconds, in half-second steps
            clock.advance(0.5)
            await asyncio.wait_for(heartbeat.wait_rounds(1 + step // 2), 5)
            await asyncio.wait_for(rescuer.wait_rounds(1 + step // 3), 5)
            if step % 2 == 0:
                await _until(lambda: beat() != beats[-1], "the heartbeat's write")
                beats.append(beat())
        assert heartbeat.ticks == 4 and heartbeat.failures == 0
        assert rescuer.ticks == 3 and rescuer.failures == 0
        assert broken.failures >= 6 and broken.ticks == 0
        assert len(set(beats)) == 4  # each heartbeat tick wrote a new heartbeat_at
        state = c.execute("SELECT state, worker_id FROM pgqueue.jobs WHERE id = %s",
                          (job_id,)).fetchone()
        assert state == ("waiting", None)
        assert rescuer.rescued == 1

    await job.enqueue_async(n=7)
    await _until(lambda: done == [7], "the job to run")
    worker.stop()
    await asyncio.wait_for(run, 30)
    assert all(d.stopped.is_set() for d in built)
