"""What every subcommand needs before it can act: the settings, the database URL, the App.

The database comes from ``--database-url``, else the settings, resolved as ``pgqueue.App()``
resolves them (:func:`pgqueue.config.find_settings`: ``PGQUEUE_DATABASE_URL``, the seeds'
``QUEUE_CONFIG``, ``.env``, ``app-config.yaml``, ``DATABASE_URL``); the schema from
``--schema``, else the same settings.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pgqueue._dsn import to_libpq
from pgqueue._names import validate_schema
from pgqueue.app import App
from pgqueue.compat import default_settings
from pgqueue.config import Settings
from pgqueue.errors import ConfigurationError, DatabaseUnavailableError

__all__ = ["app_for", "database_url", "load_app", "raise_unreachable", "schema", "settings"]


def settings() -> Settings:
    """Settings from ``app-config.yaml`` and ``.env`` in the current directory, then the
    environment (see :mod:`pgqueue.config`)."""
    return default_settings()


def database_url(args: argparse.Namespace) -> tuple[str, str]:
    """``(libpq URL, where it came from)``: ``--database-url``, else the settings (the same
    resolution as ``pgqueue.App()``: ``PGQUEUE_DATABASE_URL``, ``QUEUE_CONFIG``, ``.env``,
    ``app-config.yaml``, ``DATABASE_URL``); raises :class:`ConfigurationError` if none is set."""
    if getattr(args, "database_url", None):
        return to_libpq(args.database_url, source="--database-url"), "--database-url"
    current = settings()
    if current.database_url:
        return current.database_url, current.source("database_url")
    raise ConfigurationError(
        "no database configured: pass --database-url or set PGQUEUE_DATABASE_URL "
        "(or DATABASE_URL, QUEUE_CONFIG) to postgresql://user@host:5432/dbname",
        key="database_url")


def schema(args: argparse.Namespace) -> str:
    """pgqueue's schema: ``--schema``, else the configured one (``PGQUEUE_SCHEMA``,
    ``QUEUE_TABLE=schema.jobs``, ``postgres.schema`` in ``app-config.yaml``, ``.env``: the same
    settings the database URL comes from), else ``pgqueue``."""
    given = getattr(args, "schema", None)
    if given:
        return validate_schema(given)
    return settings().schema


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (an App, or a callable returning one) from the current
    directory or the import path."""
    if ":" not in spec:
        raise ConfigurationError(f"{spec!r} is not MODULE:APP (e.g. myproject.jobs:app)",
                                 key="app", source="command line")
    module_name, attr = spec.split(":", 1)
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import module {module_name!r}: {exc}", key="app",
                                 source="command line") from exc
    obj = getattr(module, attr, None)
    if callable(obj) and not isinstance(obj, App):
        obj = obj()
    if not isinstance(obj, App):
        raise ConfigurationError(f"{spec!r} is not a pgqueue.App", key="app",
                                 source="command line")
    return obj


def app_for(args: argparse.Namespace) -> App:
    """The App of ``--app`` (pointed at ``--database-url`` when given), else a plain App on
    the configured database and ``--schema``."""
    if getattr(args, "app", None):
        app = load_app(args.app)
        if getattr(args, "database_url", None):
            app.use_database(args.database_url, source="--database-url")
        return app
    url, _ = database_url(args)
    return App(database_url=url, schema=schema(args))


def raise_unreachable(exc: Exception) -> None:
    """Turn SQLAlchemy's "could not connect" into one clear :class:`DatabaseUnavailableError`;
    return (doing nothing) for any other exception."""
    import sqlalchemy.exc  # imported late: only migrate needs SQLAlchemy, keep startup light

    if isinstance(exc, sqlalchemy.exc.OperationalError):
        raise DatabaseUnavailableError(
            f"the database did not answer ({str(exc.orig).strip().splitlines()[0]}); check the "
            "URL and that the server is running") from exc
