"""pgqueue.testing, used as a user would: only its public API (and pgqueue's), on the memory
driver and on a real PostgreSQL.

Covers inline mode, manual mode with assert_enqueued/refute_enqueued, drain with retries and
scheduled jobs brought forward by the time helper, run_job's outcomes (Snooze, Cancel, Fail,
timeouts, current_job()), and the diff-like failure message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

import pgqueue
import pgqueue.testing


@dataclass
class Shop:
    """An app with a few tasks, and what they did."""

    app: pgqueue.App
    sent: list[str] = field(default_factory=list)
    flaky_calls: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    tasks: dict[str, Any] = field(default_factory=dict)


def _shop(app: pgqueue.App) -> Shop:
    shop = Shop(app)
    fast = pgqueue.RetryPolicy(base=60.0, jitter=0.0)  # a real backoff: a minute and up

    @app.task(name="send_email", queue="emails")
    def send_email(to: str, subject: str = "hi") -> str:
        shop.sent.append(to)
        return f"sent to {to}"

    @app.task(name="flaky", max_attempts=3, retry=fast)
    def flaky(fail_times: int) -> int:
        job = pgqueue.current_job()
        shop.flaky_calls.append(job.attempt)
        if job.attempt <= fail_times:
            raise RuntimeError(f"boom {job.attempt}")
        return job.attempt

    @app.task(name="snoozer", max_snoozes=2)
    def snoozer() -> pgqueue.Snooze:
        return pgqueue.Snooze(30)

    @app.task(name="canceller")
    def canceller() -> None:
        raise pgqueue.Cancel("not needed")

    @app.task(name="fails_hard")
    def fails_hard() -> None:
        raise pgqueue.Fail("bad input")

    @app.task(name="slow", timeout=0.2)
    async def slow() -> None:
        await asyncio.sleep(30)

    @app.task(name="whoami")
    def whoami() -> dict[str, Any]:
        job = pgqueue.current_job()
        return {"task": job.task, "attempt": job.attempt, "meta": job.meta}

    app.on_dead_letter("default", lambda job, exc: shop.dead.append(job.id))
    shop.tasks.update(send_email=send_email, flaky=flaky, snoozer=snoozer, slow=slow,
                      canceller=canceller, fails_hard=fails_hard, whoami=whoami)
    return shop


@pytest.fixture(params=["memory", "postgres"])
def shop(request: pytest.FixtureRequest) -> Iterator[Shop]:
    if request.param == "memory":
        app = pgqueue.App(driver="memory")
    else:
        app = pgqueue.App(database_url=request.getfixturevalue("clean"))
    yield _shop(app)
    app.close()


# ---- manual mode ------------------------------------------------------------------------------
def test_manual_records_and_runs_nothing_until_drained(shop: Shop) -> None:
    send_email = shop.tasks["send_email"]
    with pgqueue.testing.manual(shop.app) as q:
        send_email.enqueue(to="a@b.c")
        send_email.options(priority=5).enqueue(to="z@b.c", subject="yo")
        assert shop.sent == []
        jobs = q.assert_enqueued(send_email, args={"to": "a@b.c"}, queue="emails",
                                 priority=20, within=1)
        assert len(jobs) == 1 and jobs[0].args == {"to": "a@b.c"}
        q.assert_enqueued("send_email", count=2)
        q.refute_enqueued(send_email, args={"to": "nobody@b.c"})
        assert [j.args["to"] for j in q.enqueued_jobs(send_email)] == ["a@b.c", "z@b.c"]
        assert shop.app.count("emails") == 2  # real jobs in the driver

        result = q.drain()
        assert (result.succeeded, result.failed, result.retried) == (2, 0, 0)
        assert sorted(shop.sent) == ["a@b.c", "z@b.c"]
        assert [o.result for o in result.outcomes] == ["sent to z@b.c", "sent to a@b.c"]
        assert q.enqueued_jobs() == []
        q.refute_enqueued(send_email)
    assert shop.app.count("emails") == 0


def test_assert_enqueued_failure_lists_what_was_enqueued_instead(shop: Shop) -> None:
    send_email = shop.tasks["send_email"]
    with pgqueue.testing.manual(shop.app) as q:
        send_email.enqueue(to="a@b.c")
        shop.tasks["flaky"].enqueue(fail_times=0)
        with pytest.raises(AssertionError) as caught:
            q.assert_enqueued(send_email, args={"to": "b@b.c"}, queue="mail")
        message = str(caught.value)
        assert "no enqueued job matches task='send_email', args={'to': 'b@b.c'}" in message
        assert "enqueued instead (2 waiting):" in message
        assert "args['to']: expected 'b@b.c', got 'a@b.c'" in message
        assert "queue: expected 'mail', got 'emails'" in message
        assert "task: expected 'send_email', got 'flaky'" in message
        with pytest.raises(AssertionError, match="expected no job matching"):
            q.refute_enqueued(send_email, args={"to": "a@b.c"})
        with pytest.raises(AssertionError, match="found 1 matching"):
            q.assert_enqueued(send_email, count=2)
    with pgqueue.testing.manual(shop.app) as q2, pytest.raises(
            AssertionError, match="enqueued instead: nothing"):
        q2.assert_enqueued(send_email)


def test_drain_with_retries_runs_each_job_to_its_end(shop: Shop) -> None:
    flaky = shop.tasks["flaky"]
    with pgqueue.testing.manual(shop.app) as q:
        ok_id = flaky.enqueue(fail_times=2)
        dead_id = flaky.enqueue(fail_times=5)
        first = q.drain()
        assert (first.succeeded, first.retried, first.failed) == (0, 2, 0)
        assert first.outcomes[0].error == "RuntimeError: boom 1"
        assert q.drain().ran == 0  # the retries wait for their backoff (a minute)
        rest = q.drain(with_retries=True)
        assert (rest.succeeded, rest.retried, rest.failed) == (1, 2, 1)
        assert [o.job_id for o in rest.outcomes if o.state == "succeeded"] == [ok_id]
        assert shop.app.get_failed(dead_id).errors[-1].error == "RuntimeError: boom 3"
        assert shop.dead == [dead_id]  # the dead-letter hook ran
        assert q.enqueued_jobs() == []


def test_time_travel_brings_scheduled_jobs_and_retries_forward(shop: Shop) -> None:
    send_email, flaky = shop.tasks["send_email"], shop.tasks["flaky"]
    with pgqueue.testing.manual(shop.app) as q:
        send_email.options(delay=3600).enqueue(to="later@b.c")
        send_email.options(run_at=q.now() + dt.timedelta(days=1)).enqueue(to="tomorrow@b.c")
        q.assert_enqueued(send_email, args={"to": "later@b.c"}, within=3600)
        with pytest.raises(AssertionError, match="expected within 60 s"):
            q.assert_enqueued(send_email, args={"to": "later@b.c"}, within=60)
        assert q.drain().ran == 0

        assert q.advance(dt.timedelta(minutes=59)) == 2  # both moved, neither due yet
        assert q.drain().ran == 0
        q.advance(60)
        assert q.drain().succeeded == 1 and shop.sent == ["later@b.c"]
        q.assert_enqueued(send_email, args={"to": "tomorrow@b.c"}, within=dt.timedelta(days=1))

        flaky.enqueue(fail_times=1)
        assert q.drain().retried == 1
        q.advance(59)
        assert q.drain().ran == 0
        q.advance(1)  # the backoff (60 s) is over
        assert q.drain().succeeded == 1
        assert shop.flaky_calls == [1, 2]

        everything = q.drain(with_scheduled=True)
        assert everything.succeeded == 1 and shop.sent == ["later@b.c", "tomorrow@b.c"]


def test_with_scheduled_alone_leaves_retries_waiting(shop: Shop) -> None:
    send_email, flaky = shop.tasks["send_email"], shop.tasks["flaky"]
    with pgqueue.testing.manual(shop.app) as q:
        flaky.enqueue(fail_times=1)
        assert q.drain().retried == 1
        send_email.options(delay=600).enqueue(to="x@b.c")
        assert q.drain(with_scheduled=True).succeeded == 1
        assert shop.flaky_calls == [1]
        assert q.drain(with_retries=True).succeeded == 1


def test_drain_runs_a_job_that_sorts_before_the_one_that_enqueued_it(shop: Shop) -> None:
    """A handler enqueues an urgent job (a lower priority number than its own): the drain
    runs it too. On PostgreSQL the claim after the last claimed job's key does not see it, and
    the drain stops at the first empty claim, so that claim must have looked from the head."""
    send_email = shop.tasks["send_email"]

    @shop.app.task(name="escalate", queue="emails")
    def escalate() -> None:
        send_email.options(priority=0).enqueue(to="urgent@b.c")

    with pgqueue.testing.manual(shop.app) as q:
        escalate.enqueue()
        assert q.drain().succeeded == 2
        assert shop.sent == ["urgent@b.c"]


def test_drain_counts_snoozes_cancels_and_fails(shop: Shop) -> None:
    with pgqueue.testing.manual(shop.app) as q:
        shop.tasks["snoozer"].enqueue()
        shop.tasks["canceller"].enqueue()
        shop.tasks["fails_hard"].enqueue()
        first = q.drain()
        assert (first.snoozed, first.cancelled, first.failed) == (1, 1, 1)
        rest = q.drain(with_retries=True)
        # two more snoozes are allowed (max_snoozes=2), the one after fails the job
        assert (rest.snoozed, rest.failed) == (1, 1)
        assert "snoozed too often" in (rest.outcomes[-1].error or "")


def test_drain_of_named_queues_only(shop: Shop) -> None:
    with pgqueue.testing.manual(shop.app) as q:
        shop.tasks["send_email"].enqueue(to="a@b.c")
        shop.tasks["whoami"].enqueue()
        assert q.drain(queues=["emails"]).succeeded == 1
        q.assert_enqueued("whoami")
        q.refute_enqueued("send_email")


async def test_drain_async_and_enqueue_async(shop: Shop) -> None:
    with pgqueue.testing.manual(shop.app) as q:
        await shop.tasks["send_email"].enqueue_async(to="async@b.c")
        q.assert_enqueued("send_email", args={"to": "async@b.c"})
        result = await q.drain_async()
        assert result.succeeded == 1 and shop.sent == ["async@b.c"]
    await shop.app.aclose()


# ---- inline mode ------------------------------------------------------------------------------
def test_inline_runs_at_enqueue_to_a_final_outcome(shop: Shop) -> None:
    with pgqueue.testing.inline(shop.app) as q:
        shop.tasks["send_email"].enqueue(to="now@b.c")
        assert shop.sent == ["now@b.c"]
        assert q.outcomes[-1].state == "succeeded"
        assert q.outcomes[-1].result == "sent to now@b.c"

        shop.tasks["flaky"].enqueue(fail_times=1)  # retried at once, succeeds on attempt 2
        assert [o.state for o in q.outcomes[-2:]] == ["retried", "succeeded"]
        assert shop.flaky_calls == [1, 2]

        shop.tasks["flaky"].enqueue(fail_times=9)  # three attempts, then archived
        assert [o.state for o in q.outcomes[-3:]] == ["retried", "retried", "failed"]
        assert q.outcomes[-1].error == "RuntimeError: boom 3"
        assert len(shop.dead) == 1

        # every job is recorded; none is waiting
        assert [j.task for j in q.enqueued_jobs(include_finished=True)] == [
            "send_email", "flaky", "flaky"]
        assert q.enqueued_jobs() == []
    assert shop.app.count("emails") == 0 and shop.app.count("default") == 0


def test_inline_sync_enqueue_inside_an_event_loop(shop: Shop) -> None:
    async def main() -> None:
        shop.tasks["send_email"].enqueue(to="loop@b.c")  # sync enqueue while a loop runs
        await shop.tasks["send_email"].enqueue_async(to="await@b.c")

    with pgqueue.testing.inline(shop.app) as q:
        asyncio.run(main())
        assert shop.sent == ["loop@b.c", "await@b.c"]
        assert [o.state for o in q.outcomes] == ["succeeded", "succeeded"]


def test_switching_mode_inside_one_harness(shop: Shop) -> None:
    with pgqueue.testing.manual(shop.app) as q:
        shop.tasks["send_email"].enqueue(to="waits@b.c")
        q.mode = "inline"
        shop.tasks["send_email"].enqueue(to="runs@b.c")
        assert shop.sent == ["runs@b.c"]
        q.assert_enqueued("send_email", args={"to": "waits@b.c"})


# ---- run_job --------------------------------------------------------------------------------
def test_run_job_outcomes(shop: Shop) -> None:
    with pgqueue.testing.manual(shop.app) as q:
        ok = q.run_job(shop.tasks["send_email"], {"to": "a@b.c"})
        assert (ok.state, ok.result) == ("succeeded", "sent to a@b.c")
        me = q.run_job("whoami", attempt=2, meta={"k": "v"})
        assert me.result == {"task": "whoami", "attempt": 2, "meta": {"k": "v"}}
        assert q.run_job("snoozer").state == "snoozed"
        assert q.run_job("snoozer").delay_s == 30
        assert q.run_job("canceller").state == "cancelled"
        hard = q.run_job("fails_hard")
        assert (hard.state, hard.error) == ("failed", "bad input")
        retry = q.run_job("flaky", {"fail_times": 1})
        assert (retry.state, retry.error, retry.delay_s) == ("retried", "RuntimeError: boom 1",
                                                             60.0)
        last = q.run_job("flaky", {"fail_times": 9}, attempt=3)
        assert last.state == "failed"
        timed_out = q.run_job("slow")
        assert (timed_out.state, timed_out.error) == ("retried", "timed out after 0.2 s")
        with pytest.raises(pgqueue.ValidationError, match="do not match"):
            q.run_job("send_email", {"too": "typo"})
        assert q.enqueued_jobs() == []
    assert shop.app.count("emails") == 0


# ---- PostgreSQL specifics -------------------------------------------------------------------
def test_manual_mode_in_your_transaction(clean: str) -> None:
    shop = _shop(pgqueue.App(database_url=clean))
    with pgqueue.testing.manual(shop.app) as q, psycopg.connect(clean) as conn:
        shop.tasks["send_email"].enqueue(to="tx@b.c", conn=conn)
        q.assert_enqueued("send_email", args={"to": "tx@b.c"})
        assert shop.app.count("emails") == 0  # not committed yet
        conn.commit()
        assert q.drain().succeeded == 1
    shop.app.close()


def test_harness_refuses_nesting_and_restores_the_driver() -> None:
    app = pgqueue.App(driver="memory")
    driver = app.driver
    with pgqueue.testing.manual(app), pytest.raises(pgqueue.PgQueueError, match="already"):
        pgqueue.testing.TestQueue(app).__enter__()
    assert app.driver is driver
    with pytest.raises(pgqueue.ValidationError, match="mode must be"):
        pgqueue.testing.TestQueue(app, "eager")  # type: ignore[arg-type]


def test_advance_refuses_going_back() -> None:
    app = pgqueue.App(driver="memory")
    with pgqueue.testing.manual(app) as q, pytest.raises(pgqueue.ValidationError,
                                                         match="seconds >= 0"):
        q.advance(-1)


def test_manual_mode_on_redis_and_time_travel_refused(redis_app: pgqueue.App) -> None:
    shop = _shop(redis_app)
    with pgqueue.testing.manual(shop.app) as q:
        shop.tasks["send_email"].enqueue(to="r@b.c")
        q.assert_enqueued("send_email", args={"to": "r@b.c"})
        assert q.drain().succeeded == 1 and shop.sent == ["r@b.c"]
        with pytest.raises(pgqueue.CapabilityError, match="cannot move jobs in time"):
            q.advance(60)
        with pytest.raises(pgqueue.CapabilityError, match="cannot move jobs in time"):
            q.drain(with_scheduled=True)
