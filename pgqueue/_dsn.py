"""Connection strings: every URL concern in one place.

- **parse and check**: :func:`to_libpq` (PostgreSQL: libpq URLs ``postgresql://...``,
  SQLAlchemy URLs ``postgresql+psycopg://...`` and libpq keyword strings ``host=... dbname=...``)
  and :func:`check_redis_url` (``redis://``, ``rediss://``, ``unix://``);
- **redact**: :func:`redact` hides the password of any of these shapes before a string reaches a
  message, a log line or ``pgqueue config``;
- **cluster**: :func:`parse_hosts` and :func:`apply_cluster` make a multi-host libpq connection
  that follows a failover;
- **convert**: :func:`to_sqlalchemy_url`, :func:`redis_url` (a Redis URL from its parts);
- **find**: :func:`url_from_env` reads ``PGQUEUE_DATABASE_URL``, then ``DATABASE_URL``.

Every error is a :class:`pgqueue.ConfigurationError` naming the setting and its source, with
the password already redacted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue.errors import ConfigurationError

__all__ = ["REDACTED", "URL_ENV_VARS", "apply_cluster", "check_redis_url", "parse_hosts",
           "redact", "redis_url", "to_libpq", "to_sqlalchemy_url", "url_from_env"]

#: the variables :func:`url_from_env` reads, most specific first
URL_ENV_VARS = ("PGQUEUE_DATABASE_URL", "DATABASE_URL")

#: what a password is replaced with
REDACTED = "***"

_POSTGRES_HELP = "postgresql://user@host:5432/dbname"
_REDIS_HELP = "redis://[:password@]host[:port][/db], rediss://... or unix:///path/redis.sock"
_DEFAULT_PORT = 5432


def url_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(url, variable name)`` of the first of :data:`URL_ENV_VARS` that is set (``environ``,
    default ``os.environ``, is only read), or ``None``."""
    env = os.environ if environ is None else environ
    for var in URL_ENV_VARS:
        value = env.get(var, "").strip()
        if value:
            return value, var
    return None


# ---- redaction ---------------------------------------------------------------------------------
#: ``password=...`` in a libpq keyword string: a quoted value (backslash escapes, possibly
#: unterminated) or everything up to the next whitespace
_KEYWORD_PASSWORD = re.compile(r"(?:(?<=\s)|^)(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)")
#: ``password=...`` as a URL query parameter
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


def redact(text: str) -> str:
    """``text`` with every password replaced by ``***``.

    Handles each shape pgqueue accepts: URLs with a user-info part
    (``postgresql://user:pw@host/db``, ``redis://:pw@host:6379/0``, ``rediss://user:pw@...``,
    ``unix://:pw@/path/redis.sock``, multi-host URLs), a ``?password=`` / ``&password=`` query
    parameter, and libpq keyword strings (``host=h password=pw``, ``password='p w'``). Anything
    else comes back unchanged; the function never raises. ::

        >>> redact("postgresql://app:secret@db:5432/jobs?sslmode=require")
        'postgresql://app:***@db:5432/jobs?sslmode=require'
        >>> redact("host=db password='s e c' dbname=jobs")
        'host=db password=*** dbname=jobs'
    """
    out = _QUERY_PASSWORD.sub(rf"\g<1>{REDACTED}", text)
    scheme, sep, rest = out.partition("://")
    if sep and _SCHEME.fullmatch(scheme):
        head, query_sep, tail = rest.partition("?")
        at = head.rfind("@")
        # everything before the last "@" is user info (so an unencoded "@" or "/" in a password
        # is still hidden); a password follows the first ":" in it
        if at >= 0 and ":" in head[:at]:
            user = head[:at].split(":", 1)[0]
            head = f"{user}:{REDACTED}{head[at:]}"
        return f"{scheme}://{head}{query_sep}{tail}"
    return _KEYWORD_PASSWORD.sub(rf"\g<1>{REDACTED}", out)


# ---- PostgreSQL --------------------------------------------------------------------------------
_SQLALCHEMY_PREFIXES = ("postgresql+psycopg://", "postgresql+psycopg_async://",
                        "postgresql+psycopg2://", "postgresql+asyncpg://", "postgres://")


