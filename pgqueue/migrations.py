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

``upgrade``/``downgrade`` accept a SQLAlchemy ``Connection`` (run inside its transaction, so the
application's migration and pgqueue's commit together), an ``Engine`` or a database URL.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from alembic import command
from pgqueue._defaults import DEFAULT_SCHEMA
from pgqueue._dsn import to_sqlalchemy_url
from pgqueue._names import validate_schema
from pgqueue.drivers.postgres import connections
from pgqueue.drivers.postgres.schema import VERSION_TABLE
from pgqueue.errors import ConfigurationError, DatabaseError

__all__ = ["current", "downgrade", "head", "script_location", "sql", "upgrade"]

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


def head() -> str:
    """The newest revision id shipped with this version of pgqueue (e.g. ``"0001"``)."""
    rev = ScriptDirectory.from_config(_config(DEFAULT_SCHEMA)).get_current_head()
    assert rev is not None
    return rev


def current(bind: Bindable, *, schema: str = DEFAULT_SCHEMA) -> str | None:
    """The revision of pgqueue's schema ``schema`` (default ``pgqueue``) in the database, or
    ``None`` if pgqueue was never migrated there. ``bind``: a SQLAlchemy ``Connection`` or
    ``Engine``, or a database URL."""
    validate_schema(schema)
    with _connection(bind) as conn:
        ctx = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
        )
        return ctx.get_current_revision()


def upgrade(bind: Bindable, *, schema: str = DEFAULT_SCHEMA, to: str = "head") -> None:
    """Upgrade pgqueue's schema ``schema`` (default ``pgqueue``) to revision ``to`` (default
    ``head``). Idempotent. ``bind``: a SQLAlchemy ``Connection`` (the upgrade joins its
    transaction), an ``Engine`` or a database URL (both: committed on success)."""
    validate_schema(schema)
    cfg = _config(schema)
    with _connection(bind) as conn, _keep_outer_alembic_context():
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, to)


def downgrade(bind: Bindable, *, schema: str = DEFAULT_SCHEMA, to: str = "base") -> None:
    """Downgrade pgqueue's schema ``schema`` (default ``pgqueue``) to revision ``to`` (default
    ``base``). ``base`` removes every object pgqueue created, including its version table and
    the schema itself when nothing else is left in it. ``bind`` as for :func:`upgrade`."""
    validate_schema(schema)
    cfg = _config(schema)
    with _connection(bind) as conn, _keep_outer_alembic_context():
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, to)
        if to == "base":
            prep = conn.dialect.identifier_preparer
            qs = prep.quote_schema(schema)
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {qs}.{prep.quote(VERSION_TABLE)}"))
            left = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = :s"
                ),
                {"s": schema},
            ).scalar_one()
            if left == 0:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {qs}"))


def sql(*, schema: str = DEFAULT_SCHEMA, to: str = "head", start: str | None = None) -> str:
    """The DDL that :func:`upgrade` would run for schema ``schema`` (default ``pgqueue``) up to
    ``to`` (default ``head``), from revision ``start`` (default: an empty database). Needs no
    database."""
    validate_schema(schema)
    cfg = _config(schema)
    out = io.StringIO()
    cfg.output_buffer = out
    cfg.attributes["url"] = "postgresql+psycopg://"
    command.upgrade(cfg, f"{start}:{to}" if start else to, sql=True)
    return out.getvalue()
