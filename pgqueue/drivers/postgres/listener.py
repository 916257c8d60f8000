"""One LISTEN connection per worker process, multiplexing every queue.

The listener owns a dedicated autocommit connection that LISTENs on the schema's job channel
(payload: queue name) and control channel (payload: JSON ``{"op": ...}``). It hands each
notification to the worker's callback on the event loop. Every ``health_interval`` seconds
without traffic it runs ``SELECT 1`` so that a dead or half-open connection is noticed; on any
connection error it reconnects with exponential backoff (tenacity), re-LISTENs and reports
``("reconnected", None)`` so the worker re-checks the database for anything it missed.
NOTIFY is a hint: the worker's polling fallback covers lost notifications.

LISTEN needs one server session for as long as it listens. Through a transaction pooler
(PgBouncer's ``pool_mode = transaction``) the LISTEN lands on whichever server session the
pooler lends for that statement, and the notifications go there, not here: wake-ups would be
lost without a trace. So, unless told that the pooler keeps one server session per client
(``pooler="session"``), each connection is checked: a pooler announces a made-up process id at
startup, which ``pg_backend_pid()`` then contradicts. Found at start, that is a
:class:`~pgqueue.ConfigurationError` (the worker does not start); found on a reconnect, one
error line and the worker goes on by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import psycopg
from psycopg import sql
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential, wait_random

from pgqueue._dsn import redact
from pgqueue._service import Service
from pgqueue.drivers.base import WakeCallback
from pgqueue.drivers.postgres.sql import BACKEND_PID, Statements
from pgqueue.errors import ConfigurationError

log = logging.getLogger("pgqueue.listener")

__all__ = ["PgListener"]


class PgListener(Service):
    """The LISTEN connection of one worker (a service: ``start``/``stop``, see
    :mod:`pgqueue._service`). Its task owns the connection; ``connected`` is set while it is
    up, and ``reconnects`` counts the times it came back."""

    name = "listener"
    cancel_on_stop = True

    def __init__(self, dsn: str, statements: Statements, callback: WakeCallback, *,
                 connect_timeout: float = 10.0, health_interval: float = 5.0,
                 check_pooler: bool = True) -> None:
        super().__init__(logger=log)
        self._check_pooler = check_pooler
        self._dsn = dsn
        self._sql = statements
        self._callback = callback
        self._connect_timeout = connect_timeout
        self._health_interval = health_interval
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0

    async def start(self) -> None:
        """Connect and LISTEN, then start the task that pumps notifications. A connection
        through a transaction pooler is a :class:`~pgqueue.ConfigurationError` here; a server
        that does not answer yet is not (the task keeps trying, the worker polls meanwhile)."""
        if self._task is None and self._conn is None:
            with contextlib.suppress(psycopg.OperationalError, OSError):
                await self._connect()
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        await self._close()

    @property
    def backend_pid(self) -> int | None:
        return self._conn.info.backend_pid if self._conn is not None else None

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self.connected.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _connect(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, connect_timeout=max(1, int(self._connect_timeout)))
        try:
            if self._check_pooler:
                await self._refuse_pooler(conn)
            for chan in (self._sql.jobs_channel, self._sql.control_channel):
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(chan)))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self.connected.set()

    async def _refuse_pooler(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Raise if ``conn`` goes through a pooler (see the module docstring)."""
        row = await (await conn.execute(BACKEND_PID)).fetchone()
        announced = conn.info.backend_pid
        if row is not None and row[0] != announced:
            raise ConfigurationError(
                f"the LISTEN connection ({redact(self._dsn)}) goes through a connection pooler "
                f"(it announced process {announced}, the server runs it as {row[0]}); "
                "behind a transaction pooler LISTEN loses every wake-up: set listen_url "
                "(PGQUEUE_LISTEN_URL) to PostgreSQL itself, or pooler='transaction' "
                "(PGQUEUE_POOLER) to poll instead, or pooler='session' if the pooler keeps "
                "one server session per client", key="listen_url")

    async def run(self) -> None:
        first = True
        while True:
            try:
                if self._conn is not None:  # connected by start()
                    first = False
                    await self._pump()
                    continue
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type((psycopg.OperationalError, OSError)),
                    wait=wait_exponential(multiplier=0.1, max=5.0) + wait_random(0, 0.1),
                ):
                    with attempt:
                        await self._connect()
                if not first:
                    self.reconnects += 1
                    log.info("listener reconnected", extra={"event": "listener_reconnected"})
                    self._callback("reconnected", None)
                first = False
                await self._pump()
            except asyncio.CancelledError:
                raise
            except ConfigurationError as exc:  # now behind a pooler: stop listening
                log.error("%s; going on without wake-ups (polling)", exc,
                          extra={"event": "listener_behind_pooler"})
                return
            except Exception as exc:  # the connection died: log, reconnect
                log.warning("listener connection lost: %s; reconnecting", exc,
                            extra={"event": "listener_lost"})
            finally:
                await self._close()

    async def _pump(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            got = False
            async for note in conn.notifies(timeout=self._health_interval):
                got = True
                self._dispatch(note.channel, note.payload)
            if not got:  # quiet: make sure the connection is really alive
                await asyncio.wait_for(conn.execute("SELECT 1"), timeout=self._connect_timeout)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == self._sql.jobs_channel:
            self._callback("job", payload)
        elif channel == self._sql.control_channel:
            try:
                self._callback("control", json.loads(payload))
            except ValueError:
                log.warning("ignoring malformed control message %r", payload)
