"""Run or print pgqueue's alembic migrations.

pgqueue keeps its own migration history, in its own schema and its own version table
(``<schema>.pgqueue_alembic_version``), so it never touches the application's ``alembic_version``.

From the command line::

    pgqueue migrate                 # upgrade to head (idempotent)
    pgqueue migrate --to base       # remove everything pgqueue created
    pgqueue migrate --sql           # print the DDL instead of running it

From Python, or from inside one of the application's own alembic revisions::

    from alembic import op
    import pgqueue.migrations

    def upgrade() -> None:
        pgqueue.migrations.upgrade(op.get_bind(), schema="pgqueue")

``upgrade``/``downgrade``/``migrate`` accept a SQLAlchemy ``Connection`` (run inside its
transaction, so the application's migration and pgqueue's commit together), an ``Engine`` or a
database URL.

Concurrency: every run takes a transaction-scoped advisory lock on the schema first
(``pg_advisory_xact_lock``, released by the commit or rollback, so it also works through
PgBouncer in transaction mode): ten processes migrating at once run one after another, and all
succeed. Conflicts are :class:`pgqueue.MigrationError` with one line that names them: a table
(or other object) pgqueue would create that already exists without pgqueue's version record, or
a database whose recorded revision this pgqueue does not know (a newer pgqueue migrated it). An
unknown target revision is a :class:`pgqueue.ValidationError` listing the known ones.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from alembic import command
from pgqueue._defaults import DEFAULT_SCHEMA
from pgqueue._dsn import to_sqlalchemy_url
from pgqueue._names import validate_schema
from pgqueue.drivers.postgres import connections
from pgqueue.drivers.postgres.schema import VERSION_TABLE
from pgqueue.errors import ConfigurationError, DatabaseError, MigrationError, ValidationError

__all__ = ["current", "downgrade", "head", "migrate", "revisions", "script_location", "sql",
           "upgrade"]

Bindable = sa.Connection | sa.Engine | str


def script_location() -> Path:
    """Where the revisions are: the ``_alembic`` directory inside the ``pgqueue`` package.

    The repository keeps them in the top-level ``alembic/``; the wheel ships that directory as
    ``pgqueue/_alembic`` (pyproject's force-include), and a checkout has ``pgqueue/_alembic`` as
    a symlink to it, so an installed wheel and a checkout find them the same way.
    """
    location = Path(__file__).resolve().parent / "_alembic"
    if not (location / "env.py").is_file():
        raise ConfigurationError(
            f"pgqueue's migration scripts are missing from this installation ({location}); "
            "reinstall pgqueue"
        )
    return location


def _config(schema: str) -> Config:
    cfg = Config(stdout=io.StringIO())
    cfg.set_main_option("script_location", str(script_location()))
    cfg.attributes["pgqueue_schema"] = schema
    return cfg


def _sa_url(url: str) -> str:
    """Accept a libpq URL (``postgresql://``) and make SQLAlchemy use psycopg 3."""
    return to_sqlalchemy_url(url)


@contextmanager
def _keep_outer_alembic_context() -> Iterator[None]:
    """Let pgqueue's migrations run inside an application's running alembic migration.

    Alembic exposes its running environment through module-level proxies (``alembic.context``,
    ``alembic.op``) and removes them when an environment ends, which would break the
    application's outer environment. Save them before and restore them after.
    """
    import alembic.context
    import alembic.op

    saved = [(m, dict(vars(m))) for m in (alembic.context, alembic.op)]
    try:
        yield
    finally:
        for module, namespace in saved:
            vars(module).clear()
            vars(module).update(namespace)


@contextmanager
def _connection(bind: Bindable) -> Iterator[sa.Connection]:
    """A connection in a transaction for ``bind``; SQLAlchemy's database errors (connecting,
    or a statement of a revision) come out as pgqueue errors with the server's reason."""
    with _database_errors():
        if isinstance(bind, sa.Connection):
            yield bind
            return
        engine = bind if isinstance(bind, sa.Engine) else sa.create_engine(_sa_url(bind))
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            if not isinstance(bind, sa.Engine):
                engine.dispose()


@contextmanager
def _database_errors() -> Iterator[None]:
    """Translate a SQLAlchemy database error the way the PostgreSQL driver does
    (:class:`~pgqueue.CannotConnectError`, :class:`~pgqueue.DatabaseUnavailableError`, ...)."""
    import psycopg

    try:
        yield
    except sa.exc.DBAPIError as exc:
        if isinstance(exc.orig, psycopg.Error):
            raise connections.translate(exc.orig) from exc
        raise DatabaseError(f"database error: {connections.one_line(exc)}") from exc


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(DEFAULT_SCHEMA))


def head() -> str:
    """The newest revision id shipped with this version of pgqueue (e.g. ``"0001"``)."""
    rev = _script().get_current_head()
    assert rev is not None
    return rev


def revisions() -> list[str]:
    """Every revision id shipped with this version of pgqueue, oldest first (e.g.
    ``["0001"]``); ``base`` (nothing) comes before the first."""
    return [r.revision for r in reversed(list(_script().walk_revisions()))]


def _check_target(to: str) -> str:
    """``to`` if it names a revision this pgqueue knows (``head``, ``base`` or an id), else a
    :class:`pgqueue.ValidationError` listing them."""
    if to in ("head", "base") or to in revisions():
        return to
    raise ValidationError(f"unknown revision {to!r}; known: base, {', '.join(revisions())} "
                          "(head)")


def _lock(conn: sa.Connection, schema: str) -> None:
    """Serialise pgqueue's migrations of ``schema`` in this database: a transaction-scoped
    advisory lock (released at commit or rollback; safe behind PgBouncer's transaction
    pooling). A second ``migrate`` waits here, then finds the work done."""
    # locks: an advisory lock keyed by the schema name, nothing else; held to the commit
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                 {"key": f"pgqueue.migrate:{schema}"})


