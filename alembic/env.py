"""pgqueue's alembic environment.

Run through :mod:`pgqueue.migrations` (``pgqueue migrate`` or ``pgqueue.migrations.upgrade``),
which passes the target schema and, online, the connection in ``config.attributes``:

- ``pgqueue_schema``: the schema that holds pgqueue's tables and its own version table
  (``pgqueue_alembic_version``; never the application's ``alembic_version``);
- ``connection``: a SQLAlchemy ``Connection`` to run on (online mode);
- ``url``: a SQLAlchemy URL string, for offline (``--sql``) mode.
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


def run_offline() -> None:
    context.configure(
        url=config.attributes.get("url", "postgresql+psycopg://"),
        literal_binds=True,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.execute(
            f"CREATE SCHEMA IF NOT EXISTS {_quoted_schema(context.get_context().dialect)}"
        )
        context.run_migrations()


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


if context.is_offline_mode():
    run_offline()
else:
    run_online()
