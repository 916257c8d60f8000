"""Fixtures of the driver suite: ``driver_app``, a fresh :class:`pgqueue.App` per test on each
driver, with clean storage.

- postgres: the worker's migrated database, emptied first (``clean`` from ``tests/conftest.py``);
- memory: a new :class:`~pgqueue.drivers.memory.MemoryDriver`;
- redis: ``PGQUEUE_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) with a unique key
  prefix per test, whose keys are deleted afterwards. Skipped only when Redis is unreachable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

import pgqueue

DRIVERS = ("postgres", "memory", "redis")
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


def make_app(kind: str, request: pytest.FixtureRequest) -> pgqueue.App:
    if kind == "postgres":
        return pgqueue.App(database_url=request.getfixturevalue("clean"))
    if kind == "memory":
        from pgqueue.drivers.memory import MemoryDriver

        return pgqueue.App(driver=MemoryDriver())
    from pgqueue.drivers.redis import RedisDriver

    url, prefix = request.getfixturevalue("redis_prefix")
    return pgqueue.App(driver=RedisDriver(url, prefix=prefix))


@pytest.fixture(params=DRIVERS)
def driver_kind_app(request: pytest.FixtureRequest) -> pgqueue.App:
    """The App of one driver (sync part: builds storage fixtures outside the event loop)."""
    return make_app(request.param, request)


@pytest.fixture
async def driver_app(driver_kind_app: pgqueue.App) -> AsyncIterator[pgqueue.App]:
    """A fresh App on each driver (postgres, memory, redis), with empty storage; its pools are
    closed afterwards."""
    yield driver_kind_app
    await driver_kind_app.aclose()
