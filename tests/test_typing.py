"""The public API's types hold: mypy accepts the right ``conn`` kinds and rejects the wrong ones,
and a task's ``enqueue`` is checked against its handler's parameters (``Task`` is generic over
them).

One mypy run over a small snippet: every line marked ``# E`` must be reported, and no other.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = '''
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

import pgqueue


def sync_ok(app: pgqueue.App, c: psycopg.Connection[Any], sc: sqlalchemy.Connection,
            s: Session, task: pgqueue.Task) -> None:
    app.enqueue("t", conn=c)
    app.enqueue("t", {"a": 1}, conn=sc, priority=1, delay=5)
    app.enqueue_many("t", [{}], conn=s, queue="q")
    app.insert([app.build("t")], conn=c)
    app.complete(s)
    task.enqueue(conn=sc)
    task.options(priority=3).enqueue(conn=c)
    app.enqueue("t")


async def async_ok(app: pgqueue.App, c: psycopg.AsyncConnection[Any], sc: AsyncConnection,
                   s: AsyncSession, task: pgqueue.Task) -> None:
    await app.enqueue_async("t", conn=c)
    await app.enqueue_many_async("t", [{}], conn=sc)
    await app.insert_async([app.build("t")], conn=s)
    await app.complete_async(c)
    await task.enqueue_async(conn=s)
    await task.options(queue="q").enqueue_async(conn=sc)


async def wrong(app: pgqueue.App, c: psycopg.Connection[Any], ac: psycopg.AsyncConnection[Any],
                s: Session, a_s: AsyncSession, task: pgqueue.Task[[], None]) -> None:
    app.enqueue("t", conn=ac)  # E
    app.enqueue("t", conn=a_s)  # E
    app.enqueue("t", conn=object())  # E
    app.insert([], conn=ac)  # E
    app.complete(ac)  # E
    await app.enqueue_async("t", conn=c)  # E
    await app.enqueue_many_async("t", [], conn=s)  # E
    await app.complete_async(s)  # E
    task.enqueue(conn=ac)  # E
    await task.enqueue_async(conn=c)  # E
    app.enqueue("t", priority="high")  # E
    app.enqueue("t", colour="red")  # E
    task.options(delay="soon")  # E


def worker_is_typed(app: pgqueue.App) -> pgqueue.Worker:
    return app.worker(["q"])


app = pgqueue.App(driver="memory")


@app.task(name="send_email", queue="emails")
def send_email(to: str, subject: str = "hi") -> str:
    return to


@app.task
async def resize(image_id: int, *, width: int) -> None: ...


@dataclass
class Welcome:
    to: str


@app.task(name="welcome")
def welcome(args: Welcome) -> None: ...


def typed_enqueue(c: psycopg.Connection[Any], ac: psycopg.AsyncConnection[Any]) -> None:
    send_email.enqueue(to="a@b.c")
    send_email.enqueue(to="a@b.c", subject="yo")
    send_email.enqueue("a@b.c")
    send_email.options(delay=5).enqueue(to="a@b.c")
    send_email.enqueue(to="a@b.c", conn=c)
    welcome.enqueue(Welcome(to="a@b.c"))
    text: str = send_email("a@b.c")
    send_email.enqueue(to=1)  # E
    send_email.enqueue()  # E
    send_email.enqueue(to="a@b.c", colour="red")  # E
    send_email.options(priority=1).enqueue(subject="no to")  # E
    send_email.enqueue(to="a@b.c", conn=ac)  # E
    welcome.enqueue(Welcome)  # E
    number: int = send_email("a@b.c")  # E
    resize.enqueue(1)  # E


async def typed_enqueue_async(ac: psycopg.AsyncConnection[Any]) -> None:
    await resize.enqueue_async(1, width=2)
    await resize.enqueue_async(image_id=1, width=2, conn=ac)
    await resize.enqueue_async(image_id="1", width=2)  # E
    await resize.options(queue="q").enqueue_async(width=2)  # E
'''


def test_conn_kinds_are_checked_by_mypy(tmp_path: Path) -> None:
    source = textwrap.dedent(SNIPPET)
    path = tmp_path / "snippet.py"
    path.write_text(source)
    expected = {n for n, line in enumerate(source.splitlines(), 1) if line.endswith("# E")}
    stdout, stderr, _ = api.run([
        "--strict", "--no-error-summary", "--show-error-codes", "--hide-error-context",
        "--cache-dir", str(ROOT / ".mypy_cache"), "--config-file", str(ROOT / "pyproject.toml"),
        str(path)])
    reported = {int(m.group(1)) for m in re.finditer(r"snippet\.py:(\d+): error", stdout)}
    assert reported == expected, f"mypy said:\n{stdout}{stderr}"
