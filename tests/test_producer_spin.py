"""A worker whose slots are all busy sleeps until one frees, whatever wakes it meanwhile."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import pytest

import pgqueue
from pgqueue.worker._producer import Producer
from tests.helpers import eventually


async def test_full_worker_does_not_spin_on_a_notification(app: pgqueue.App) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @app.task(name="hold", queue="q")
    async def hold() -> None:
        started.set()
        await release.wait()

    app.enqueue("hold")
    w = app.worker(queues=["q"], concurrency=1, poll_interval=3600)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(started.wait(), 10)
    producer = w.producer
    assert producer is not None
    waits = 0
    real_wait = producer._wait_wake

    async def counting_wait(timeout: float | None) -> None:
        nonlocal waits
        waits += 1
        await real_wait(timeout)

    producer._wait_wake = counting_wait  # type: ignore[method-assign]
    notified: list[Any] = []
    real_notify = producer.on_notify

    def on_notify(kind: str, payload: Any) -> None:
        notified.append((kind, payload))
        real_notify(kind, payload)

    producer.on_notify = on_notify  # type: ignore[method-assign]
    app.enqueue("hold")  # NOTIFY: the producer is woken, but has no free slot
    await eventually(lambda: ("job", "q") in notified, what="the notification")
    for _ in range(200):  # let the event loop turn (no time passes)
        await asyncio.sleep(0)
    spins = waits
    release.set()
    w.stop()
    await asyncio.wait_for(task, 30)
    assert spins <= 2, f"the producer waited {spins} times while every slot was busy"


async def test_idle_worker_does_not_claim_again_when_its_job_ends(
        app: pgqueue.App, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a claim that found fewer jobs than free slots, a job ending or its outcome being
    written frees nothing that could be claimed (no limits here): the producer claims once,
    for the NOTIFY of the next job. Empty claims after every job kept an idle worker busy
    when the next NOTIFY came."""
    ran: list[int] = []

    @app.task(name="quick", queue="q")
    async def quick(i: int) -> None:
        ran.append(i)

    waiting = [False]
    real_wait = Producer._wait_wake

    async def tracking_wait(self: Producer, timeout: float | None) -> None:
        waiting[0] = True
        try:
            await real_wait(self, timeout)
        finally:
            waiting[0] = False

    monkeypatch.setattr(Producer, "_wait_wake", tracking_wait)
    claims: list[int] = []
    real_claim = app.driver.claim

    async def counting_claim(*args: Any, **kwargs: Any) -> Any:
        jobs = await real_claim(*args, **kwargs)
        claims.append(len(jobs))
        return jobs

    monkeypatch.setattr(app.driver, "claim", counting_claim)
    w = app.worker(queues=["q"], concurrency=5, poll_interval=3600)
    task = asyncio.create_task(w.run())

    async def settled(n: int) -> bool:
        done = await app.driver.sizes_async("q")
        producer = w.producer
        return (len(ran) == n and done["waiting"] + done["running"] == 0 and waiting[0]
                and producer is not None and not producer.completer.backlog
                and not producer._wake.is_set())

    try:
        await eventually(lambda: settled(0), what="the idle worker")
        for i in range(1, 4):
            before = len(claims)
            app.enqueue("quick", {"i": i})
            await eventually(partial(settled, i), what=f"job {i} run and written")
            for _ in range(200):  # let the event loop turn (no time passes)
                await asyncio.sleep(0)
            assert waiting[0]
            assert claims[before:] == [1], claims[before:]
    finally:
        w.stop()
        await asyncio.wait_for(task, 30)
