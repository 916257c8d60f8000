"""``pgqueue enqueue`` and ``App.enqueue`` with task names: the task's queue and signature with
``--app``, the queue said without it, unknown names refused where tasks are known (issue 10,
points 4 and 5)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.helpers import run_cli_main as run
from tests.helpers import scalar

SHOP = "tests.apps.cli_shop:app"


def test_with_app_the_job_goes_to_the_tasks_queue(clean: str, conn: psycopg.Connection[Any],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "enqueue", "send_confirmation", "--app", SHOP,
                           "--database-url", clean, "--args", '{"order_id": 42}', "--json")
    assert status == 0, err
    shown = json.loads(out)
    assert (shown["queue"], shown["task"]) == ("emails", "send_confirmation")
    row = conn.execute("SELECT queue, args FROM pgqueue.jobs WHERE id = %s",
                       (shown["id"],)).fetchone()
    assert row == ("emails", {"order_id": 42})
    assert "note:" not in err  # nothing to warn about: the app checked it


def test_with_app_the_arguments_are_checked(clean: str, conn: psycopg.Connection[Any],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # the README's old example args: accepted unchecked before, then failed 5 times
    status, _, err = run(capsys, "enqueue", "send_confirmation", "--app", SHOP,
                         "--database-url", clean, "--args", '{"to": "a@b.c"}')
    assert status == 2 and "do not match" in err and "Traceback" not in err
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0


def test_with_app_an_unknown_task_is_refused(clean: str, conn: psycopg.Connection[Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "enqueue", "nosuchtask", "--app", SHOP,
                         "--database-url", clean)
    assert status == 2
    assert "nosuchtask" in err and "send_confirmation" in err
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 0


def test_without_app_the_output_says_which_queue(clean: str, conn: psycopg.Connection[Any],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "enqueue", "send_confirmation", "--database-url", clean,
                           "--args", '{"order_id": 1}')
    assert status == 0
    assert "queue 'default'" in out
    assert "--app" in err and "not checked" in err
    job_id = int(out.split()[2])
    assert scalar(conn, "SELECT queue FROM pgqueue.jobs WHERE id = %s", job_id) == "default"


def test_app_with_tasks_refuses_unknown_names_by_default(clean: str,
                                                         conn: psycopg.Connection[Any]) -> None:
    app = pgqueue.App(database_url=clean)
    try:
        app.enqueue("anything.goes", {})  # no task registered: a producer for other workers

        @app.task(name="send_email", queue="emails")
        def send_email(to: str) -> None: ...

        with pytest.raises(pgqueue.UnknownTaskError, match="did you mean 'send_email'"):
            app.enqueue("send_emial", {"to": "a@b.c"})
        with pytest.raises(pgqueue.UnknownTaskError):
            app.enqueue_many("no_such_task", [{}])
        assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 1
        app.strict = False  # explicit: tasks of other services too
        app.enqueue("other.service.task", {})
        assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs") == 2
    finally:
        app.close()
