"""Enqueue: joins the caller's transaction (psycopg sync/async, SQLAlchemy Session/AsyncSession),
notifies only at commit, validates input, bulk paths, unique keys."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pydantic
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import pgqueue
from tests.helpers import run_async, scalar

CHANNEL = "pgqueue.jobs"


#: the listening connections of the running test, closed after it (``_close_listeners``)
_LISTENERS: list[psycopg.Connection[Any]] = []


@pytest.fixture(autouse=True)
def _close_listeners() -> Iterator[None]:
    yield
    while _LISTENERS:
        _LISTENERS.pop().close()


def listener(dsn: str) -> psycopg.Connection[Any]:
    c = psycopg.connect(dsn, autocommit=True)
    _LISTENERS.append(c)
    c.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
    return c


def pending_notifications(c: psycopg.Connection[Any]) -> list[str]:
    """Notifications already delivered to ``c`` (a round trip flushes them in)."""
    c.execute("SELECT 1")
    return [n.payload for n in c.notifies(timeout=0.0, stop_after=100)]


def count_jobs(conn: psycopg.Connection[Any], queue: str = "q") -> int:
    return int(scalar(conn, "SELECT count(*) FROM pgqueue.jobs WHERE queue = %s", queue))


def test_psycopg_rollback_leaves_no_job_and_no_notification(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    lis = listener(clean)
    with psycopg.connect(clean) as c:
        app.enqueue("t", {"a": 1}, queue="q", conn=c)
        assert count_jobs(conn) == 0  # not visible before commit
        c.rollback()
    assert count_jobs(conn) == 0
    assert pending_notifications(lis) == []


def test_psycopg_commit_one_job_notification_after_commit(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    lis = listener(clean)
    with psycopg.connect(clean) as c:
        c.execute("CREATE TEMP TABLE orders (id int)")
        c.execute("INSERT INTO orders VALUES (1)")
        job_id = app.enqueue("t", {"a": 1}, queue="q", conn=c)
        assert pending_notifications(lis) == []  # nothing before commit
        c.commit()
    assert count_jobs(conn) == 1
    assert scalar(conn, "SELECT id FROM pgqueue.jobs") == job_id
    assert pending_notifications(lis) == ["q"]


async def test_psycopg_async_rollback_and_commit(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    lis = listener(clean)
    async with await psycopg.AsyncConnection.connect(clean) as c:
        await app.enqueue_async("t", {"a": 1}, queue="q", conn=c)
        await c.rollback()
        assert count_jobs(conn) == 0
        assert pending_notifications(lis) == []
        await app.enqueue_async("t", {"a": 2}, queue="q", conn=c)
        assert pending_notifications(lis) == []
        await c.commit()
    assert count_jobs(conn) == 1
    assert pending_notifications(lis) == ["q"]


def test_sqlalchemy_session_rollback_and_commit(
        app: pgqueue.App, clean: str, sa_url: str, conn: psycopg.Connection[Any]) -> None:
    lis = listener(clean)
    engine = sa.create_engine(sa_url)
    try:
        with Session(engine) as session:
            session.execute(sa.text("CREATE TEMP TABLE orders (id int)"))
            session.execute(sa.text("INSERT INTO orders VALUES (1)"))
            app.enqueue("t", {"a": 1}, queue="q", conn=session)
            session.rollback()
        assert count_jobs(conn) == 0
        assert pending_notifications(lis) == []
        with Session(engine) as session:
            app.enqueue("t", {"a": 1}, queue="q", conn=session)  # first statement of the session
            assert pending_notifications(lis) == []
            session.commit()
        assert count_jobs(conn) == 1
        assert pending_notifications(lis) == ["q"]
        with engine.connect() as sa_conn:  # a Core Connection, not yet begun
            app.enqueue("t", {"a": 3}, queue="q", conn=sa_conn)
            sa_conn.commit()
        assert count_jobs(conn) == 2
    finally:
        engine.dispose()


async def test_sqlalchemy_async_session_rollback_and_commit(
        app: pgqueue.App, clean: str, sa_url: str, conn: psycopg.Connection[Any]) -> None:
    lis = listener(clean)
    engine = create_async_engine(sa_url)
    try:
        async with AsyncSession(engine) as session:
            await app.enqueue_async("t", {"a": 1}, queue="q", conn=session)
            await session.rollback()
        assert count_jobs(conn) == 0
        assert pending_notifications(lis) == []
        async with AsyncSession(engine) as session:
            await session.execute(sa.text("SELECT 1"))
            await app.enqueue_async("t", {"a": 1}, queue="q", conn=session)
            assert pending_notifications(lis) == []
            await session.commit()
        assert count_jobs(conn) == 1
        assert pending_notifications(lis) == ["q"]
    finally:
        await engine.dispose()


def test_enqueue_many_notifies_once_per_queue(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    lis = listener(clean)
    ids = app.enqueue_many("t", [{"i": i} for i in range(500)], queue="q")
    ids += app.enqueue_many("t", [{"i": i} for i in range(3)], queue="r")
    assert len(ids) == len(set(ids)) == 503
    assert pending_notifications(lis) == ["q", "r"]
    rows = conn.execute("SELECT id, args->>'i' FROM pgqueue.jobs WHERE queue = 'q' ORDER BY id")
    assert [int(i) for _, i in rows] == list(range(500))  # ids returned in input order


@pytest.mark.slow
def test_bulk_enqueue_100k(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    ids = app.enqueue_many("bulk", ({"n": i} for i in range(100_000)), queue="bulk")
    assert len(ids) == 100_000
    assert count_jobs(conn, "bulk") == 100_000
    assert scalar(conn, "SELECT count(DISTINCT id) FROM pgqueue.jobs") == 100_000


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_bulk_copy_keeps_every_character_and_option(app: pgqueue.App,
                                                    conn: psycopg.Connection[Any],
                                                    is_async: bool) -> None:
    """The COPY path (a batch of 200 or more) writes COPY's text format itself: tabs, newlines,
    carriage returns and backslashes in args and meta, and every shared option, arrive as
    given; ids come back in input order."""
    import asyncio

    args = [{"s": f"a\tb\nc\\d\re \u00e9 \\u0000 {i}", "i": i} for i in range(300)]
    options: dict[str, Any] = {"queue": "q", "priority": 7, "max_attempts": 3, "timeout": 1.5,
                               "delay": dt.timedelta(seconds=30), "meta": {"m": "t\tab\\"}}
    if is_async:
        async def go() -> list[int]:
            try:
                return await app.enqueue_many_async("copy.task", args, **options)
            finally:
                await app.aclose()
        ids = asyncio.run(go())
    else:
        ids = app.enqueue_many("copy.task", args, **options)
    rows = conn.execute(
        "SELECT id, args, meta, priority, max_attempts, timeout_s, run_at - created_at, "
        "concurrency_key FROM pgqueue.jobs WHERE queue = 'q' ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ids
    assert [r[1] for r in rows] == args
    assert {(r[2]["m"], r[3], r[4], r[5], r[7]) for r in rows} == {("t\tab\\", 7, 3, 1.5, None)}
    assert all(dt.timedelta(seconds=29) < r[6] < dt.timedelta(seconds=31) for r in rows)


def test_bulk_copy_leaves_unneeded_columns_to_their_defaults(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    """A COPY batch whose jobs have no delay, run_at, timeout, meta or concurrency key leaves
    those columns out: the rows read as if they had been sent (run_at is the enqueuing
    transaction's clock, as a job without delay gets; meta {}, timeout and key NULL)."""
    with psycopg.connect(clean) as c:
        ids = app.enqueue_many("t", [{"i": i} for i in range(300)], queue="q", conn=c)
        now = scalar(c, "SELECT now()")
        c.commit()
    rows = conn.execute(
        "SELECT id, args, run_at, created_at, meta, timeout_s, concurrency_key, priority, "
        "max_attempts, state, attempt FROM pgqueue.jobs ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ids
    assert [r[1] for r in rows] == [{"i": i} for i in range(300)]
    assert all(r[2:] == (now, now, {}, None, None, 20, 5, "waiting", 0) for r in rows), rows[0]


def test_bulk_insert_of_mixed_jobs_sends_what_any_needs(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    """``App.insert`` of a large batch of differently built jobs: COPY sends each optional
    column that some job needs, and every job keeps its own value (or the default)."""
    when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    kinds: list[dict[str, Any]] = [
        {}, {"delay": 60}, {"run_at": when}, {"timeout": 2.5}, {"meta": {"k": "v\tw"}},
        {"priority": 3, "max_attempts": 9}]
    jobs = [app.build("t", {"i": i}, queue="q", **kinds[i % len(kinds)]) for i in range(600)]
    ids = app.insert(jobs)
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT id, args, run_at - created_at, meta, timeout_s, priority, max_attempts "
        "FROM pgqueue.jobs")}
    assert len(rows) == 600
    for i, job_id in enumerate(ids):
        args, wait, meta, timeout, priority, max_attempts = rows[job_id]
        kind = kinds[i % len(kinds)]
        assert args == {"i": i}
        if "delay" in kind:
            assert wait == dt.timedelta(seconds=60)
        elif "run_at" in kind:
            assert wait > dt.timedelta(hours=1)
        else:
            assert wait == dt.timedelta(0)
        assert meta == kind.get("meta", {})
        assert timeout == kind.get("timeout")
        assert (priority, max_attempts) == (kind.get("priority", 20), kind.get("max_attempts", 5))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_bulk_copy_with_a_bad_row_late_writes_nothing(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any], is_async: bool) -> None:
    """In pgqueue's own transaction a large batch's arguments are validated while COPY sends
    the rows before them: a bad row late in the batch stops the COPY and rolls the batch back
    (no row, no wake-up), the error names it, and the pooled connection serves the next
    batch."""
    import asyncio

    lis = listener(clean)
    rows: list[Any] = [{"i": i} for i in range(9_000)]
    rows[8_765] = {"i": float("nan")}
    good = [{"i": i} for i in range(500)]

    async def go() -> list[int]:
        try:
            with pytest.raises(pgqueue.ValidationError, match=r"args_list\[8765\]: .*JSON"):
                await app.enqueue_many_async("t", rows, queue="q")
            return await app.enqueue_many_async("t", good, queue="q")
        finally:
            await app.aclose()

    if is_async:
        ids = asyncio.run(go())
    else:
        with pytest.raises(pgqueue.ValidationError, match=r"args_list\[8765\]: .*JSON"):
            app.enqueue_many("t", rows, queue="q")
        ids = app.enqueue_many("t", good, queue="q")
    assert [r[0] for r in conn.execute("SELECT id FROM pgqueue.jobs ORDER BY id")] == ids
    assert pending_notifications(lis) == ["q"]  # the good batch's only


