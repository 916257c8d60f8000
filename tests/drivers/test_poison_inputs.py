"""Poison inputs, on every driver (issue 11, points 1-6): bad input is refused before anything is
written, with a ValidationError naming what is wrong (and, in a batch, the row); a stored job that
cannot be decoded fails alone while the jobs claimed with it run.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import pgqueue
from pgqueue.job import MAX_JSON_DEPTH, NewJob
from pgqueue.task import EARLIEST_RUN_AT, LATEST_RUN_AT
from tests.drivers.test_behaviour import claim, drain, needs, needs_delay

SURROGATE = "\ud800"


def nested(levels: int) -> dict[str, Any]:
    """An object nesting ``levels`` levels deep (the object itself is level 1)."""
    value: Any = []
    for _ in range(levels - 2):
        value = [value]
    return {"deep": value}


@pytest.fixture
def default_recursion_limit() -> Iterator[None]:
    """Python's default recursion limit (1,000) during the test. The limit is per process, and
    another test here may have raised it (mypy's API, in test_typing, sets 16,384): with a
    higher one, a row nested 5,000 levels decodes and is no longer the poison it stands for."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def live(app: pgqueue.App) -> int:
    return sum(app.count(q) for q in ("q", "default"))


# ---- 1. nesting depth ------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 985, 5_000])
async def test_args_nested_too_deeply_are_refused(driver_app: pgqueue.App, levels: int) -> None:
    app = driver_app
    with pytest.raises(pgqueue.ValidationError, match=f"more than {MAX_JSON_DEPTH} levels"):
        app.enqueue("t", nested(levels), queue="q")
    with pytest.raises(pgqueue.ValidationError, match="meta nest"):
        app.enqueue("t", {}, queue="q", meta=nested(levels))
    assert live(app) == 0
    job_id = app.enqueue("t", nested(MAX_JSON_DEPTH), queue="q")  # the limit itself is fine
    [job] = await claim(app)
    assert (job.id, job.args, job.decode_error) == (job_id, nested(MAX_JSON_DEPTH), None)


@pytest.mark.usefixtures("default_recursion_limit")
async def test_a_row_that_cannot_be_decoded_fails_alone(driver_app: pgqueue.App) -> None:
    """A row nested 5,000 levels deep, written around the App's validation (through the driver
    seam, as SQL or another client could), is claimed with good jobs: it ends in the archive
    with a reason saying why, the others run, and the worker lives on."""
    app = driver_app
    ran: list[int] = []

    @app.task(name="good", queue="q")
    def good(n: int) -> None:
        ran.append(n)

    deep = '{"a":' + "[" * 5_000 + "]" * 5_000 + "}"
    good_ids = app.enqueue_many("good", [{"n": i} for i in range(50)], queue="q")
    [poison] = app.driver.insert_many([NewJob("q", "good", deep, priority=0)])
    good_ids += app.enqueue_many("good", [{"n": i} for i in range(50, 100)], queue="q")
    worker = await drain(app, queues=["q"], concurrency=10, lease_s=2.0)

    assert sorted(ran) == list(range(100))  # each good job ran exactly once
    assert worker.counts == {"succeeded": 100, "failed": 1}
    [failed] = app.failed("q")
    assert failed.id == poison and poison not in good_ids
    assert "cannot be decoded" in failed.reason and "nested more deeply" in failed.reason
    assert app.get_failed(poison).reason == failed.reason  # the archive still reads
    assert app.count("q") == 0


# ---- 2. lone surrogates, 3. NULs -------------------------------------------------------------
@pytest.mark.parametrize(("args", "options", "match"), [
    ({"x": f"a{SURROGATE}b"}, {}, "args contain a lone surrogate"),
    ({f"k{SURROGATE}": 1}, {}, "args contain a lone surrogate"),
    ({"x": [{"y": "\udcff"}]}, {}, "args contain a lone surrogate"),
    ({}, {"meta": {"m": SURROGATE}}, "meta contain a lone surrogate"),
    ({}, {"unique_key": f"u{SURROGATE}"}, "unique_key contains a lone surrogate"),
    ({"x": "a\x00b"}, {}, "args contain a NUL"),
    ({"x\x00": 1}, {}, "args contain a NUL"),
    ({"x": "\\\x00"}, {}, "args contain a NUL"),
    ({}, {"meta": {"m": "\x00"}}, "meta contain a NUL"),
    ({}, {"unique_key": "u\x00"}, "unique_key"),
])
async def test_unstorable_text_is_refused(driver_app: pgqueue.App, args: dict[str, Any],
                                          options: dict[str, Any], match: str) -> None:
    app = driver_app
    with pytest.raises(pgqueue.ValidationError, match=match):
        app.enqueue("t", args, queue="q", **options)
    with pytest.raises(pgqueue.ValidationError, match=match):
        await app.enqueue_async("t", args, queue="q", **options)
    assert live(app) == 0


async def test_escaped_backslash_u0000_is_text_not_nul(driver_app: pgqueue.App) -> None:
    app = driver_app
    text = {"path": "C:\\u0000", "\\u0000": "\\\\u0000"}  # backslashes, not NULs
    key = "k\\u0000" if app.driver.capabilities.unique_keys else None
    job_id = app.enqueue("t", text, queue="q", meta={"m": "\\u0000"}, unique_key=key)
    [job] = await claim(app)
    assert (job.id, job.args, job.meta, job.unique_key) == (job_id, text, {"m": "\\u0000"},
                                                            key)


# ---- 4. times past the representable range ---------------------------------------------------
WEST = dt.timezone(dt.timedelta(hours=-5))


@pytest.mark.parametrize(("options", "named"), [
    ({"delay": 1e12}, "delay"),
    ({"delay": 1e15}, "delay"),
    ({"delay": dt.timedelta(days=999_999_999)}, "delay"),
    ({"run_at": dt.datetime(9999, 12, 31, 22, tzinfo=WEST)}, "run_at"),
    ({"run_at": dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)}, "run_at"),
    ({"run_at": dt.datetime(1, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))}, "run_at"),
])
async def test_times_past_the_representable_range_are_refused(
        driver_app: pgqueue.App, options: dict[str, Any], named: str) -> None:
    app = driver_app
    with pytest.raises(pgqueue.ValidationError, match=named):
        app.enqueue("t", queue="q", **options)
    with pytest.raises(pgqueue.ValidationError, match=rf"args_list\[0\]|{named}"):
        app.enqueue_many("t", [{}], queue="q", **options)
    assert live(app) == 0


