"""The Django tasks backend, through the example project in examples/django/ on a real
PostgreSQL (Django's psycopg 3 backend): the view's transaction carries the job, the worker
command runs it, ``get_result`` reads it back; Django 6's ``django.tasks`` or the backport.

Skipped when Django (and, before Django 6, the ``django-tasks`` backport) is not installed:
``pip install -e '.[django,web]'``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import MakeDatabase

pytest.importorskip("django")
if importlib.util.find_spec("django.tasks") is None and importlib.util.find_spec(
        "django_tasks") is None:
    pytest.skip("needs Django >= 6 or the django-tasks backport", allow_module_level=True)

PROJECT = Path(__file__).resolve().parent.parent / "examples" / "django"


@pytest.fixture(scope="module")
def django_db(make_database: MakeDatabase) -> Iterator[str]:
    """The example project set up on a database of its own (pgqueue migrated by
    ``pgqueue_migrate``, the shop by ``migrate``); returns the DSN."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    dsn = make_database()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", dsn)
        mp.setenv("DJANGO_SETTINGS_MODULE", "shopsite.settings")
        mp.syspath_prepend(str(PROJECT))
        if not settings.configured:
            django.setup()
        call_command("migrate", verbosity=0)
        call_command("pgqueue_migrate")
        yield dsn
        from django.db import connections

        from pgqueue.contrib.django._compat import task_backends

        connections.close_all()
        task_backends["default"].app.close()


@pytest.fixture
def db(django_db: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection for assertions; shop orders and pgqueue jobs emptied first."""
    with psycopg.connect(django_db, autocommit=True) as c:
        c.execute("TRUNCATE shop_order, pgqueue.jobs, pgqueue.job_history, pgqueue.failed_jobs")
        yield c


def _count(c: psycopg.Connection[Any], table: str) -> int:
    row = c.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _drain(*queues: str) -> None:
    """``manage.py pgqueue_worker --burst`` on ``queues`` (default: both of the project's)."""
    from django.core.management import call_command

    args = [a for q in queues or ("default", "emails") for a in ("--queue", q)]
    call_command("pgqueue_worker", "--burst", *args)


def test_view_that_raises_leaves_neither_row_nor_job(db: psycopg.Connection[Any]) -> None:
    from django.test import Client

    response = Client(raise_request_exception=False).post("/orders/", {"item": "book",
                                                                       "fail": "1"})
    assert response.status_code == 500
    assert _count(db, "shop_order") == 0
    assert _count(db, "pgqueue.jobs") == 0


def test_view_commits_row_and_job_and_worker_result_reads_back(
        db: psycopg.Connection[Any]) -> None:
    from django.test import Client
    from shop.tasks import send_receipt

    from pgqueue.contrib.django._compat import TaskResultStatus

    response = Client().post("/orders/", {"item": "book"})
    assert response.status_code == 200
    body = response.json()
    assert _count(db, "shop_order") == 1
    job = db.execute("SELECT task, queue, priority FROM pgqueue.jobs").fetchall()
    assert job == [("shop.tasks.send_receipt", "emails", 90)]  # Django priority 10 -> 100 - 10

    assert send_receipt.get_result(body["result_id"]).status == TaskResultStatus.READY
    _drain()
    result = send_receipt.get_result(body["result_id"])
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == f"receipt for order {body['order_id']}: book"
    assert result.args == [body["order_id"]]
    assert Client().get(f"/orders/{body['result_id']}/receipt/").json()["status"] == "SUCCESSFUL"


def test_enqueue_outside_atomic_commits_at_once_and_rolls_back_inside(
        db: psycopg.Connection[Any]) -> None:
    from django.db import transaction
    from shop.tasks import send_receipt

    send_receipt.enqueue(1)  # Django's autocommit: visible to another connection at once
    assert _count(db, "pgqueue.jobs") == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        send_receipt.enqueue(2)
        raise RuntimeError("rollback")
    assert _count(db, "pgqueue.jobs") == 1


def test_run_after_queue_priority_and_context(db: psycopg.Connection[Any]) -> None:
    from shop.tasks import count_attempts, send_receipt

    from pgqueue.contrib.django._compat import TaskResultStatus

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    deferred = send_receipt.using(run_after=later, priority=-100).enqueue(7)
    row = db.execute("SELECT run_at, priority, queue FROM pgqueue.jobs WHERE id = %s",
                     (int(deferred.id),)).fetchone()
    assert row is not None and abs((row[0] - later).total_seconds()) < 0.01
    assert row[1:] == (200, "emails")

    ctx = count_attempts.enqueue("hello")
    _drain("default")  # burst waits for scheduled jobs too: leave the emails queue alone
    done = count_attempts.get_result(ctx.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == {"label": "hello", "attempt": 1, "id": ctx.id}
    assert send_receipt.get_result(deferred.id).status == TaskResultStatus.READY


async def test_aenqueue_and_aget_result(db: psycopg.Connection[Any]) -> None:
    from shop.tasks import send_receipt

    from pgqueue.contrib.django._compat import TaskResultStatus

    result = await send_receipt.aenqueue(3)
    assert _count(db, "pgqueue.jobs") == 1
    assert (await send_receipt.aget_result(result.id)).status == TaskResultStatus.READY


def test_failure_reads_back_with_the_exception_class(db: psycopg.Connection[Any]) -> None:
    from shop.tasks import OutOfStock, always_fails

    from pgqueue.contrib.django._compat import TaskResultDoesNotExist, TaskResultStatus

    result = always_fails.enqueue("lamp")
    db.execute("UPDATE pgqueue.jobs SET max_attempts = 1")
    _drain()
    failed = always_fails.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert [e.exception_class for e in failed.errors] == [OutOfStock]
    assert "lamp" in failed.errors[0].traceback
    with pytest.raises(TaskResultDoesNotExist):
        always_fails.get_result("999999")
    with pytest.raises(TaskResultDoesNotExist):
        always_fails.get_result("not-an-id")


def test_bad_options_raise_djangos_exceptions(django_db: str) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from shop.tasks import send_receipt

    from pgqueue.contrib.django import PgQueueBackend
    from pgqueue.contrib.django._compat import InvalidTaskBackendError, InvalidTaskError

    with pytest.raises(InvalidTaskBackendError, match=r"unsupported option.*NOPE"):
        PgQueueBackend("x", {"OPTIONS": {"NOPE": 1}})
    with pytest.raises(ImproperlyConfigured, match="not in DATABASES"):
        PgQueueBackend("x", {"OPTIONS": {"DATABASE": "missing"}})
    with pytest.raises(InvalidTaskBackendError, match="max_attempts"):
        PgQueueBackend("x", {"OPTIONS": {"MAX_ATTEMPTS": 0}})
    with pytest.raises(InvalidTaskBackendError, match="schema"):
        PgQueueBackend("x", {"OPTIONS": {"SCHEMA": "bad schema!"}})
    with pytest.raises(InvalidTaskError):
        send_receipt.using(queue_name="unknown")  # not in the backend's QUEUES
    with pytest.raises(InvalidTaskError):
        send_receipt.using(priority=101)
    assert os.environ.get("DJANGO_SETTINGS_MODULE") == "shopsite.settings"
    assert sys.modules["shopsite.settings"].TASKS["default"]["OPTIONS"]["SCHEMA"] == "pgqueue"
