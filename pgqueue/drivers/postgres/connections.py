"""Connections: the caller's ``conn=``, pgqueue's own sessions, and what a failure means.

- :func:`sync_connection` / :func:`async_connection` reach the psycopg connection behind
  whatever the caller passed as ``conn=`` (below);
- :func:`translate` turns a psycopg error into pgqueue's hierarchy: a connection the server
  refuses for good (unknown host, database or role, failed authentication) is
  :class:`~pgqueue.CannotConnectError`, never retried; a refused or lost connection, a server
  starting or shutting down, ``too many connections``, a write refused by a read-only server
  (a standby: after a failover, a connection that reached the demoted primary) are
  :class:`~pgqueue.DatabaseUnavailableError`; a statement cancelled (``57014``: a
  ``statement_timeout``, ``pg_cancel_backend``) or out of ``lock_timeout`` (``55P03``), a
  deadlock or a serialization failure are :class:`~pgqueue.TransientDatabaseError`. Each
  message quotes the server's reason on one line, passwords redacted;
- :func:`probe` / :func:`aprobe` connect once, directly, so that the first use of a pool fails
  at once with that reason instead of waiting for the pool's timeout;
- :func:`session_setup` / :func:`asession_setup` set pgqueue's ``lock_timeout`` and
  ``statement_timeout`` on each new connection of its pools;
- :func:`check_idle` / :func:`acheck_idle` check a pooled connection when it is taken, at no
  cost unless the server closed it while it sat idle.

``conn=`` accepted: psycopg ``Connection`` and ``AsyncConnection``; SQLAlchemy ``Connection`` and
``Session`` (sync) and ``AsyncConnection`` and ``AsyncSession`` (async), on the ``psycopg``
dialect. pgqueue's statements then run on that connection, inside its transaction: they commit or
roll back with the caller's own writes. SQLAlchemy objects are made to begin their transaction
first, so that the caller's ``commit()`` covers pgqueue's rows.
"""

from __future__ import annotations

import re
import select
from collections.abc import Mapping
from typing import Any

import psycopg

from pgqueue._dsn import redact
from pgqueue.drivers.postgres.sql import SET_SESSION_SETTING
from pgqueue.errors import (
    CannotConnectError,
    DatabaseError,
    DatabaseUnavailableError,
    PgQueueError,
    TransientDatabaseError,
    ValidationError,
)

__all__ = [
    "acheck_idle",
    "aprobe",
    "asession_setup",
    "async_connection",
    "check_idle",
    "one_line",
    "probe",
    "session_settings",
    "session_setup",
    "sync_connection",
    "translate",
]

# ---- what an error means -------------------------------------------------------------------
#: SQLSTATEs of a refusal that retrying will not fix: invalid authorization (28000: unknown
#: role, no pg_hba.conf entry; 28P01: wrong password) and an unknown database (3D000)
_PERMANENT_STATES = ("28", "3D000")
#: a connection attempt fails without a SQLSTATE (libpq gives only text): these reasons are
#: permanent; any other (refused, timed out, starting up, shutting down, too many clients) is
#: an outage worth waiting for
_PERMANENT_TEXT = re.compile(
    r"does not exist|authentication failed|no pg_hba\.conf entry|pg_hba\.conf rejects|"
    r"no password supplied|password is required|is not permitted to log in|"
    r"permission denied for database|failed to resolve host|could not translate host name|"
    r"name or service not known|nodename nor servname|no address associated with hostname|"
    r"ssl was required|does not support ssl|certificate|invalid connection option|"
    r"invalid (?:sslmode|integer) value|server requested .*authentication",
    re.IGNORECASE)
#: the server ended the session or refused it for now: admin/crash shutdown, cannot connect
#: now (starting up, shutting down, in recovery), idle-session timeout, too many connections
_UNAVAILABLE_STATES = ("08", "57P", "53300", "25P03")
#: a write refused by a read-only server (25006: a standby, a demoted primary after failover)
_READ_ONLY = "25006"
_READ_ONLY_HINT = ("; the server is read-only (a standby?): list every host in the URL with "
                   "target_session_attrs=read-write so that pgqueue reconnects to the primary")
#: the statement did not take effect and may be run again: deadlocks and serialization
#: failures (class 40), lock_timeout (55P03), cancellation by statement_timeout or
#: pg_cancel_backend (57014)
_TRANSIENT_STATES = ("40", "55P03", "57014")
_TRANSIENT_WHAT = {"55P03": "lock wait timed out (lock_timeout)",
                   "57014": "statement cancelled (statement_timeout or a cancel request)"}
_URL_HELP = "check PGQUEUE_DATABASE_URL / DATABASE_URL"


