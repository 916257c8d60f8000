"""Setup commands: ``pgqueue migrate`` and ``pgqueue config``."""

from __future__ import annotations

import argparse

from pgqueue.cli import _context
from pgqueue.cli._format import table

__all__ = ["cmd_config", "cmd_migrate"]


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade to ``--to`` (default head), downgrade when the target is older (``base`` removes
    everything), or print that SQL with ``--sql`` (for ``psql -v ON_ERROR_STOP=1 -f``).

    The schema is ``--schema``, else the configured one (``PGQUEUE_SCHEMA``, ``QUEUE_TABLE=
    schema.jobs``, ``postgres.schema`` of ``app-config.yaml``, ``.env``: the configuration the
    URL comes from), else ``pgqueue``.
    """
    from pgqueue import migrations  # imported late: alembic and SQLAlchemy load only here

    schema = _context.schema(args)
    if args.sql:
        print(migrations.sql(schema=schema, to=args.to or "head"))
        return 0
    url, _ = _context.database_url(args)
    try:
        before, after = migrations.migrate(url, schema=schema, to=args.to or "head")
    except Exception as exc:
        _context.raise_unreachable(exc)
        raise
    print(f"pgqueue schema {schema!r}: {before or 'none'} -> {after or 'base (removed)'}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print every setting, its value (passwords hidden) and where it came from."""
    settings = _context.settings()
    print(table(("setting", "value", "source"), settings.describe()))
    if settings.driver == "memory" and not settings.database_url:
        # the memory default is load_settings()'s; a bare App() does not fall back to it
        print("\nnote: no database URL is set. pgqueue.App() and the worker need one and raise "
              "until it is set (PGQUEUE_DATABASE_URL or DATABASE_URL); the memory driver above "
              "is only what App.from_settings(load_settings()) and the velocity/backstage APIs "
              "fall back to (in-process, lost on exit).")
    return 0
