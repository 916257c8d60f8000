"""A bad job fails alone: handlers that raise SystemExit/KeyboardInterrupt, hooks that do,
results and error text PostgreSQL cannot store, huge tracebacks, a hung handler at shutdown,
a worker started against a server that is not there."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.errors import PgQueueError
from tests.helpers import scalar


def _drain(app: pgqueue.App, queue: str, *, concurrency: int = 10) -> pgqueue.Worker:
    worker = app.worker([queue], concurrency=concurrency, burst=True, poll_interval=0.05)
    asyncio.run(worker.run())
    return worker


def _final(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT state, count(*) FROM pgqueue.job_history GROUP BY 1").fetchall()
    out = {r[0]: r[1] for r in rows}
    out["archived"] = scalar(conn, "SELECT count(*) FROM pgqueue.failed_jobs")
    out["live"] = scalar(conn, "SELECT count(*) FROM pgqueue.jobs")
    return out


@pytest.mark.parametrize("exit_exc", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("timeout", [None, 5.0])
def test_async_handler_raising_systemexit_fails_alone(
        app: pgqueue.App, conn: psycopg.Connection[Any], exit_exc: type[BaseException],
        timeout: float | None) -> None:
    ran: list[int] = []

    @app.task(name="good", queue="q")
    async def good(n: int) -> None:
        ran.append(n)

    @app.task(name="exits", queue="q", max_attempts=1, timeout=timeout)
    async def exits() -> None:
        raise exit_exc(3)

    bad = app.enqueue("exits", {})
    app.enqueue_many("good", [{"n": i} for i in range(30)])
    _drain(app, "q")
    assert sorted(ran) == list(range(30))
    assert _final(conn) == {"succeeded": 30, "archived": 1, "live": 0}
    reason = scalar(conn, "SELECT reason FROM pgqueue.failed_jobs WHERE id = %s", bad)
    assert exit_exc.__name__ in reason and "cannot stop its worker" in reason


@pytest.mark.parametrize("kind", ["sync-hook", "async-hook", "failed-method"])
def test_dead_letter_hook_raising_systemexit_does_not_stop_the_worker(
        app: pgqueue.App, conn: psycopg.Connection[Any], kind: str) -> None:
    if kind == "sync-hook":
        def hook(job: pgqueue.Job, exc: BaseException) -> None:
            raise SystemExit(1)
        app.on_dead_letter("q", hook)
    elif kind == "async-hook":
        async def ahook(job: pgqueue.Job, exc: BaseException) -> None:
            raise SystemExit(1)
        app.on_dead_letter("q", ahook)

    @app.task(name="bad", queue="q", max_attempts=1)
    class Bad:
        def handle(self) -> None:
            raise ValueError("no")

        def failed(self, exc: BaseException) -> None:
            if kind == "failed-method":
                raise SystemExit(1)

    @app.task(name="good", queue="q")
    def good(n: int) -> None:
        pass

    app.enqueue("bad", {})
    app.enqueue_many("good", [{"n": i} for i in range(20)])
    _drain(app, "q")
    assert _final(conn) == {"succeeded": 20, "archived": 1, "live": 0}


@pytest.mark.parametrize("bad_text", ["nul\x00here", "lone \ud800 surrogate"])
def test_unstorable_result_and_error_text_fail_alone(
        app: pgqueue.App, conn: psycopg.Connection[Any], bad_text: str) -> None:
    runs: dict[int, int] = {}

    @app.task(name="t", queue="q", max_attempts=1)
    def t(n: int, mode: str) -> Any:
        job_id = pgqueue.current_job().id
        runs[job_id] = runs.get(job_id, 0) + 1
        if mode == "result":
            return {"text": bad_text, bad_text: [bad_text]}
        if mode == "error":
            raise ValueError(bad_text)
        return n

    good = app.enqueue_many("t", [{"n": i, "mode": "ok"} for i in range(20)])
    res = app.enqueue("t", {"n": 0, "mode": "result"})
    err = app.enqueue("t", {"n": 0, "mode": "error"})
    _drain(app, "q", concurrency=25)
    assert set(runs.values()) == {1} and len(runs) == 22  # nobody ran twice
    assert _final(conn) == {"succeeded": 21, "archived": 1, "live": 0}
    assert scalar(conn, "SELECT count(*) FROM pgqueue.job_history WHERE id = ANY(%s)",
                  good) == 20
    stored = scalar(conn, "SELECT result FROM pgqueue.job_history WHERE id = %s", res)
    cleaned = bad_text.replace("\x00", "\ufffd").replace("\ud800", "\ufffd")
    assert stored == {"text": cleaned, cleaned: [cleaned]}
    reason = scalar(conn, "SELECT reason FROM pgqueue.failed_jobs WHERE id = %s", err)
    assert reason == f"ValueError: {cleaned}"


def test_escaped_backslash_u0000_result_is_stored_as_is(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="t", queue="q")
    def t() -> str:
        return "\\u0000"

    job = app.enqueue("t", {})
    _drain(app, "q")
    assert scalar(conn, "SELECT result FROM pgqueue.job_history WHERE id = %s", job) == "\\u0000"


def test_huge_error_text_is_capped_keeping_head_and_tail(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="t", queue="q", max_attempts=1)
    def t() -> None:
        raise ValueError("HEAD" + "x" * 10_000_000 + "TAIL")

    job = app.enqueue("t", {})
    _drain(app, "q")
    reason, errors = conn.execute("SELECT reason, errors FROM pgqueue.failed_jobs WHERE id = %s",
                                  (job,)).fetchone()  # type: ignore[misc]
    assert len(reason) < 5_000 and reason.startswith("ValueError: HEAD")
    assert reason.endswith("TAIL") and "characters cut" in reason
    assert len(errors[-1]["traceback"]) < 40_000 and errors[-1]["traceback"].rstrip().endswith(
        "TAIL")


def test_start_in_thread_against_a_closed_port_raises_promptly() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = pgqueue.App(database_url=f"postgresql://postgres@127.0.0.1:{port}/x")

    @app.task(name="t")
    def t() -> None: ...

    worker = app.worker()
    with pytest.raises(PgQueueError):  # was: returned after 30 s as if started
        worker.start_in_thread()
    assert worker.join(10) and not worker.started.is_set()
    app.close()