def test_bulk_enqueue_in_caller_transaction_rolls_back(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    with psycopg.connect(clean) as c:
        app.enqueue_many("t", [{"i": i} for i in range(1000)], queue="q", conn=c)
        c.rollback()
    assert count_jobs(conn) == 0


def test_delay_run_at_priority_defaults(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="send", queue="mail", priority=7, max_attempts=3)
    def send(to: str) -> None: ...

    a = send.enqueue(to="x")
    b = app.enqueue("send", {"to": "y"}, delay=60, priority=1)
    when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    c = app.enqueue("send", {"to": "z"}, run_at=when)
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT id, queue, priority, max_attempts, run_at > now() + interval '50 seconds'"
        " FROM pgqueue.jobs")}
    assert rows[a] == ("mail", 7, 3, False)
    assert rows[b] == ("mail", 1, 3, True)
    assert rows[c][3] is True


def test_unique_key_never_two_live_jobs(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    first = app.enqueue("t", {}, queue="q", unique_key="order-1")
    again = app.enqueue("t", {}, queue="q", unique_key="order-1")
    assert again == first  # documented: skipped, the live job's id is returned
    many = app.enqueue_many("t", [{}, {}], queue="q", unique_key="order-1")
    assert many == [first, first]
    assert count_jobs(conn) == 1
    other = app.enqueue("t", {}, queue="q", unique_key="order-2")
    assert other != first and count_jobs(conn) == 2


async def test_unique_key_held_returns_the_holder_on_every_path(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    """One job is inserted by its own small executors (sync and async, the caller's conn or
    the pool): each returns the live holder's id when the key is taken, and a new job's id in
    the caller's transaction otherwise."""
    first = app.enqueue("t", {}, queue="q", unique_key="k")
    with psycopg.connect(clean) as c:
        assert app.enqueue("t", {}, queue="q", unique_key="k", conn=c) == first
        mine = app.enqueue("t", {}, queue="q", unique_key="mine", conn=c)
        assert mine != first and count_jobs(conn) == 1  # not committed yet
    assert await app.enqueue_async("t", {}, queue="q", unique_key="k") == first
    async with await psycopg.AsyncConnection.connect(clean) as ac:
        assert await app.enqueue_async("t", {}, queue="q", unique_key="k", conn=ac) == first
        assert await app.enqueue_async("t", {}, queue="q", unique_key="mine", conn=ac) == mine
    assert count_jobs(conn) == 2


@pytest.mark.parametrize("finishes", [True, False], ids=["holder-finishes", "never-found"])
def test_unique_key_holder_finishing_between_insert_and_lookup(
        app: pgqueue.App, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch,
        finishes: bool) -> None:
    """The insert finds the key held, and the holder is gone before its id is looked up: the
    enqueue inserts again (the key is free now) instead of failing on a missing id; a holder
    never found after a few tries is a TransientDatabaseError that says to retry."""
    first = app.enqueue("t", {}, queue="q", unique_key="k")
    statements = copy.copy(app.driver.sql)  # type: ignore[attr-defined]
    # the look-up, as if the holder finished just before it (or could never be seen)
    statements.id_by_unique_key = sql.SQL(
        "WITH gone AS (DELETE FROM pgqueue.jobs WHERE unique_key = %(unique_key)s AND {} "
        "RETURNING id) SELECT id FROM gone WHERE false").format(sql.Literal(finishes))
    monkeypatch.setattr(app.driver, "sql", statements)
    def sync_enqueue() -> Any:
        return app.enqueue("t", {}, queue="q", unique_key="k")

    def async_enqueue() -> Any:
        return run_async(app, app.enqueue_async("t", {}, queue="q", unique_key="k"))

    for enqueue in (sync_enqueue, async_enqueue):
        if finishes:
            new = enqueue()
            assert new != first and count_jobs(conn) == 1
            first = new
        else:
            with pytest.raises(pgqueue.TransientDatabaseError, match="retry the enqueue"):
                enqueue()
            assert count_jobs(conn) == 1


@dataclasses.dataclass
class EmailArgs:
    to: str
    subject: str = "hi"


def test_typed_arguments_validated_at_enqueue(app: pgqueue.App,
                                              conn: psycopg.Connection[Any]) -> None:
    @app.task(name="typed")
    def typed(args: EmailArgs) -> None: ...

    typed.enqueue(EmailArgs(to="a@b.c"))
    typed.enqueue(to="a@b.c", subject="x")  # type: ignore[call-overload]  # model fields: runtime only
    with pytest.raises(pgqueue.ValidationError, match="not a valid EmailArgs"):
        typed.enqueue(too="a@b.c")  # type: ignore[call-overload]
    assert count_jobs(conn, "default") == 2


class PydArgs(pydantic.BaseModel):
    n: int


def test_pydantic_arguments(app: pgqueue.App) -> None:
    @app.task(name="pyd")
    def pyd(args: PydArgs) -> None: ...

    pyd.enqueue(n=3)  # type: ignore[call-overload]  # model fields: runtime only
    with pytest.raises(pgqueue.ValidationError):
        pyd.enqueue(n="not a number")  # type: ignore[call-overload]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"args": {"x": object()}}, "not JSON-serialisable"),
    ({"args": {"x": float("nan")}}, "not JSON-serialisable"),
    ({"args": {"x": "a\x00b"}}, "NUL"),
    ({"args": {"x": "a\ud800b"}}, "lone surrogate"),
    ({"args": {"x": [[[[]]]] * 2, "y": {"z": [[{}]]}}, "meta": {"m": ["deep"] * 3},
      "unique_key": "\udc80"}, "unique_key contains a lone surrogate"),
    ({"meta": [("k", "v")]}, "meta must be a JSON object"),
    ({"meta": "text"}, "meta must be a JSON object"),
    ({"delay": 1e12}, "delay of 1e\\+12 s"),
    ({"delay": 1e15}, "delay of 1e\\+15 s"),
    ({"args": [1, 2]}, "must be a JSON object"),
    ({"priority": -1}, "priority must be"),
    ({"priority": 1001}, "priority must be"),
    ({"priority": True}, "priority must be"),
    ({"delay": -5}, "delay must be"),
    ({"delay": float("nan")}, "delay must be"),
    ({"max_attempts": 0}, "max_attempts must be"),
    ({"timeout": -1}, "timeout must be"),
    ({"run_at": dt.datetime(2030, 1, 1)}, "timezone-aware"),
    ({"delay": 1, "run_at": dt.datetime.now(dt.UTC)}, "not both"),
    ({"queue": "bad queue;"}, "invalid queue name"),
    ({"queue": "x" * 10_000}, "invalid queue name"),
    ({"queue": "q\x00"}, "invalid queue name"),
    ({"unique_key": ""}, "unique_key"),
    ({"colour": "red"}, "unknown enqueue option"),
])
def test_bad_input_specific_errors_nothing_written(
        app: pgqueue.App, conn: psycopg.Connection[Any], kwargs: dict[str, Any],
        match: str) -> None:
    args = kwargs.pop("args", {})
    with pytest.raises(pgqueue.ValidationError, match=match):
        app.enqueue("t", args, **kwargs)
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0