async def test_the_latest_accepted_times_read_back(driver_app: pgqueue.App) -> None:
    app = driver_app
    needs(app, "job_lookup", "no lookup of a job by id")
    needs_delay(app, (LATEST_RUN_AT - dt.datetime.now(dt.UTC)).total_seconds())
    at = app.enqueue("t", queue="q", run_at=LATEST_RUN_AT)
    west = app.enqueue("t", queue="q", run_at=LATEST_RUN_AT.astimezone(WEST))
    far = (LATEST_RUN_AT - dt.datetime.now(dt.UTC)).total_seconds() - 86_400
    delayed = app.enqueue("t", queue="q", delay=far)
    for job_id in (at, west, delayed):
        job = app.get_job(job_id)
        assert job is not None and job.run_at is not None
        assert job.run_at.year == 9999
    assert app.sizes("q")["scheduled"] == 3
    nxt = await app.driver.next_run_at(["q"])  # what a worker reads to sleep until then
    assert nxt is not None and nxt.year == 9999
    earliest = app.enqueue("t", queue="q", run_at=EARLIEST_RUN_AT)
    [job] = await claim(app)  # long overdue: ready now
    assert job.id == earliest and job.run_at is not None
    assert job.run_at.astimezone(dt.UTC) == EARLIEST_RUN_AT


# ---- 5. wrong types and values of other arguments --------------------------------------------
@pytest.mark.parametrize("meta", [[1, 2], "text", 5, ["pair", "list"], [("k", "v")]])
async def test_meta_of_the_wrong_type(driver_app: pgqueue.App, meta: Any) -> None:
    with pytest.raises(pgqueue.ValidationError, match="meta must be a JSON object"):
        driver_app.enqueue("t", queue="q", meta=meta)
    assert live(driver_app) == 0


