"""pgqueue's alembic environment.

Run through :mod:`pgqueue.migrations` (``pgqueue migrate`` or ``pgqueue.migrations.upgrade``),
which passes the target schema and, online, the connection in ``config.attributes``:

- ``pgqueue_schema``: the schema that holds pgqueue's tables and its own version table
  (``pgqueue_alembic_version``; never the application's ``alembic_version``);
- ``connection``: a SQLAlchemy ``Connection`` to run on (online mode);
- ``url``: a SQLAlchemy URL string, for offline (``--sql``) mode;
- ``pgqueue_remove``: true for a downgrade to ``base``: after the revisions' own DDL, drop the
  version table and the schema when nothing else is left in it (the same statements online and
  in the printed SQL).

Offline mode compiles with the ``named`` paramstyle: under psycopg's default (``pyformat``)
SQLAlchemy would escape every ``%`` of the revisions' DDL as ``%%``, and the ``format('%I',
...)`` calls of the history-partition functions would reach psql as ``format('%%I', ...)``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from pgqueue.drivers.postgres.schema import VERSION_TABLE

config = context.config
schema: str = config.attributes["pgqueue_schema"]


def _quoted_schema(dialect: object) -> str:
    preparer = dialect.identifier_preparer  # type: ignore[attr-defined]
    return str(preparer.quote_schema(schema))


def _removal(quoted: str, quoted_table: str) -> list[str]:
    """After a downgrade to base: pgqueue's version table, then the schema if it is empty (a
    schema that still holds something of the application's stays)."""
    return [
        f"DROP TABLE IF EXISTS {quoted}.{quoted_table}",
        "DO $pgqueue$ BEGIN\n"
        f"    DROP SCHEMA IF EXISTS {quoted};\n"
        "EXCEPTION WHEN dependent_objects_still_exist THEN\n"
        "    NULL;  -- the schema holds objects that are not pgqueue's: keep it\n"
        "END $pgqueue$",
    ]


def _remove_if_asked() -> None:
    if not config.attributes.get("pgqueue_remove"):
        return
    preparer = context.get_context().dialect.identifier_preparer
    for statement in _removal(_quoted_schema(context.get_context().dialect),
                              str(preparer.quote(VERSION_TABLE))):
        context.execute(statement)


def run_offline() -> None:
    context.configure(
        url=config.attributes.get("url", "postgresql+psycopg://"),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        if not config.attributes.get("pgqueue_remove"):
            context.execute(
                f"CREATE SCHEMA IF NOT EXISTS {_quoted_schema(context.get_context().dialect)}"
            )
        context.run_migrations()
        _remove_if_asked()


def run_online() -> None:
    connection = config.attributes["connection"]
    quoted = _quoted_schema(connection.dialect)
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        _remove_if_asked()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
