"""Reach the psycopg connection behind whatever the caller passed as ``conn=``.

Accepted: psycopg ``Connection`` and ``AsyncConnection``; SQLAlchemy ``Connection`` and
``Session`` (sync) and ``AsyncConnection`` and ``AsyncSession`` (async), on the ``psycopg``
dialect. pgqueue's statements then run on that connection, inside its transaction: they commit or
roll back with the caller's own writes. SQLAlchemy objects are made to begin their transaction
first, so that the caller's ``commit()`` covers pgqueue's rows.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue.errors import ValidationError

__all__ = ["async_connection", "sync_connection"]

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