async def test_failed_limit_and_purge_before_are_checked(driver_app: pgqueue.App) -> None:
    app = driver_app
    for limit in (-1, 1.5, "3", True, 2**63):
        with pytest.raises(pgqueue.ValidationError, match="limit must be"):
            app.failed(limit=limit)  # type: ignore[arg-type]
        with pytest.raises(pgqueue.ValidationError, match="limit must be"):
            await app.failed_async(limit=limit)  # type: ignore[arg-type]
    assert app.failed(limit=0) == []
    naive = dt.datetime.now()
    for before in (naive, "2020-01-01", 0):
        with pytest.raises(pgqueue.ValidationError, match="timezone-aware"):
            app.purge_failed(before=before)  # type: ignore[arg-type]
        with pytest.raises(pgqueue.ValidationError, match="timezone-aware"):
            await app.purge_failed_async(before=before)  # type: ignore[arg-type]


# ---- 6. batches: the bad row named, all or nothing ---------------------------------------------
BAD_ROWS: list[tuple[dict[str, Any], str]] = [
    ({"x": SURROGATE}, "lone surrogate"),
    ({"x": "\x00"}, "NUL"),
    (nested(100), "levels"),
    ({"x": float("nan")}, "not JSON-serialisable"),
]


@pytest.mark.parametrize(("bad", "match"), BAD_ROWS)
async def test_enqueue_many_names_the_bad_row_and_writes_nothing(
        driver_app: pgqueue.App, bad: dict[str, Any], match: str) -> None:
    app = driver_app
    rows = [{"i": i} for i in range(6_000)]
    rows[5_000] = bad
    with pytest.raises(pgqueue.ValidationError, match=rf"args_list\[5000\]: .*{match}"):
        app.enqueue_many("t", rows, queue="q")
    with pytest.raises(pgqueue.ValidationError, match=rf"args_list\[5000\]: .*{match}"):
        await app.enqueue_many_async("t", iter(rows), queue="q")
    assert live(app) == 0


@pytest.mark.parametrize("bad", [
    NewJob("q", "t", '{"x":"' + SURROGATE + '"}'),
    NewJob("q", "t", '{"x":"\\u0000"}'),
    NewJob("q", "t", "{}", meta_json='{"m":' + "[" * 100 + "]" * 100 + "}"),
    NewJob("q", "t", "{}", unique_key="u\udcff"),
    NewJob("q", "t", "{}", delay_s=1e12),
    NewJob("q", "t", "{}", run_at=dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC)),
    NewJob("q", "bad task;", "{}"),
    NewJob("q", "t", "{}", priority=5_000),
])
async def test_insert_checks_every_row_first(driver_app: pgqueue.App, bad: NewJob) -> None:
    app = driver_app
    jobs = [app.build("t", {"i": i}, queue="q") for i in range(6_000)]
    jobs[5_000] = bad
    with pytest.raises(pgqueue.ValidationError, match=r"^jobs\[5000\]: "):
        app.insert(jobs)
    with pytest.raises(pgqueue.ValidationError, match=r"^jobs\[5000\]: "):
        await app.insert_async(jobs)
    assert live(app) == 0


async def test_a_large_batch_is_inserted_whole_in_order(driver_app: pgqueue.App) -> None:
    app = driver_app
    # the SQS emulator (moto) takes time in proportion to the queue's length per message sent:
    # 250 jobs (25 calls of 10) keep the test short there
    n = 250 if app.driver.name == "sqs" else 2_500
    ids = app.enqueue_many("t", [{"i": i} for i in range(n)], queue="q")
    assert len(set(ids)) == n and ids == sorted(ids)
    assert app.count("q") == n
    jobs = await claim(app, limit=3)
    if app.driver.capabilities.fifo:
        assert [j.args for j in jobs] == [{"i": 0}, {"i": 1}, {"i": 2}]
    else:
        assert len(jobs) == 3 and {j.id for j in jobs} <= set(ids)