@pytest.mark.parametrize("name", ["x'; DROP TABLE pgqueue.jobs; --", "a\"b", "", "q\x00",
                                  "y" * 10_000, "naïve space"])
def test_hostile_task_names_rejected(app: pgqueue.App, conn: psycopg.Connection[Any],
                                     name: str) -> None:
    with pytest.raises(pgqueue.ValidationError):
        app.enqueue(name, {})
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0
    assert scalar(conn, "SELECT to_regclass('pgqueue.jobs') IS NOT NULL") is True


@pytest.mark.parametrize("schema", ["pgqueue; DROP TABLE x", 'a"b', "Upper", "", "s" * 100,
                                    "x\x00", "pg_catalog"])
def test_hostile_schema_names_rejected(schema: str) -> None:
    with pytest.raises(pgqueue.ValidationError, match="invalid schema name"):
        pgqueue.App(database_url="postgresql://localhost/x", schema=schema)


def test_strict_mode_unknown_task(clean: str, conn: psycopg.Connection[Any]) -> None:
    app = pgqueue.App(database_url=clean, strict=True)

    @app.task(name="known")
    def known() -> None: ...

    with pytest.raises(pgqueue.UnknownTaskError, match=r"unknown task 'nope'.*known"):
        app.enqueue("nope", {})
    app.enqueue("known")
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 1
    app.close()


