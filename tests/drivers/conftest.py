"""Fixtures of the driver suite: ``driver_app``, a fresh :class:`pgqueue.App` per test on each
driver, with clean storage.

- postgres: the worker's migrated database, emptied first (``clean`` from ``tests/conftest.py``);
- memory: a new :class:`~pgqueue.drivers.memory.MemoryDriver`;
- redis: ``PGQUEUE_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) with a unique key
  prefix per test, whose keys are deleted afterwards. Skipped only when Redis is unreachable.
- sqs: an SQS emulator (moto in server mode, a process per test process, on 127.0.0.1 and a
  free port; fake credentials, no AWS) with a unique queue prefix per test. Skipped only when boto3
  or moto[server] is not installed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

import pgqueue
from tests.helpers import wait_for

DRIVERS = ("postgres", "memory", "redis", "sqs")
#: the emulator's fake account: never real credentials, never AWS
SQS_CREDENTIALS = {"region": "us-east-1", "aws_access_key_id": "testing",
                   "aws_secret_access_key": "testing"}
REDIS_URL = os.environ.get("PGQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> tuple[str | None, str]:
    """(the test Redis URL, "") or (None, why it is unreachable)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return None, f"Redis is unreachable at {REDIS_URL} ({exc}); set PGQUEUE_TEST_REDIS_URL"
    finally:
        client.close()
    return REDIS_URL, ""


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (SCAN: test cleanup only)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_url: tuple[str | None, str]) -> Iterator[tuple[str, str]]:
    """(url, unique prefix) on the test Redis; the prefix's keys are deleted afterwards."""
    url, why = redis_url
    if url is None:
        pytest.skip(why)
    prefix = f"pgqtest:{uuid.uuid4().hex[:12]}"
    yield url, prefix
    delete_prefix(url, prefix)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[tuple[str | None, str]]:
    """(the URL of an SQS emulator this test process started, "") or (None, why not).

    moto's server runs as a process of its own (``python -m moto.server``), not as a thread of
    the tests: its work then never holds the GIL of the workers under test."""
    try:
        import boto3  # noqa: F401
        import flask  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        yield None, (f"the sqs driver's tests need boto3, moto and flask ({exc}); "
                     "pip install -e '.[dev]'")
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(port) or server.poll() is not None, 60,
                 "the SQS emulator to listen")
        if server.poll() is not None:
            yield None, f"the SQS emulator (python -m moto.server) exited with {server.returncode}"
            return
        yield f"http://127.0.0.1:{port}", ""
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def sqs_options(sqs_endpoint: tuple[str | None, str]) -> dict[str, str]:
    """Keyword arguments of an SqsDriver on the emulator with a queue prefix of its own."""
    url, why = sqs_endpoint
    if url is None:
        pytest.skip(why)
    return {**SQS_CREDENTIALS, "endpoint_url": url,
            "queue_prefix": f"t{uuid.uuid4().hex[:10]}-"}


def make_app(kind: str, request: pytest.FixtureRequest) -> pgqueue.App:
    if kind == "postgres":
        return pgqueue.App(database_url=request.getfixturevalue("clean"))
    if kind == "memory":
        from pgqueue.drivers.memory import MemoryDriver

        return pgqueue.App(driver=MemoryDriver())
    if kind == "sqs":
        from pgqueue.drivers.sqs import SqsDriver

        return pgqueue.App(driver=SqsDriver(**request.getfixturevalue("sqs_options")))
    from pgqueue.drivers.redis import RedisDriver

    url, prefix = request.getfixturevalue("redis_prefix")
    return pgqueue.App(driver=RedisDriver(url, prefix=prefix))


@pytest.fixture(params=DRIVERS)
def driver_kind_app(request: pytest.FixtureRequest) -> pgqueue.App:
    """The App of one driver (sync part: builds storage fixtures outside the event loop)."""
    return make_app(request.param, request)


@pytest.fixture
async def driver_app(driver_kind_app: pgqueue.App) -> AsyncIterator[pgqueue.App]:
    """A fresh App on each driver (postgres, memory, redis, sqs), with empty storage; its pools are
    closed afterwards."""
    yield driver_kind_app
    await driver_kind_app.aclose()