def to_libpq(url: str, *, source: str = "database_url") -> str:
    """Normalise a PostgreSQL URL (libpq or SQLAlchemy) or keyword string to a libpq conninfo
    string, checking its shape and ports; raise a clear error if it is malformed."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"is empty; set it to {_POSTGRES_HELP}",
                                 key="database_url", source=source)
    raw = url.strip()
    for prefix in _SQLALCHEMY_PREFIXES:
        if raw.startswith(prefix):
            raw = "postgresql://" + raw[len(prefix):]
            break
    if "://" in raw and not raw.startswith("postgresql://"):
        raise ConfigurationError(
            f"{redact(raw)!r} is not a PostgreSQL URL; expected {_POSTGRES_HELP}",
            key="database_url", source=source,
        )
    try:
        params = conninfo_to_dict(raw)
    except psycopg.ProgrammingError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigurationError(
            f"{redact(raw)!r} is malformed ({redact(reason)}); expected {_POSTGRES_HELP}",
            key="database_url", source=source,
        ) from exc
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigurationError(
                f"{redact(raw)!r} has an invalid port {port!r}; use a number from 1 to "
                f"65535, as in {_POSTGRES_HELP}", key="database_url", source=source)
    return make_conninfo(**params)  # type: ignore[arg-type]


def to_sqlalchemy_url(url: str) -> str:
    """A SQLAlchemy URL using the psycopg 3 dialect for the same database."""
    from sqlalchemy.engine import URL  # late: SQLAlchemy is only needed to migrate

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


# ---- cluster (multi-host PostgreSQL) -----------------------------------------------------------
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._\-]+)(?::(\d+))?")
_HOSTS_HELP = "a comma list of host[:port] entries (e.g. 'db1:5432,db2:5432'), or true/false"


def parse_hosts(parts: Sequence[object], *, key: str, source: str) -> tuple[str, ...]:
    """``host``, ``host:port`` or ``[v6addr]:port`` entries as ``host:port`` (port default
    5432), checked."""
    hosts: list[str] = []
    for part in parts:
        if not isinstance(part, str) or not part:
            raise ConfigurationError(f"empty or non-text host {part!r}; allowed: {_HOSTS_HELP}",
                                     key=key, source=source)
        m = _HOST_PORT.fullmatch(part)
        if m is None or not 1 <= int(m.group(2) or _DEFAULT_PORT) <= 65535:
            raise ConfigurationError(f"{part!r} is not host[:port]; allowed: {_HOSTS_HELP}",
                                     key=key, source=source)
        hosts.append(f"{m.group(1)}:{int(m.group(2) or _DEFAULT_PORT)}")
    return tuple(hosts)


def apply_cluster(conninfo: str, cluster: tuple[str, ...] | bool, *,
                  source: str) -> tuple[str, tuple[str, ...]]:
    """``(conninfo, hosts)``: the connection with ``target_session_attrs=read-write`` (libpq
    picks the primary) and, for a tuple of ``host:port`` (see :func:`parse_hosts`), those hosts
    instead of its own; ``True`` keeps the hosts of ``conninfo``. ``hosts`` names the hosts
    the connection tries, as ``host:port``."""
    params: dict[str, Any] = dict(conninfo_to_dict(conninfo))
    if isinstance(cluster, tuple):
        hosts = [h.rsplit(":", 1) for h in cluster]
        params["host"] = ",".join(h.strip("[]") for h, _ in hosts)
        params["port"] = ",".join(p for _, p in hosts)
        params.pop("hostaddr", None)
    host_list = str(params.get("host") or "").split(",")
    port_list = str(params.get("port") or _DEFAULT_PORT).split(",")
    if len(port_list) == 1:
        port_list = port_list * len(host_list)
    params["target_session_attrs"] = "read-write"
    try:
        result = make_conninfo(**params)
        conninfo_to_dict(result)
    except psycopg.ProgrammingError as exc:  # pragma: no cover - inputs were checked before
        raise ConfigurationError(f"cannot build the multi-host connection: {redact(str(exc))}",
                                 key="cluster", source=source) from exc
    named = tuple(f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
                  for h, p in zip(host_list, port_list, strict=False) if h)
    return result, named


# ---- Redis -------------------------------------------------------------------------------------
def check_redis_url(value: str, *, key: str, source: str) -> str:
    """``value`` if it is a Redis URL redis-py reads as meant (scheme, host, numeric database,
    port range), else a :class:`pgqueue.ConfigurationError`."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{redact(value)!r} is malformed ({exc}); allowed: "
                                 f"{_REDIS_HELP}", key=key, source=source) from exc
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"{redact(value)!r} is not a Redis URL; allowed: "
                                 f"{_REDIS_HELP}", key=key, source=source)
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"{redact(value)!r} names no socket path; allowed: "
                                     f"{_REDIS_HELP}", key=key, source=source)
        return value
    if not parts.hostname:
        raise ConfigurationError(f"{redact(value)!r} has no host; allowed: {_REDIS_HELP}",
                                 key=key, source=source)
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigurationError(f"database {db!r} is not a number; allowed: {_REDIS_HELP}",
                                 key=key, source=source)
    if port is not None and not 1 <= port <= 65535:
        raise ConfigurationError(f"port {port} is out of range; allowed: {_REDIS_HELP}",
                                 key=key, source=source)
    return value


def redis_url(host: str, port: int, db: int, password: str = "") -> str:
    """``redis://[:password@]host:port/db`` (the password percent-encoded, an IPv6 address in
    brackets)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    netloc_host = f"[{host}]" if ":" in host else host
    return f"redis://{auth}{netloc_host}:{port}/{db}"
