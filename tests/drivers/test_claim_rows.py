"""What a claim hands the worker and what a batch of outcomes stores, on every driver: the
claimed :class:`pgqueue.Job` equals the job read back by id, and ``finish_many`` stores any
result text as it was given (the PostgreSQL driver reads claimed rows into jobs by a faster path
and sends the batch's arrays as literals it writes itself: quotes, backslashes, braces and
commas must come through unchanged)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import pgqueue
from pgqueue.drivers.base import Finish
from pgqueue.job import Job, build_job
from tests.drivers.test_behaviour import W, claim, needs

#: args and results that an array literal or a JSON decoder could get wrong
AWKWARD = [
    {},
    {"s": 'quote " and backslash \\ and \\" both'},
    {"s": "{braces}, commas, NULL", "n": None, "list": [1, "2", {"x": "}"}]},
    {"s": "naïve - ünïcödé ✓", "tab": "a\tb\nc"},
    {"nested": {"deeper": {"deepest": [True, False, 1.5]}}},
]


def test_build_job_is_a_frozen_job_equal_to_job() -> None:
    fields = [f.name for f in dataclasses.fields(Job)]
    values = dict(id=7, queue="q", task="t", args={"a": 1}, priority=3, attempt=2,
                  max_attempts=5, run_at=None, created_at=None, unique_key="k", timeout_s=1.5,
                  errors=[], meta={"m": 1}, state="running", decode_error=None, snoozes=1)
    assert list(values) == fields  # build_job takes every field, in Job's order
    built = build_job(**values)  # type: ignore[arg-type]
    made = Job(**values)  # type: ignore[arg-type]
    assert type(built) is Job
    assert built == made and hash(repr(built)) == hash(repr(made))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.attempt = 3  # type: ignore[misc]
    assert dataclasses.replace(built, attempt=3).attempt == 3


async def test_claimed_jobs_equal_the_jobs_read_back(driver_app: pgqueue.App) -> None:
    app = driver_app
    needs(app, "job_lookup", "no lookup of a job by id")
    ids = [app.enqueue("t", args, queue="q", priority=0,
                       meta={"k": i} if i % 2 else None)
           for i, args in enumerate(AWKWARD)]
    claimed = await claim(app, limit=len(ids))
    assert sorted(j.id for j in claimed) == sorted(ids)
    for job in claimed:
        assert type(job) is Job
        again = app.get_job(job.id)
        assert again is not None
        assert (job.args, job.meta, job.errors, job.queue, job.task, job.attempt) == (
            again.args, again.meta, again.errors, again.queue, again.task, again.attempt)
        assert job.args == AWKWARD[ids.index(job.id)]
        assert job.decode_error is None


async def test_finish_many_stores_awkward_results_as_given(driver_app: pgqueue.App) -> None:
    app = driver_app
    needs(app, "history", "no history of finished jobs")
    ids = [app.enqueue("t", queue="q") for _ in range(len(AWKWARD) + 2)]
    claimed = {j.id: j for j in await claim(app, limit=len(ids))}
    assert sorted(claimed) == sorted(ids)
    results = [json.dumps(r) for r in AWKWARD] + [None, json.dumps("just text, with \\ \"")]
    states = ["succeeded"] * (len(ids) - 1) + ["cancelled"]
    items = [Finish(i, state, result, claimed[i].attempt)
             for i, state, result in zip(ids, states, results, strict=True)]
    done = await app.driver.finish_many(items, worker_id=W)
    assert sorted(done) == sorted(ids)
    for i, state, result in zip(ids, states, results, strict=True):
        finished = app.get_finished(i)
        assert finished is not None
        assert finished.state == state
        assert finished.result == (None if result is None else json.loads(result))


async def test_finish_many_matches_each_outcome_to_its_job_in_any_order(
        driver_app: pgqueue.App) -> None:
    """A batch in no particular order (the completer writes outcomes as jobs end), with
    different states, results and attempts: each job gets its own outcome, and one whose
    attempt is not the claimed one (rescued and claimed again meanwhile) is left alone. The
    PostgreSQL driver finds each row's outcome by its place in the batch sorted by id."""
    app = driver_app
    needs(app, "history", "no history of finished jobs")
    ids = [app.enqueue("t", queue="q") for _ in range(7)]
    claimed = {j.id: j for j in await claim(app, limit=len(ids))}
    order = [ids[i] for i in (4, 0, 6, 2, 5, 1)]  # ids[3] is not in the batch
    items = [Finish(i, "cancelled" if n % 3 == 0 else "succeeded", json.dumps({"n": n}),
                    claimed[i].attempt) for n, i in enumerate(order)]
    items[-1].attempt = claimed[order[-1]].attempt + 1  # not the claimed attempt
    done = await app.driver.finish_many(items, worker_id=W)
    assert sorted(done) == sorted(order[:-1])
    for n, i in enumerate(order[:-1]):
        finished = app.get_finished(i)
        assert finished is not None
        assert (finished.state, finished.result) == (
            "cancelled" if n % 3 == 0 else "succeeded", {"n": n})
    for left in (ids[3], order[-1]):
        job = app.get_job(left)
        assert job is not None and job.state == "running"
