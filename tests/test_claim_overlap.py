"""The producer's overlapping claims, on the real PostgreSQL driver: two claims in flight never
take more than the worker's concurrency, a stop while a claim is out loses none of its jobs,
limited queues and concurrency 1 keep one claim at a time.

The driver's ``claim`` is wrapped (on the App's own driver instance) to record, at each call,
what it asks for, the claims already out and the jobs running; the claims themselves run on the
database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.job import Job
from tests.helpers import eventually, scalar


@dataclass
class Call:
    """One claim: what it asked for, what was out (asked by other claims) and running then."""

    limit: int
    out: int
    in_flight: int
    running: int
    got: int = -1
    ids: list[int] = field(default_factory=list)


@dataclass
class ClaimRecorder:
    """Wraps a worker's ``driver.claim``; ``hook(n, call)`` (async) runs before the n-th claim
    returns (1-based), after the database claimed its jobs."""

    worker: pgqueue.Worker | None = None
    calls: list[Call] = field(default_factory=list)
    out: dict[int, int] = field(default_factory=dict)
    hook: Callable[[int, Call], Awaitable[None]] | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch, app: pgqueue.App) -> None:
        real = app.driver.claim

        async def claim(queues: Sequence[str], limit: int, *, worker_id: str,
                        lease_s: float) -> list[Job]:
            producer = self.worker.producer if self.worker is not None else None
            call = Call(limit, sum(self.out.values()), len(self.out),
                        len(producer.running) if producer is not None else 0)
            self.calls.append(call)
            n = len(self.calls)
            self.out[n] = limit
            try:
                jobs = await real(queues, limit, worker_id=worker_id, lease_s=lease_s)
                call.got, call.ids = len(jobs), [j.id for j in jobs]
                if self.hook is not None:
                    await self.hook(n, call)
                return jobs
            finally:
                del self.out[n]

        monkeypatch.setattr(app.driver, "claim", claim)

    def assert_within(self, concurrency: int) -> None:
        for c in self.calls:
            assert c.limit + c.out + c.running <= concurrency, (c, self.calls)


def noop_task(app: pgqueue.App, queue: str = "q") -> list[int]:
    seen: list[int] = []

    @app.task(name="noop", queue=queue)
    async def noop(i: int) -> None:
        seen.append(i)

    return seen


async def test_two_claims_in_flight_never_exceed_concurrency(
        app: pgqueue.App, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    third: list[int] = []
    third_sent, second_back = asyncio.Event(), asyncio.Event()

    @app.task(name="noop", queue="q")
    async def noop(i: int) -> None:
        # the third claim's jobs but its first hold their slots until the second claim is back
        if pgqueue.current_job().id in third[1:]:
            await second_back.wait()
        seen.append(i)

    app.enqueue_many("noop", [{"i": i} for i in range(200)])
    rec = ClaimRecorder()

    async def hold_second(n: int, call: Call) -> None:
        # the second claim comes back only once a third went out meanwhile (two in flight),
        # and a fourth after the third's first job ended: that one slot is all it may take
        if n == 2:
            await asyncio.wait_for(third_sent.wait(), 10)
            await eventually(lambda: len(rec.calls) >= 4, timeout=10)
            second_back.set()
        elif n == 3:
            third.extend(sorted(call.ids))
            third_sent.set()

    rec.hook = hold_second
    rec.install(monkeypatch, app)
    rec.worker = app.worker(queues=["q"], concurrency=10, burst=True, poll_interval=0.2)
    await asyncio.wait_for(rec.worker.run(), 60)
    assert sorted(seen) == list(range(200))
    second, fourth = rec.calls[1], rec.calls[3]
    assert rec.calls[2].in_flight == 1 and rec.calls[2].out == second.limit
    assert len(third) >= 2 and fourth.out == second.limit and fourth.running >= 1, rec.calls
    # each claim after the first asks for at most half the slots; none takes more than is free
    assert all(c.limit <= 5 for c in rec.calls[1:]), rec.calls
    rec.assert_within(10)


async def test_stop_while_a_claim_is_out_loses_nothing(
        app: pgqueue.App, conn: psycopg.Connection[Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = noop_task(app)
    app.enqueue_many("noop", [{"i": i} for i in range(100)])
    rec = ClaimRecorder()
    claimed = asyncio.Event()
    release = asyncio.Event()
    held: list[Call] = []

    async def hold(n: int, call: Call) -> None:
        # an overlapping claim (not the first, which runs alone) has taken its jobs in the
        # database: the worker is asked to stop before they reach it
        if n >= 2 and call.got > 0 and not held:
            held.append(call)
            claimed.set()
            await asyncio.wait_for(release.wait(), 10)

    rec.hook = hold
    rec.install(monkeypatch, app)
    w = rec.worker = app.worker(queues=["q"], concurrency=10, poll_interval=0.2,
                                shutdown_timeout=10)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(claimed.wait(), 10)
    producer = w.producer
    assert producer is not None
    w.stop()
    await eventually(lambda: producer.stopping, what="the producer asked to stop")
    release.set()
    await asyncio.wait_for(task, 30)
    # every job the held claim took ran (none is left claimed by a stopped worker)
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'") == 0
    done = scalar(conn, "SELECT count(*) FROM pgqueue.job_history")
    waiting = scalar(conn, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'waiting'")
    assert done == len(seen) and done + waiting == 100
    assert done >= sum(c.got for c in rec.calls) and held[0].got > 0
    rec.assert_within(10)


@pytest.mark.parametrize("limited", [False, True], ids=["concurrency1", "limited"])
async def test_one_claim_at_a_time_for_concurrency_one_and_limited_queues(
        app: pgqueue.App, monkeypatch: pytest.MonkeyPatch, limited: bool) -> None:
    seen = noop_task(app)
    app.enqueue_many("noop", [{"i": i} for i in range(60)])
    concurrency = 10 if limited else 1
    if limited:
        app.set_queue_limits("q", concurrency=8)
    rec = ClaimRecorder()
    rec.install(monkeypatch, app)
    rec.worker = app.worker(queues=["q"], concurrency=concurrency, burst=True,
                            poll_interval=0.05)
    await asyncio.wait_for(rec.worker.run(), 60)
    assert sorted(seen) == list(range(60))
    assert all(c.in_flight == 0 for c in rec.calls), rec.calls
    # one claim asks for every free slot, as before overlapping claims
    assert rec.calls[0].limit == concurrency
    rec.assert_within(concurrency)