def _current(conn: sa.Connection, schema: str) -> str | None:
    """The recorded revision, checked: a revision this pgqueue does not know (migrated by a
    newer pgqueue) is a :class:`pgqueue.MigrationError`."""
    ctx = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
    )
    try:
        rev = ctx.get_current_revision()
    except CommandError as exc:
        raise MigrationError(f"schema {schema!r}: {_first_line(exc)}") from None
    if rev is not None and rev not in revisions():
        raise MigrationError(
            f"schema {schema!r} is at revision {rev!r}, which this pgqueue does not know "
            f"(its newest is {head()!r}): a newer pgqueue migrated it; install that version "
            "(or migrate another --schema)")
    return rev


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def _translated(schema: str) -> Iterator[None]:
    """Turn what a migration can run into (an object that already exists, an unknown
    revision) into one-line :class:`pgqueue.MigrationError`s."""
    import psycopg.errors

    try:
        yield
    except sa.exc.DBAPIError as exc:
        if isinstance(exc.orig, psycopg.errors.DuplicateTable | psycopg.errors.DuplicateObject
                      | psycopg.errors.DuplicateFunction | psycopg.errors.DuplicateSchema):
            raise MigrationError(
                f"schema {schema!r} already holds an object that pgqueue creates and its "
                f"migrations did not record ({_first_line(exc)}): migrate into another schema "
                "(--schema, PGQUEUE_SCHEMA) or move that object away") from None
        raise
    except CommandError as exc:
        raise MigrationError(f"schema {schema!r}: {_first_line(exc)}") from None


def current(bind: Bindable, *, schema: str = DEFAULT_SCHEMA) -> str | None:
    """The revision of pgqueue's schema ``schema`` (default ``pgqueue``) in the database, or
    ``None`` if pgqueue was never migrated there. ``bind``: a SQLAlchemy ``Connection`` or
    ``Engine``, or a database URL. Raises :class:`pgqueue.MigrationError` when the recorded
    revision is unknown to this pgqueue."""
    validate_schema(schema)
    with _connection(bind) as conn:
        return _current(conn, schema)


