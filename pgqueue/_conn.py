"""The connection types that ``conn=`` accepts, for type checkers.

Passing your own connection or session to an enqueue call (or to ``App.complete``) makes pgqueue's
write part of your transaction. The sync calls take a sync connection, the ``_async`` calls an
async one; a type checker flags the mismatch (at run time it is a
:class:`pgqueue.ValidationError`)::

    with psycopg.connect(url) as c:                       # SyncConn
        app.enqueue("send_email", {"to": "a@b.c"}, conn=c)

    async with AsyncSession(engine) as s:                 # AsyncConn
        await app.enqueue_async("send_email", {"to": "a@b.c"}, conn=s)

SQLAlchemy connections and sessions must use the ``postgresql+psycopg`` dialect (psycopg 3).
The aliases are strings so that importing pgqueue does not import SQLAlchemy's ORM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import psycopg
    import sqlalchemy
    import sqlalchemy.ext.asyncio
    import sqlalchemy.orm

__all__ = ["AsyncConn", "SyncConn"]

#: A sync connection pgqueue can write through: psycopg ``Connection``, SQLAlchemy
#: ``Connection`` or ``Session``.
SyncConn: TypeAlias = "psycopg.Connection[Any] | sqlalchemy.Connection | sqlalchemy.orm.Session"

#: An async connection pgqueue can write through: psycopg ``AsyncConnection``, SQLAlchemy
#: ``AsyncConnection`` or ``AsyncSession``.
AsyncConn: TypeAlias = ("psycopg.AsyncConnection[Any] | sqlalchemy.ext.asyncio.AsyncConnection"
                        " | sqlalchemy.ext.asyncio.AsyncSession")
