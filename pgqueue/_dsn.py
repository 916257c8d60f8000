"""Database URLs: where they come from, and their checks.

pgqueue reads ``PGQUEUE_DATABASE_URL``, then ``DATABASE_URL``. Both libpq URLs
(``postgresql://...``), SQLAlchemy URLs (``postgresql+psycopg://...``) and libpq keyword strings
(``host=... dbname=...``) are accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue.errors import ConfigurationError

URL_ENV_VARS = ("PGQUEUE_DATABASE_URL", "DATABASE_URL")


def url_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(url, variable name)`` of the first URL variable that is set, or ``None``."""
    env = os.environ if environ is None else environ
    for var in URL_ENV_VARS:
        value = env.get(var, "").strip()
        if value:
            return value, var
    return None


def to_libpq(url: str, *, source: str = "database_url") -> str:
    """Normalise a URL to a libpq conninfo string, raising a clear error if it is malformed."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("is empty; set it to postgresql://user@host:5432/dbname",
                                 key="database_url", source=source)
    raw = url.strip()
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg_async://",
                   "postgresql+psycopg2://", "postgresql+asyncpg://", "postgres://"):
        if raw.startswith(prefix):
            raw = "postgresql://" + raw[len(prefix):]
            break
    if "://" in raw and not raw.startswith("postgresql://"):
        raise ConfigurationError(
            f"{_redact(raw)!r} is not a PostgreSQL URL; expected postgresql://user@host:5432/dbname",
            key="database_url", source=source,
        )
    try:
        params = conninfo_to_dict(raw)
    except psycopg.ProgrammingError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigurationError(
            f"{_redact(raw)!r} is malformed ({reason}); expected "
            "postgresql://user@host:5432/dbname", key="database_url", source=source,
        ) from exc
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigurationError(
                f"{_redact(raw)!r} has an invalid port {port!r}; use a number from 1 to "
                "65535, as in postgresql://user@host:5432/dbname",
                key="database_url", source=source)
    return make_conninfo(**params)  # type: ignore[arg-type]


def to_sqlalchemy_url(url: str) -> str:
    """A SQLAlchemy URL using the psycopg 3 dialect for the same database."""
    from sqlalchemy.engine import URL

    params = conninfo_to_dict(to_libpq(url))
    query = {k: str(v) for k, v in params.items()
             if k not in ("user", "password", "dbname") and v is not None}
    return URL.create(
        "postgresql+psycopg",
        username=str(params["user"]) if params.get("user") else None,
        password=str(params["password"]) if params.get("password") else None,
        database=str(params["dbname"]) if params.get("dbname") else None,
        query=query,
    ).render_as_string(hide_password=False)


def _redact(url: str) -> str:
    """Hide a password in a URL before it goes into a message."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return url
