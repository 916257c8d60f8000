"""A worker whose slots are all busy sleeps until one frees, whatever wakes it meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any

import pgqueue
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