def upgrade(bind: Bindable, *, schema: str = DEFAULT_SCHEMA, to: str = "head") -> None:
    """Upgrade pgqueue's schema ``schema`` (default ``pgqueue``) to revision ``to`` (default
    ``head``). Idempotent; concurrent calls are serialised (see the module). ``bind``: a
    SQLAlchemy ``Connection`` (the upgrade joins its transaction), an ``Engine`` or a database
    URL (both: committed on success)."""
    migrate(bind, schema=schema, to=to, direction="up")


def downgrade(bind: Bindable, *, schema: str = DEFAULT_SCHEMA, to: str = "base") -> None:
    """Downgrade pgqueue's schema ``schema`` (default ``pgqueue``) to revision ``to`` (default
    ``base``). ``base`` removes every object pgqueue created, including its version table and
    the schema itself when nothing else is left in it. ``bind`` as for :func:`upgrade`."""
    migrate(bind, schema=schema, to=to, direction="down")


def migrate(bind: Bindable, *, schema: str = DEFAULT_SCHEMA, to: str = "head",
            direction: Literal["auto", "up", "down"] = "auto") -> tuple[str | None, str | None]:
    """Bring pgqueue's schema ``schema`` to revision ``to`` (``head``, ``base`` or an id; see
    :func:`revisions`), upgrading or downgrading as needed (``direction="auto"``; ``"up"`` /
    ``"down"`` force one). Returns ``(before, after)``: the revisions found and left (``None``
    = nothing). What ``pgqueue migrate [--to REV]`` runs. Example::

        before, after = pgqueue.migrations.migrate("postgresql://localhost/shop")
    """
    validate_schema(schema)
    _check_target(to)
    cfg = _config(schema)
    with _connection(bind) as conn, _keep_outer_alembic_context(), _translated(schema):
        _lock(conn, schema)
        before = _current(conn, schema)
        order = [None, *revisions()]
        target = None if to == "base" else head() if to == "head" else to
        down = direction == "down" or (
            direction == "auto" and order.index(target) < order.index(before))
        cfg.attributes["connection"] = conn
        if down:
            cfg.attributes["pgqueue_remove"] = target is None
            command.downgrade(cfg, to)
        else:
            command.upgrade(cfg, to)
        after = None if down and target is None else _current(conn, schema)
    return before, after


def sql(*, schema: str = DEFAULT_SCHEMA, to: str = "head", start: str | None = None) -> str:
    """The SQL that :func:`migrate` would run for schema ``schema`` (default ``pgqueue``) to
    revision ``to`` (default ``head``), from revision ``start`` (default: an empty database for
    an upgrade, ``head`` for ``to="base"``). Needs no database; the result applies with
    ``psql -v ON_ERROR_STOP=1 -f``. ``to="base"`` gives the removal: every object pgqueue
    created, its version table, and the schema when nothing else is left in it. Example::

        print(pgqueue.migrations.sql(to="base"))      # pgqueue migrate --sql --to base
    """
    validate_schema(schema)
    _check_target(to)
    if start is not None:
        _check_target(start)
    cfg = _config(schema)
    out = io.StringIO()
    cfg.output_buffer = out
    cfg.attributes["url"] = "postgresql+psycopg://"
    order = [None, *revisions()]

    def index(rev: str | None) -> int:
        return order.index(None if rev in (None, "base") else head() if rev == "head" else rev)

    if index(to) < index(start if start is not None else "head" if to == "base" else None):
        cfg.attributes["pgqueue_remove"] = to == "base"
        command.downgrade(cfg, f"{start or 'head'}:{to}", sql=True)
    else:
        command.upgrade(cfg, f"{start}:{to}" if start else to, sql=True)
    return out.getvalue()