def test_function_signature_checked(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="sig")
    def sig(to: str, subject: str = "") -> None: ...

    with pytest.raises(pgqueue.ValidationError, match="do not match"):
        sig.enqueue(too="x")  # type: ignore[call-overload]
    with pytest.raises(pgqueue.ValidationError, match="do not match"):
        app.enqueue("sig", {})
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0


def test_sync_connection_passed_to_async_is_rejected(app: pgqueue.App, clean: str) -> None:
    with psycopg.connect(clean) as c, pytest.raises(pgqueue.ValidationError, match="sync"):
        import asyncio

        asyncio.run(app.enqueue_async("t", {}, conn=c))  # type: ignore[arg-type]


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGQUEUE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(pgqueue.ConfigurationError, match="no database configured"):
        pgqueue.App().enqueue("t", {})
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", "mysql://x@y/z")
    with pytest.raises(pgqueue.ConfigurationError, match=r"PGQUEUE_DATABASE_URL.*not a PostgreSQL"):
        pgqueue.App()
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", "host=localhost port=notaport dbname")
    with pytest.raises(pgqueue.ConfigurationError, match="malformed"):
        pgqueue.App()


def test_unreachable_and_unmigrated_database(make_database: Any) -> None:
    down = pgqueue.App(database_url="postgresql://postgres@127.0.0.1:1/x")
    with pytest.raises(pgqueue.DatabaseUnavailableError, match="did not answer"):
        down.driver.check()
    fresh = pgqueue.App(database_url=make_database())
    with pytest.raises(pgqueue.NotMigratedError, match="pgqueue migrate"):
        fresh.driver.check()
    with pytest.raises(pgqueue.NotMigratedError, match="pgqueue migrate"):
        fresh.enqueue("t", {})
    assert fresh.database_url is not None
    with (psycopg.connect(fresh.database_url) as c,  # the caller's connection: the same error
          pytest.raises(pgqueue.NotMigratedError, match="pgqueue migrate")):
        fresh.enqueue("t", {}, conn=c)
    closed = psycopg.connect(fresh.database_url)
    closed.close()
    with pytest.raises(pgqueue.DatabaseUnavailableError, match="closed"):
        fresh.enqueue("t", {}, conn=closed)
    fresh.close()


async def test_unmigrated_database_async(make_database: Any) -> None:
    fresh = pgqueue.App(database_url=make_database())
    assert fresh.database_url is not None
    with pytest.raises(pgqueue.NotMigratedError, match="pgqueue migrate"):
        await fresh.enqueue_async("t", {})
    async with await psycopg.AsyncConnection.connect(fresh.database_url) as c:
        with pytest.raises(pgqueue.NotMigratedError, match="pgqueue migrate"):
            await fresh.enqueue_async("t", {}, conn=c)
    await fresh.driver.aclose()
    fresh.close()


@pytest.mark.parametrize("url", ["postgresql://a@h:99999/x", "postgresql://a@h:abc/x",
                                 "host=h port=5x"])
def test_bad_ports_are_named(url: str) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="invalid port"):
        pgqueue.App(database_url=url)
