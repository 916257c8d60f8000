"""pgqueue's pytest plugin: your app on a throwaway driver per test, and the
:mod:`pgqueue.testing` harness as a fixture.

It is always installed with pgqueue (a ``pytest11`` entry point; it imports nothing beyond
pgqueue and pytest) and does nothing until a test asks for one of its fixtures. Configure it in
``pyproject.toml`` (or ``pytest.ini``)::

    [tool.pytest.ini_options]
    pgqueue_app = "myproject.jobs:app"       # the App your tasks are registered on
    pgqueue_driver = "memory"                # default driver: memory (default) or postgres
    # for postgres: pgqueue_database_url, else PGQUEUE_TEST_DATABASE_URL, else DATABASE_URL

Fixtures:

- ``pgqueue_app``: the app (``pgqueue_app`` ini option, or override the ``pgqueue_base_app``
  fixture to return your own), pointed for this test at a fresh memory driver, or at a
  PostgreSQL schema of its own (``pgqueue_test_<random>``, migrated once per session, emptied
  after each test, dropped at the end): tests never see each other's jobs. The app's own
  driver, URL and schema are restored after the test.
- ``pgqueue_testing``: a :class:`pgqueue.testing.TestQueue` on ``pgqueue_app``, active for the test,
  in ``manual`` mode unless the marker says otherwise.

Marker: ``@pytest.mark.pgqueue(driver="postgres", mode="inline")`` picks the driver and the
mode of one test (or a module, with ``pytestmark``)::

    @pytest.mark.pgqueue(driver="postgres")
    def test_signup(pgqueue_testing):
        signup("a@b.c")
        pgqueue_testing.assert_enqueued("send_email", args={"to": "a@b.c"})
        assert pgqueue_testing.drain().succeeded == 1
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pgqueue.app import App
from pgqueue.errors import ConfigurationError
from pgqueue.testing import Mode, TestQueue

__all__ = ["pgqueue_app", "pgqueue_base_app", "pgqueue_testing"]

_DRIVERS = ("memory", "postgres")
_MODES = ("manual", "inline")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("pgqueue_app", "pgqueue: the App under test, as 'module:attribute'")
    parser.addini("pgqueue_driver", "pgqueue: the tests' default driver, memory or postgres",
                  default="memory")
    parser.addini("pgqueue_database_url", "pgqueue: PostgreSQL for driver=postgres (default: "
                  "PGQUEUE_TEST_DATABASE_URL, then DATABASE_URL)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pgqueue(driver='memory'|'postgres', mode='manual'|'inline'): the pgqueue "
                   "driver and testing mode of this test")


def _load_app(spec: str) -> App:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise pytest.UsageError(f"pgqueue_app must be 'module:attribute', not {spec!r}")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise pytest.UsageError(f"pgqueue_app {spec!r} cannot be loaded: {exc}") from exc
    if not isinstance(obj, App):
        raise pytest.UsageError(f"pgqueue_app {spec!r} is a {type(obj).__name__}, not a "
                                "pgqueue.App")
    return obj


def _marker(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("pgqueue")
    options = dict(marker.kwargs) if marker is not None else {}
    unknown = sorted(set(options) - {"driver", "mode"})
    if unknown or (marker is not None and marker.args):
        raise pytest.UsageError(f"@pytest.mark.pgqueue takes driver= and mode= only, not "
                                f"{', '.join(unknown) or marker.args!r}")
    return options


@pytest.fixture
def pgqueue_base_app(pytestconfig: pytest.Config) -> App:
    """The app under test, from the ``pgqueue_app`` ini option. Override this fixture to hand
    the plugin your app another way::

        @pytest.fixture
        def pgqueue_base_app():
            return myproject.jobs.app
    """
    spec = str(pytestconfig.getini("pgqueue_app") or "")
    if not spec:
        raise pytest.UsageError("set pgqueue_app = 'module:attribute' in your pytest "
                                "configuration, or override the pgqueue_base_app fixture")
    return _load_app(spec)


def _database_url(config: pytest.Config) -> str:
    url = str(config.getini("pgqueue_database_url") or "") or os.environ.get(
        "PGQUEUE_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigurationError("a pgqueue test with driver='postgres' needs a database: set "
                                 "pgqueue_database_url in your pytest configuration, or "
                                 "PGQUEUE_TEST_DATABASE_URL", key="pgqueue_database_url")
    return url


class _Schemas:
    """The session's throwaway schema on PostgreSQL: migrated on first use, emptied after each
    test, dropped at the end of the session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.url: str | None = None
        self.schema = f"pgqueue_test_{uuid.uuid4().hex[:10]}"

    def get(self) -> tuple[str, str]:
        if self.url is None:
            from pgqueue import migrations

            url = _database_url(self.config)
            migrations.upgrade(url, schema=self.schema)
            self.url = url
        return self.url, self.schema

    def empty(self) -> None:
        """Delete every row of the schema's tables (but the migration version)."""
        if self.url is None:
            return
        import psycopg
        from psycopg import sql

        from pgqueue._dsn import to_libpq

        with psycopg.connect(to_libpq(self.url), autocommit=True) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s "
                "AND tablename NOT LIKE '%%alembic_version'", (self.schema,))]
            if tables:
                conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(
                    sql.Identifier(self.schema, t) for t in tables)))

    def drop(self) -> None:
        if self.url is None:
            return
        import psycopg
        from psycopg import sql

        from pgqueue._dsn import to_libpq

        with psycopg.connect(to_libpq(self.url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(self.schema)))


