"""What every subcommand needs before it can act: the settings, the database URL, the App.

The database comes from ``--database-url``, else the settings, resolved as ``pgqueue.App()``
resolves them (:func:`pgqueue.config.find_settings`: ``PGQUEUE_DATABASE_URL``, the seeds'
``QUEUE_CONFIG``, ``.env``, ``app-config.yaml``, ``DATABASE_URL``); the schema from
``--schema``, else the same settings.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pgqueue._dsn import to_libpq
from pgqueue._names import validate_schema
from pgqueue.app import App
from pgqueue.compat import default_settings
from pgqueue.config import Settings
from pgqueue.errors import ConfigurationError, DatabaseUnavailableError
from pgqueue.task import Task

__all__ = ["app_for", "database_url", "load_app", "opened_app", "raise_unreachable", "schema",
           "settings"]


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


def load_app(spec: str) -> App:
    """Import ``module:attribute`` from the current directory or the import path: an App, or
    a function without parameters that returns one (a factory). Anything else -- a task, a
    function that needs arguments, a missing attribute -- is a :class:`ConfigurationError`
    naming the App(s) the module does define."""
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
    if isinstance(obj, App):
        return obj
    apps = [f"{module_name}:{name}" for name, value in vars(module).items()
            if isinstance(value, App)]
    hint = f"; {module_name} defines {', '.join(apps)}" if apps else ""
    if obj is None:
        what = f"module {module_name!r} has no attribute {attr!r}"
    elif isinstance(obj, Task):
        what = f"{spec!r} is the task {obj.name!r}, not an App: pass the App it is registered on"
    elif callable(obj) and _no_required_parameters(obj):
        made = obj()
        if isinstance(made, App):
            return made
        what = f"{spec}() returned {type(made).__name__}, not a pgqueue.App"
    elif callable(obj):
        what = (f"{spec!r} is a function that takes arguments, not a pgqueue.App (or a factory "
                "without parameters returning one)")
    else:
        what = f"{spec!r} is a {type(obj).__name__}, not a pgqueue.App"
    raise ConfigurationError(what + hint, key="app", source="command line")


def _no_required_parameters(fn: Callable[..., object]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: do not call it
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in params)


def schema(args: argparse.Namespace) -> str:
    """pgqueue's schema: ``--schema``, else the configured one (``PGQUEUE_SCHEMA``,
    ``QUEUE_TABLE=schema.jobs``, ``postgres.schema`` in ``app-config.yaml``, ``.env``: the same
    settings the database URL comes from), else ``pgqueue``."""
    given = getattr(args, "schema", None)
    if given:
        return validate_schema(given)
    return settings().schema


def app_for(args: argparse.Namespace) -> App:
    """The App of ``--app`` (pointed at ``--database-url`` and ``--schema`` when given, else
    at the configured database if it has none), else a plain App (no tasks: it accepts any
    task name) on the configured database and schema."""
    if not getattr(args, "app", None):
        return App(database_url=database_url(args)[0], schema=schema(args))
    app = load_app(args.app)
    url: str | None = getattr(args, "database_url", None)
    source = "--database-url"
    if url is None and app.database_url is None:
        url, source = database_url(args)
    if url is not None or getattr(args, "schema", None):
        app.use_database(url or app.database_url or "", source=source,
                         schema=getattr(args, "schema", None))
    return app


@contextmanager
def opened_app(args: argparse.Namespace) -> Iterator[App]:
    """:func:`app_for`, with its connection pools closed when the command is done."""
    app = app_for(args)
    try:
        yield app
    finally:
        app.close()


def raise_unreachable(exc: Exception) -> None:
    """Turn SQLAlchemy's "could not connect" into one clear :class:`DatabaseUnavailableError`;
    return (doing nothing) for any other exception."""
    import sqlalchemy.exc  # imported late: only migrate needs SQLAlchemy, keep startup light

    if isinstance(exc, sqlalchemy.exc.OperationalError):
        raise DatabaseUnavailableError(
            f"the database did not answer ({str(exc.orig).strip().splitlines()[0]}); check the "
            "URL and that the server is running") from exc
