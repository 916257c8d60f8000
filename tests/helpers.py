"""Helpers shared by tests: import them from ``tests.helpers``.

- :func:`wait_for` (threads, sync tests) and :func:`eventually` (coroutines) wait until an
  observable condition holds -- a row, a counter, an event -- and fail with a clear message after
  a timeout. They are the only polling loops in the suite: a test never sleeps to synchronise.
- :func:`run_async` runs a coroutine from a sync test, in a loop of its own, and closes the
  App's pools of that loop before the loop goes.
- :func:`scalar` runs a query and returns the first column of its first row.
- :func:`truncate` empties the pgqueue tables of a database.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, overload

import psycopg
from psycopg import sql

import pgqueue
from pgqueue.drivers.postgres.driver import PostgresDriver

__all__ = ["eventually", "run_async", "scalar", "truncate", "wait_for"]

T = TypeVar("T")

#: first and longest pause between two checks of a condition (seconds)
_FIRST_DELAY = 0.002
_MAX_DELAY = 0.05

#: every pgqueue table a test may fill (the history's partitions go with their parent)
PGQUEUE_TABLES = ("jobs", "job_history", "failed_jobs", "queues", "queue_starts", "workers",
                  "schedules", "leases", "job_deps", "workflow_jobs", "job_steps")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Call ``predicate()`` until it returns something truthy, and return that value.

    Checks often at first (every 2 ms), then at most every 50 ms. Raises ``AssertionError``
    naming ``what`` if ``timeout`` seconds pass first. Blocks the calling thread: in a coroutine
    use :func:`eventually`.
    """
    deadline = time.monotonic() + timeout
    delay = _FIRST_DELAY
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY)


@overload
async def eventually(predicate: Callable[[], Awaitable[T]], timeout: float = ...,
                     what: str = ...) -> T: ...


@overload
async def eventually(predicate: Callable[[], T], timeout: float = ...,
                     what: str = ...) -> T: ...


async def eventually(predicate: Callable[[], Any], timeout: float = 30.0,
                     what: str = "condition") -> Any:
    """The coroutine twin of :func:`wait_for`: ``predicate`` may be a plain function or return
    an awaitable (an ``async def``); the event loop keeps running between checks, so a worker on
    the same loop makes progress while the test waits."""
    deadline = time.monotonic() + timeout
    delay = _FIRST_DELAY
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY)


def run_async(app: pgqueue.App, main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` for a sync test that uses ``app`` in it: ``app``'s async pools of
    that event loop are closed before the loop is (a pool left open on a loop that closes can
    hang the loop's shutdown); its sync pool stays usable."""
    async def run_then_close() -> T:
        try:
            return await main
        finally:
            await app.driver.aclose()

    return asyncio.run(run_then_close())


def close_app(app: pgqueue.App) -> None:
    """Close every pool of ``app``: the sync one, and the async ones of event loops that are
    still open and idle -- the session loop the async tests share. ``App.close`` leaves async
    pools to the loop that made them, so each test's App kept ~5 connections open until the
    garbage collector found it, and a run piled up to the server's 100 connections."""
    driver = app._driver
    if isinstance(driver, PostgresDriver):
        for loop in {key[0] for key in driver._apools}:
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(driver.aclose())
    app.close()


def scalar(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    """The first column of the first row of ``query`` (``None`` when it returns no row)."""
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def truncate(dsn: str, schema: str = "pgqueue") -> None:
    """Empty the pgqueue tables of ``schema`` in the database at ``dsn``.

    ``DELETE`` rather than ``TRUNCATE``: with a few rows it is several times faster (no new
    relation files, no lock on the whole table that waits for other sessions to finish).
    Sequences keep counting, as they would in production.
    """
    with psycopg.connect(dsn, autocommit=True) as c, c.transaction():
        for table in PGQUEUE_TABLES:
            c.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, table)))


def run_cli_main(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """Run ``pgqueue`` in this process (``pgqueue.cli.main``): (exit status, stdout, stderr)."""
    from pgqueue.cli import main  # the CLI is a top layer: only the tests that need it load it

    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, str(out), str(err)


def prepare_statement(conn: psycopg.Connection[Any], query: sql.Composed,
                      params: dict[str, Any]) -> str:
    """``PREPARE stmt`` of ``query`` (its named parameters as ``$n``, their types inferred by
    the server), and the ``EXECUTE`` of it with ``params`` as literals."""
    text = query.as_string(conn)
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    numbered = re.sub(r"%\((\w+)\)s", number, text)
    conn.execute("DEALLOCATE ALL")
    conn.execute(f"PREPARE stmt AS {numbered}")
    literals = [sql.Literal(params[n]).as_string(conn) for n in names]
    return f"EXECUTE stmt({', '.join(literals)})"