@pytest.fixture(scope="session")
def _pgqueue_schemas(pytestconfig: pytest.Config) -> Iterator[_Schemas]:
    schemas = _Schemas(pytestconfig)
    yield schemas
    schemas.drop()


@pytest.fixture
def pgqueue_app(request: pytest.FixtureRequest, pgqueue_base_app: App,
                _pgqueue_schemas: _Schemas) -> Iterator[App]:
    """``pgqueue_base_app`` on a driver of this test's own (see the module docstring); the
    driver is the marker's ``driver=``, else the ``pgqueue_driver`` ini option."""
    driver = _marker(request).get("driver") or str(
        request.config.getini("pgqueue_driver") or "memory")
    if driver not in _DRIVERS:
        raise pytest.UsageError(f"pgqueue driver must be one of {', '.join(_DRIVERS)}, "
                                f"not {driver!r}")
    app = pgqueue_base_app
    saved = (app.driver if app.database_url is None and app.has_driver else None,
             app.database_url, app.schema)
    app.close()  # the pools of the app's own database are not needed meanwhile
    if driver == "memory":
        app.use_driver("memory")
    else:
        test_url, test_schema = _pgqueue_schemas.get()
        app.use_database(test_url, schema=test_schema)
    try:
        yield app
    finally:
        app.close()
        if driver == "postgres":
            _pgqueue_schemas.empty()
        original, url, schema = saved
        if url is not None:
            app.use_database(url, schema=schema, source="the app's own URL")
        else:
            app.use_driver(original)
            app.database_url, app.schema = None, schema


@pytest.fixture
def pgqueue_testing(request: pytest.FixtureRequest,
                    pgqueue_app: App) -> Iterator[TestQueue]:
    """A :class:`pgqueue.testing.TestQueue` on ``pgqueue_app`` for this test, in the marker's
    ``mode=`` (default ``manual``)::

        def test_it(pgqueue_testing):
            send_email.enqueue(to="a@b.c")
            pgqueue_testing.assert_enqueued(send_email)
    """
    mode: Mode = _marker(request).get("mode", "manual")
    if mode not in _MODES:
        raise pytest.UsageError(f"pgqueue mode must be one of {', '.join(_MODES)}, not "
                                f"{mode!r}")
    with TestQueue(pgqueue_app, mode) as queue:
        yield queue
