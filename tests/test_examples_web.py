"""The FastAPI and Flask recipes (examples/fastapi/, examples/flask/) through HTTP against a
real PostgreSQL: a request that fails leaves neither its row nor its job; one that succeeds
commits both, and a worker (in-process for FastAPI, a burst worker for Flask) runs the job.

Skipped without the ``web`` extra (``pip install -e '.[web]'``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

from tests.conftest import MakeDatabase
from tests.helpers import eventually

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(relative: str, name: str) -> ModuleType:
    """Import an example file under a unique module name (``main``/``app`` are too common)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _counts(dsn: str) -> tuple[int, int]:
    """(signups rows, live pgqueue jobs)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute("SELECT (SELECT count(*) FROM signups),"
                         " (SELECT count(*) FROM pgqueue.jobs)").fetchone()
    assert rows is not None
    return int(rows[0]), int(rows[1])


async def test_fastapi_request_transaction_carries_row_and_job(
        make_database: MakeDatabase) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")

    example = _load("fastapi/main.py", "pgqueue_example_fastapi")
    dsn = make_database(migrated=True)
    token = "example-dashboard-token-0123"
    app = example.create_app(dsn, run_worker=True, dashboard_token=token)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=transport, base_url="http://shop") as client:
        failed = await client.post("/signups", json={"email": "x@y.z", "fail": True})
        assert failed.status_code == 409
        assert _counts(dsn) == (0, 0)

        ok = await client.post("/signups", json={"email": "a@b.c"})
        assert ok.status_code == 200, ok.text
        body: dict[str, Any] = ok.json()
        assert (await client.get(f"/signups/{body['id']}")).json()["email"] == "a@b.c"
        queue = example.queue
        done = await eventually(lambda: queue.get_finished_async(body["job_id"]),
                                what="the in-process worker")
        assert done.state == "succeeded"
        assert done.result == f"welcome mail for signup {body['id']}"
        # pgqueue's dashboard, mounted at /jobs behind the token
        assert (await client.get("/jobs/")).status_code == 401
        page = await client.get("/jobs/", headers={"Authorization": f"Bearer {token}"})
        assert page.status_code == 200 and "emails" in page.text, page.text[:300]
    assert _counts(dsn) == (1, 0)


def test_flask_session_transaction_carries_row_and_job(make_database: MakeDatabase) -> None:
    pytest.importorskip("flask")
    example = _load("flask/app.py", "pgqueue_example_flask")
    dsn = make_database(migrated=True)
    client = example.create_app(dsn).test_client()

    failed = client.post("/signups", json={"email": "x@y.z", "fail": True})
    assert failed.status_code == 409
    assert _counts(dsn) == (0, 0)

    ok = client.post("/signups", json={"email": "a@b.c"})
    assert ok.status_code == 200, ok.text
    body = ok.get_json()
    assert _counts(dsn) == (1, 1)

    queue = example.queue
    asyncio.run(queue.worker(["emails"], burst=True).run())  # what `pgqueue worker` does
    done = queue.get_finished(body["job_id"])
    assert done is not None and done.result == f"welcome mail for signup {body['id']}"
    assert _counts(dsn) == (1, 0)
    queue.close()