def one_line(exc: BaseException) -> str:
    """The reason of a psycopg error on one line: libpq's ``connection failed:``/``FATAL:``
    prefixes and hint lines folded, whitespace collapsed, passwords redacted."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"^(?:connection failed|connection is bad): ", "", text)
    text = re.sub(r"\b(?:FATAL|ERROR): +", "", text)
    return redact(text)


def translate(exc: psycopg.Error) -> PgQueueError:
    """The pgqueue error for ``exc`` (see the module docstring); raise it ``from exc``."""
    state = exc.sqlstate or ""
    reason = one_line(exc)
    if state.startswith(_TRANSIENT_STATES):
        what = _TRANSIENT_WHAT.get(state, "transient database conflict")
        return TransientDatabaseError(f"{what}, safe to retry: {reason}")
    no_state = not state and isinstance(exc, psycopg.OperationalError)
    if state.startswith(_PERMANENT_STATES) or (no_state and _PERMANENT_TEXT.search(reason)):
        return CannotConnectError(f"cannot connect to the database: {reason}; {_URL_HELP} "
                                  "(host, port, database, user, password)")
    if state == _READ_ONLY:
        return DatabaseUnavailableError(f"the database refused a write ({reason})"
                                        f"{_READ_ONLY_HINT}")
    if no_state or state.startswith(_UNAVAILABLE_STATES):
        return DatabaseUnavailableError(f"the database did not answer ({reason}); "
                                        f"{_URL_HELP} and that the server is running")
    return DatabaseError(f"database error: {reason}")


# ---- pgqueue's own sessions ----------------------------------------------------------------
def session_settings(lock_timeout: float | None,
                     statement_timeout: float | None) -> dict[str, str]:
    """``{setting: value}`` for :func:`session_setup`: ``lock_timeout`` and
    ``statement_timeout`` in milliseconds, each left out when ``None`` (the server's applies);
    ``0`` disables it."""
    out = {}
    for name, seconds in (("lock_timeout", lock_timeout),
                          ("statement_timeout", statement_timeout)):
        if seconds is not None:
            out[name] = f"{max(0, round(seconds * 1000))}ms"
    return out


def session_setup(conn: psycopg.Connection[Any], settings: Mapping[str, str]) -> None:
    """Apply ``settings`` (see :func:`session_settings`) to a new connection of a pool."""
    for name, value in settings.items():
        conn.execute(SET_SESSION_SETTING, {"name": name, "value": value})


async def asession_setup(conn: psycopg.AsyncConnection[Any],
                         settings: Mapping[str, str]) -> None:
    """Async twin of :func:`session_setup`."""
    for name, value in settings.items():
        await conn.execute(SET_SESSION_SETTING, {"name": name, "value": value})


def _spoke_while_idle(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server sent something on an idle connection (without waiting): a healthy
    idle session is silent, one the server ended (``idle_session_timeout``,
    ``pg_terminate_backend``, a shutdown) has its last message and end-of-file to read."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return bool(readable)


def check_idle(conn: psycopg.Connection[Any]) -> None:
    """The pools' ``check`` on checkout: raise if ``conn`` is dead, so that the pool replaces
    it. A round trip only when the server spoke while the connection sat idle (see
    :func:`_spoke_while_idle`); otherwise free."""
    if _spoke_while_idle(conn):
        conn.execute("")


async def acheck_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    """Async twin of :func:`check_idle`."""
    if _spoke_while_idle(conn):
        await conn.execute("")


def probe(dsn: str, kwargs: Mapping[str, Any]) -> None:
    """Connect once and close: the translated error (with the server's reason) if that fails.

    A pool connects in the background and, when it cannot, logs and retries until its timeout;
    a probe before the first use of a pool (and after a pool timeout) says at once why."""
    try:
        psycopg.connect(dsn, **kwargs).close()
    except psycopg.Error as exc:
        raise translate(exc) from exc


async def aprobe(dsn: str, kwargs: Mapping[str, Any]) -> None:
    """Async twin of :func:`probe`."""
    try:
        await (await psycopg.AsyncConnection.connect(dsn, **kwargs)).close()
    except psycopg.Error as exc:
        raise translate(exc) from exc


# ---- the caller's conn= ----------------------------------------------------------------------

_ACCEPTED = ("a psycopg Connection/AsyncConnection or a SQLAlchemy Connection/Session/"
             "AsyncConnection/AsyncSession using the postgresql+psycopg dialect")


def _driver_conn(sa_conn: Any) -> Any:
    """psycopg connection of a SQLAlchemy (sync) Connection, after making it begin."""
    if not sa_conn.in_transaction():
        sa_conn.begin()
    raw = sa_conn.connection.driver_connection
    return raw


def sync_connection(conn: Any) -> psycopg.Connection[Any]:
    """The psycopg connection to run on for a sync ``conn=`` argument."""
    if isinstance(conn, psycopg.Connection):
        return conn
    if isinstance(conn, psycopg.AsyncConnection):
        raise ValidationError("an AsyncConnection was passed to a sync call; use the async "
                              "variant (e.g. enqueue_async) or pass a sync connection")
    try:
        import sqlalchemy as sa
        from sqlalchemy.orm import Session
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        raise ValidationError(f"conn must be {_ACCEPTED}") from None
    if isinstance(conn, Session):
        conn = conn.connection()
    if isinstance(conn, sa.Connection):
        raw = _driver_conn(conn)
        if isinstance(raw, psycopg.Connection):
            return raw
        raise ValidationError(f"conn uses the {conn.dialect.driver!r} driver; pgqueue needs "
                              "the psycopg 3 dialect: create_engine('postgresql+psycopg://...')")
    raise ValidationError(f"conn must be {_ACCEPTED}, not {type(conn).__name__}")


async def async_connection(conn: Any) -> psycopg.AsyncConnection[Any]:
    """The psycopg async connection to run on for an async ``conn=`` argument."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if isinstance(conn, psycopg.Connection):
        raise ValidationError("a sync psycopg Connection was passed to an async call; use the "
                              "sync variant (e.g. enqueue) or pass an AsyncConnection")
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(conn, AsyncSession):
        conn = await conn.connection()
    if isinstance(conn, AsyncConnection):
        if not conn.in_transaction():
            await conn.begin()
        raw = (await conn.get_raw_connection()).driver_connection
        if isinstance(raw, psycopg.AsyncConnection):
            return raw
        raise ValidationError(f"conn uses the {conn.dialect.driver!r} driver; pgqueue needs "
                              "the psycopg 3 async dialect: "
                              "create_async_engine('postgresql+psycopg://...')")
    raise ValidationError(f"conn must be {_ACCEPTED}, not {type(conn).__name__}")
