"""``pgqueue failed``: purge takes ids, --before, --queue, --task or --all and asks before
deleting more than one (issue 10, point 3); list says when it shows N of M, show prints
tracebacks as text, retry without an id hints at --all (point 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.helpers import run_async, scalar
from tests.helpers import run_cli_main as run

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.processes


@pytest.fixture
def archived(app: pgqueue.App) -> list[int]:
    """Six archived jobs: tasks a (queue q1, 3 jobs), b (q1, 2), a (q2, 1); ids in order."""
    @app.task(name="a", queue="q1", max_attempts=1)
    def a(n: int) -> None:
        raise KeyError(f"missing {n}")

    @app.task(name="b", queue="q1", max_attempts=1)
    def b(n: int) -> None:
        raise ValueError(f"bad {n}")

    ids = [*app.enqueue_many("a", [{"n": i} for i in range(3)]),
           *app.enqueue_many("b", [{"n": i} for i in range(2)]),
           app.enqueue("a", {"n": 9}, queue="q2")]
    run_async(app, app.worker(queues=["q1", "q2"], burst=True, concurrency=4).run())
    assert app.count_failed() == 6
    return ids


def failed_ids(conn: psycopg.Connection[Any]) -> set[int]:
    return {r[0] for r in conn.execute("SELECT id FROM pgqueue.failed_jobs")}


def test_purge_of_one_id_deletes_only_that_job(archived: list[int], clean: str,
                                               conn: psycopg.Connection[Any],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "failed", "purge", str(archived[1]), "--database-url", clean)
    assert status == 0 and "purged 1 failed jobs" in out  # one job: no question
    assert failed_ids(conn) == set(archived) - {archived[1]}


def test_purge_by_queue_task_and_before(archived: list[int], clean: str,
                                        conn: psycopg.Connection[Any],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "failed", "purge", "--before", "1h", "--yes",
                         "--database-url", clean)
    assert status == 0 and "nothing purged" in out  # every job failed just now
    status, out, _ = run(capsys, "failed", "purge", "--queue", "q1", "--task", "a", "--yes",
                         "--database-url", clean)
    assert status == 0 and "purged 3" in out
    assert failed_ids(conn) == set(archived[3:])
    status, out, _ = run(capsys, "failed", "purge", "--task", "b", "--yes",
                         "--database-url", clean)
    assert "purged 2" in out and failed_ids(conn) == {archived[5]}
    status, out, _ = run(capsys, "failed", "purge", "--before", "2999-01-01", "--yes",
                         "--database-url", clean)
    assert "purged 1" in out and failed_ids(conn) == set()


def test_purge_needs_a_filter_or_all_and_asks_before_deleting_many(
        archived: list[int], clean: str, conn: psycopg.Connection[Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "failed", "purge", "--database-url", clean)
    assert status == 2 and "--all" in err
    # no terminal to ask (stdin is not a tty under pytest): refused, nothing deleted
    status, _, err = run(capsys, "failed", "purge", "--all", "--database-url", clean)
    assert status == 2 and "would delete 6 failed jobs" in err and "--yes" in err
    status, _, err = run(capsys, "failed", "purge", "--all", "--queue", "q1",
                         "--database-url", clean)
    assert status == 2
    assert failed_ids(conn) == set(archived)
    status, out, _ = run(capsys, "failed", "purge", "--all", "--yes", "--database-url", clean)
    assert status == 0 and "purged 6" in out and failed_ids(conn) == set()


def test_purge_asks_on_a_terminal(archived: list[int], clean: str,
                                  conn: psycopg.Connection[Any]) -> None:
    """A real terminal (a pty) gets the question; "n" deletes nothing, "y" deletes."""
    import pty

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for answer, left in ((b"n\n", 6), (b"y\n", 4)):
        leader, follower = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "failed", "purge",
                                 "--task", "b", "--database-url", clean], stdin=follower,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                cwd=ROOT)
        os.close(follower)
        os.write(leader, answer)
        out, err = proc.communicate(timeout=60)
        os.close(leader)
        assert proc.returncode == 0, err
        assert b"Delete 2 failed jobs? [y/N]" in out
        assert len(failed_ids(conn)) == left


def test_list_says_when_it_shows_part_of_the_archive(archived: list[int], clean: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "failed", "list", "--limit", "4", "--database-url", clean)
    assert status == 0 and "showing the newest 4 of 6 failed jobs" in out
    status, out, _ = run(capsys, "failed", "list", "--database-url", clean)
    assert "showing" not in out and all(str(i) in out for i in archived)
    status, out, _ = run(capsys, "failed", "list", "--queue", "q1", "--limit", "2",
                         "--database-url", clean)
    assert "2 of 5" in out


def test_show_prints_the_traceback_as_text(archived: list[int], clean: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "failed", "show", str(archived[0]), "--database-url", clean)
    assert status == 0
    assert "Traceback (most recent call last):\n" in out  # real line breaks, not "\\n"
    assert "\\n" not in out
    assert "KeyError: 'missing 0'" in out and "task a, queue q1" in out
    status, out, _ = run(capsys, "failed", "show", str(archived[0]), "--json",
                         "--database-url", clean)
    assert json.loads(out)["id"] == archived[0]


def test_retry_without_an_id_hints_at_all(clean: str, capsys: pytest.CaptureFixture[str],
                                          conn: psycopg.Connection[Any]) -> None:
    status, _, err = run(capsys, "failed", "retry", "--database-url", clean)
    assert status == 2 and "--all" in err
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0
