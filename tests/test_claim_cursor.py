"""Where a worker's unlimited claim reads ``jobs_claim_idx`` from (the claim cursor of
:mod:`pgqueue.drivers.postgres.claim_cursor`): after the last job it claimed while its claims
come back full, from the head otherwise; and the order trade-off that buys, exactly as
documented. The bookkeeping alone first (a fake clock, no database), then the PostgreSQL
driver's claims."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.drivers.postgres.claim_cursor import (
    COSTLY_HEAD_S,
    HEAD,
    SWEEP_FACTOR,
    SWEEP_MAX_S,
    SWEEP_MIN_S,
    ClaimCursors,
)

T0 = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Claimed:
    id: int
    queue: str = "q"
    priority: int = 20
    run_at: dt.datetime | None = T0


def test_first_claim_reads_from_the_head_then_after_the_last_key() -> None:
    clock = FakeClock()
    cursors = ClaimCursors(clock)
    start = cursors.start("w", ["q"])
    assert start.from_head and start.after == (HEAD,)
    cursors.done(start, [Claimed(3), Claimed(1, priority=5), Claimed(2)], limit=3)
    nxt = cursors.start("w", ["q"])
    # the greatest (priority, run_at, id) taken, whatever order the rows came back in
    assert not nxt.from_head and nxt.after == ((20, T0, 3),)
    cursors.done(nxt, [Claimed(4), Claimed(5), Claimed(6)], limit=3)
    assert cursors.start("w", ["q"]).after == ((20, T0, 6),)
    # another worker, and a queue with no key yet, start from the head
    assert cursors.start("other", ["q"]).from_head
    assert cursors.start("w", ["q", "new"]).after == ((20, T0, 6), HEAD)


def test_a_short_claim_after_a_key_makes_the_next_one_read_from_the_head() -> None:
    cursors = ClaimCursors(FakeClock())
    cursors.done(cursors.start("w", ["q"]), [Claimed(1)], limit=1)
    after_key = cursors.start("w", ["q"])
    assert not after_key.from_head
    cursors.done(after_key, [], limit=1)  # nothing after the key: look before it next
    head = cursors.start("w", ["q"])
    assert head.from_head
    # a claim from the head that came back short does not repeat itself
    cursors.done(head, [], limit=1)
    assert not cursors.start("w", ["q"]).from_head


def test_the_sweep_interval_follows_what_the_claim_from_the_head_took() -> None:
    clock = FakeClock()
    cursors = ClaimCursors(clock)

    def head_claim_taking(seconds: float) -> None:
        start = cursors.start("w", ["q"])
        assert start.from_head
        clock.now += seconds
        cursors.done(start, [Claimed(1)], limit=1)

    def reads_from_head_after(seconds: float) -> bool:
        saved = clock.now
        clock.now += seconds
        from_head = cursors.start("w", ["q"]).from_head
        clock.now = saved
        return from_head

    head_claim_taking(0.001)  # cheap: the minimum interval
    assert not reads_from_head_after(SWEEP_MIN_S - 0.002)
    assert reads_from_head_after(SWEEP_MIN_S)
    clock.now += SWEEP_MIN_S
    head_claim_taking(0.02)  # walking dead entries: 20 times as long
    assert not reads_from_head_after(SWEEP_FACTOR * 0.02 - 0.03)
    assert reads_from_head_after(SWEEP_FACTOR * 0.02)
    clock.now += SWEEP_MAX_S
    head_claim_taking(5.0)  # however long it took, at most SWEEP_MAX_S
    assert reads_from_head_after(SWEEP_MAX_S - 5.0)


def test_a_claim_from_the_head_resets_only_its_own_queues() -> None:
    clock = FakeClock()
    cursors = ClaimCursors(clock)
    cursors.done(cursors.start("w", ["a", "b"]),
                 [Claimed(1, queue="a"), Claimed(2, queue="b")], limit=2)
    clock.now += SWEEP_MAX_S
    head = cursors.start("w", ["a"])  # a claim of one queue (the limited path's leftovers)
    assert head.from_head
    cursors.done(head, [], limit=5)
    assert cursors.start("w", ["a", "b"]).after == (HEAD, (20, T0, 2))
    cursors.forget("w")
    assert cursors.start("w", ["a", "b"]).from_head


def test_while_the_head_is_costly_a_short_claim_keeps_reading_after_the_key() -> None:
    """A worker at low load under a held snapshot: its claims come back short, and sending
    each next one to the head would walk the dead entries every time. Once a claim from the
    head took longer than COSTLY_HEAD_S, only the sweep (or an empty claim) goes back there."""
    clock = FakeClock()
    cursors = ClaimCursors(clock)
    head = cursors.start("w", ["q"])
    clock.now += 2 * COSTLY_HEAD_S  # the claim from the head walked dead entries
    cursors.done(head, [Claimed(1)], limit=5)
    interval = SWEEP_FACTOR * 2 * COSTLY_HEAD_S
    for i in range(2, 5):  # short claims, one job each
        nxt = cursors.start("w", ["q"])
        assert not nxt.from_head and nxt.after == ((20, T0, i - 1),)
        cursors.done(nxt, [Claimed(i)], limit=5)
    assert cursors.start("w", ["q"], from_head=True).from_head  # the driver's empty-claim retry
    clock.now += interval
    assert cursors.start("w", ["q"]).from_head  # the sweep


def test_a_workers_first_slow_claim_from_the_head_does_not_count_as_costly() -> None:
    """It may have opened the pool's connections: until the worker has claimed after a key
    once, a slow claim from the head changes nothing."""
    clock = FakeClock()
    cursors = ClaimCursors(clock)
    head = cursors.start("w", ["q"])
    clock.now += 2 * COSTLY_HEAD_S
    cursors.done(head, [Claimed(1)], limit=5)
    assert cursors.next_run_at_from("w", ["q"]) == ((HEAD,), None)


def test_a_costly_claim_from_the_head_that_took_nothing_keeps_the_key() -> None:
    clock = FakeClock()
    cursors = ClaimCursors(clock)
    cursors.done(cursors.start("w", ["q"]), [Claimed(6)], limit=1)
    cursors.done(cursors.start("w", ["q"]), [Claimed(7)], limit=1)  # after the key: quick
    clock.now += SWEEP_MAX_S
    head = cursors.start("w", ["q"])
    assert head.from_head
    clock.now += 2 * COSTLY_HEAD_S
    cursors.done(head, [], limit=1)
    assert cursors.start("w", ["q"]).after == ((20, T0, 7),)
    # while the head is cheap, a claim from the head that took nothing forgets the key
    clock.now += SWEEP_MAX_S
    cheap = cursors.start("w", ["q"])
    cursors.done(cheap, [], limit=1)
    clock.now += SWEEP_MAX_S
    assert cursors.start("w", ["q"]).after == (HEAD,)


def test_next_run_at_reads_after_the_keys_only_while_the_head_is_costly() -> None:
    clock = FakeClock()
    cursors = ClaimCursors(clock)
    assert cursors.next_run_at_from("w", ["q"]) == ((HEAD,), None)  # unknown worker
    cursors.done(cursors.start("w", ["q"]), [Claimed(1)], limit=1)
    assert cursors.next_run_at_from("w", ["q"]) == ((HEAD,), None)  # cheap head: exact
    cursors.done(cursors.start("w", ["q"]), [Claimed(2)], limit=1)  # after the key: quick
    clock.now += SWEEP_MAX_S
    head = cursors.start("w", ["q"])
    clock.now += 0.03  # costly: the sweep interval becomes 20 x 0.03 s
    cursors.done(head, [Claimed(3)], limit=1)
    after, due_in = cursors.next_run_at_from("w", ["q", "other"])
    assert after == ((20, T0, 3), HEAD)
    assert due_in == pytest.approx(SWEEP_FACTOR * 0.03 - 0.03)  # when the sweep is due
    assert cursors.next_run_at_from(None, ["q"]) == ((HEAD,), None)  # no worker: exact
    clock.now += SWEEP_FACTOR * 0.03
    assert cursors.next_run_at_from("w", ["q"]) == ((HEAD,), None)  # the sweep is due


# ---- the PostgreSQL driver ------------------------------------------------------------------

@pytest.fixture
def clock(app: pgqueue.App) -> FakeClock:
    """``app``'s driver with claim cursors on a fake clock: no claim from the head happens
    because time passed, only when the test moves the clock."""
    fake = FakeClock()
    app.driver.claim_cursors = ClaimCursors(fake)  # type: ignore[attr-defined]
    return fake


async def claim_ids(app: pgqueue.App, limit: int, queues: list[str] | None = None) -> list[int]:
    """The ids a claim took, in claim order (its rows come back in no particular order)."""
    jobs = await app.driver.claim(queues or ["q"], limit, worker_id="w", lease_s=60)
    return [j.id for j in sorted(jobs, key=lambda j: (j.priority, j.run_at, j.id))]


async def test_claims_after_the_key_take_jobs_in_order(app: pgqueue.App,
                                                       clock: FakeClock) -> None:
    ids = app.enqueue_many("t", [{} for _ in range(25)], queue="q")
    got = [await claim_ids(app, 10), await claim_ids(app, 10), await claim_ids(app, 10)]
    assert got == [ids[:10], ids[10:20], ids[20:]]


async def test_a_job_before_the_key_waits_for_the_next_claim_from_the_head(
        app: pgqueue.App, clock: FakeClock) -> None:
    """The documented trade-off: while claims come back full, a higher-priority job that
    arrived after the worker passed its place is not taken before the sweep interval (or a
    short claim) sends the next claim back to the head."""
    backlog = app.enqueue_many("t", [{} for _ in range(30)], queue="q")
    assert await claim_ids(app, 10) == backlog[:10]
    urgent = app.enqueue("t", {}, queue="q", priority=0)
    assert await claim_ids(app, 10) == backlog[10:20]  # after the key: not yet
    clock.now += SWEEP_MAX_S
    assert await claim_ids(app, 10) == [urgent, *backlog[20:29]]  # the sweep finds it first


async def test_a_short_claim_is_followed_by_one_from_the_head(
        app: pgqueue.App, clock: FakeClock, conn: psycopg.Connection[Any]) -> None:
    """A claim that read after the key and came back short sends the next one to the head: a
    job that became ready behind the key (here one put back to waiting with its old key, as a
    claim that rolled back leaves it) is taken by the next claim, and no ready job is left
    while the worker has free slots."""
    ids = app.enqueue_many("t", [{} for _ in range(4)], queue="q")
    assert await claim_ids(app, 2) == ids[:2]
    conn.execute("UPDATE pgqueue.jobs SET state = 'waiting', worker_id = NULL, "
                 "lease_expires_at = NULL WHERE id = %s", (ids[0],))  # back behind the key
    assert await claim_ids(app, 5) == ids[2:]  # after the key: short
    assert await claim_ids(app, 5) == [ids[0]]  # from the head: found
    assert await claim_ids(app, 5) == []


async def test_an_empty_claim_after_the_key_reads_from_the_head_at_once(
        app: pgqueue.App, clock: FakeClock) -> None:
    """Callers stop on an empty claim (``TestQueue.drain``, a loop of one's own): a claim that
    read after the key and found nothing there looks from the head in the same call, so that
    it is never empty while a job that sorts before the key is ready."""
    [first] = app.enqueue_many("t", [{}], queue="q")
    assert await claim_ids(app, 1) == [first]  # full: the next reads after its key
    urgent = app.enqueue("t", {}, queue="q", priority=0)
    assert await claim_ids(app, 1) == [urgent]
    assert await claim_ids(app, 1) == []


async def test_each_queue_keeps_its_own_key(app: pgqueue.App, clock: FakeClock) -> None:
    a = app.enqueue_many("t", [{} for _ in range(6)], queue="a")
    b = app.enqueue_many("t", [{} for _ in range(6)], queue="b", priority=10)
    first = await claim_ids(app, 4, ["a", "b"])
    assert first == b[:4]  # b's priority comes first
    urgent_a = app.enqueue("t", {}, queue="a", priority=0)
    second = await claim_ids(app, 4, ["a", "b"])
    # b goes on after its key; a has no key yet, so its urgent job is found from the head
    assert second == [urgent_a, *b[4:], a[0]]  # (in claim order)


async def test_an_unregistered_worker_forgets_its_keys(app: pgqueue.App,
                                                       clock: FakeClock) -> None:
    ids = app.enqueue_many("t", [{} for _ in range(4)], queue="q")
    assert await claim_ids(app, 2) == ids[:2]
    urgent = app.enqueue("t", {}, queue="q", priority=0)
    await app.driver.unregister_worker(worker_id="w")
    assert await claim_ids(app, 1) == [urgent]


class StepClock(FakeClock):
    """Each reading is ``step`` seconds after the last: a claim takes ``step`` (it reads the
    clock when planned and when done)."""

    step = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def test_while_the_head_is_costly_an_idle_worker_reads_after_its_key(
        app: pgqueue.App) -> None:
    """Low load under a held snapshot: short claims keep reading after the key, ``next_run_at``
    for the worker reads after it too and answers no later than the sweep, and a job that
    sorts before the key is claimed at the sweep, or at once when a claim comes back empty."""
    clock = StepClock()
    app.driver.claim_cursors = ClaimCursors(clock)  # type: ignore[attr-defined]
    clock.step = 2 * COSTLY_HEAD_S  # the first claim takes that long
    [first] = app.enqueue_many("t", [{}], queue="q")
    assert await claim_ids(app, 5) == [first]  # from the head: slow
    clock.step = 0.0  # from now on every claim is quick
    urgent = app.enqueue("t", {}, queue="q", priority=0)  # sorts before the key
    later = app.enqueue("t", {}, queue="q")
    assert await claim_ids(app, 5) == [later]  # after the key, quick: the head was costly
    urgent_waits = app.enqueue("t", {}, queue="q")
    assert await claim_ids(app, 5) == [urgent_waits]  # short claims stay after the key
    scheduled = app.enqueue("t", {}, queue="q", run_at=dt.datetime.now(dt.UTC)
                            + dt.timedelta(hours=1))
    now = dt.datetime.now(dt.UTC)
    exact = await app.driver.next_run_at(["q"])  # no worker: from the head
    assert exact is not None and exact <= now  # the urgent job is ready
    for_worker = await app.driver.next_run_at(["q"], worker_id="w")
    # after the key only the scheduled job waits, but the sweep comes first
    assert for_worker is not None and now < for_worker < now + dt.timedelta(seconds=2)
    assert await claim_ids(app, 5) == [urgent]  # empty after the key: from the head at once
    assert await claim_ids(app, 5) == []
    job = app.get_job(scheduled)
    assert job is not None and await app.driver.next_run_at(["q"]) == job.run_at
