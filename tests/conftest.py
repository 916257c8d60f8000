"""Test fixtures: a real PostgreSQL, always.

Server, in this order:
  1. ``PGQUEUE_TEST_DSN`` or ``DATABASE_URL`` if set;
  2. a reachable local server (127.0.0.1:5432, then the default unix socket);
  3. the embedded server from the ``pgqueue[embedded]`` wheel.
``PGQUEUE_TEST_EMBEDDED=1`` skips 1 and 2.

On that server, a throwaway database ``pgqueue_test_<hex>`` is created and migrated for the test
session and dropped at the end. Tests that need committed rows (workers, LISTEN/NOTIFY) get the
pgqueue tables truncated before they run (``clean`` fixture); tests of transactional behaviour
roll their own transactions back.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue
from pgqueue import migrations

LOCAL_CANDIDATES = (
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://postgres@/postgres?host=/var/run/postgresql",
)


def _reachable(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as c:
            c.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, str]]:
    """(admin DSN, source) of a server on which the tests may create databases."""
    if os.environ.get("PGQUEUE_TEST_EMBEDDED") != "1":
        for var in ("PGQUEUE_TEST_DSN", "DATABASE_URL"):
            if os.environ.get(var):
                yield os.environ[var], f"env:{var}"
                return
        for dsn in LOCAL_CANDIDATES:
            if _reachable(dsn):
                yield dsn, "local"
                return
    from pgqueue._embedded import EmbeddedPostgres, find_bindir

    if find_bindir() is None:
        pytest.exit("no PostgreSQL for the tests: set PGQUEUE_TEST_DSN, run a local server, or "
                    "pip install 'pgqueue[embedded]'", returncode=2)
    with EmbeddedPostgres() as pg:
        yield pg.dsn(), "embedded"


@pytest.fixture(scope="session")
def admin_dsn(pg_server: tuple[str, str]) -> str:
    return pg_server[0]


def _with_db(dsn: str, name: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def make_database(admin_dsn: str) -> Iterator[Callable[[], str]]:
    """Factory of throwaway databases (dropped at session end)."""
    created: list[str] = []

    def make() -> str:
        name = f"pgqueue_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return _with_db(admin_dsn, name)

    yield make
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        for name in created:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture(scope="session")
def dsn(make_database: Callable[[], str]) -> str:
    """The session's migrated database."""
    url = make_database()
    migrations.upgrade(url)
    return url


@pytest.fixture(scope="session")
def sa_url(dsn: str) -> str:
    from pgqueue._dsn import to_sqlalchemy_url

    return to_sqlalchemy_url(dsn)


def truncate(dsn: str, schema: str = "pgqueue") -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql.SQL(
            "TRUNCATE {s}.jobs, {s}.job_history, {s}.failed_jobs, {s}.queues, {s}.workers"
        ).format(s=sql.Identifier(schema)))


@pytest.fixture
def clean(dsn: str) -> str:
    """Empty pgqueue tables before the test; returns the DSN."""
    truncate(dsn)
    return dsn


@pytest.fixture
def app(clean: str) -> Iterator[pgqueue.App]:
    a = pgqueue.App(database_url=clean)
    yield a
    a.close()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit connection for assertions."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Wait until ``predicate()`` is truthy (checked often); fail with ``what`` on timeout.

    This waits on an observable event (a row, a counter), never for a fixed time.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def scalar(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


@pytest.fixture
def redis_app() -> Iterator[pgqueue.App]:
    """An App on the redis driver with a unique key prefix, deleted afterwards (skipped when no
    Redis answers at PGQUEUE_TEST_REDIS_URL, default redis://127.0.0.1:6379/0)."""
    redis = pytest.importorskip("redis")
    from pgqueue.drivers import get_driver

    url = os.environ.get("PGQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {url}")
    prefix = f"pgqueue-test-{uuid.uuid4().hex[:8]}"
    app = pgqueue.App(driver=get_driver("redis", url=url, prefix=prefix))
    try:
        yield app
    finally:
        app.close()
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
