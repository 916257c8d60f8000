"""The Redis wake-up listener: pub/sub on the worker's own event loop (``redis.asyncio``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING

from pgqueue._service import Service
from pgqueue.drivers.base import WakeCallback

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["RedisListener"]

log = logging.getLogger("pgqueue.redis")


class RedisListener(Service):
    """Subscribes to the driver's pub/sub channels and hands wake-ups to the worker's callback.

    Runs on the worker's event loop (``redis.asyncio``). On a connection error it reconnects
    with exponential backoff and reports ``("reconnected", None)`` so the worker re-checks for
    work it may have missed. Pub/sub is a hint: the worker's polling covers lost messages.

    Stopping does not rely on task cancellation alone: redis-py's pub/sub read can swallow a
    ``CancelledError`` (its reconnect logic catches it), so the loop also checks a stop flag
    after every read, which returns at least every ``read_timeout`` seconds.
    """

    name = "redis-listener"
    cancel_on_stop = True

    def __init__(self, url: str, prefix: str, callback: WakeCallback, *,
                 connect_timeout: float = 5.0, health_interval: float = 5.0,
                 read_timeout: float = 0.5) -> None:
        super().__init__(logger=log)
        self.stop_timeout = read_timeout + 5.0
        self._url = url
        self._jobs_channel = f"{prefix}:jobs"
        self._ctl_channel = f"{prefix}:ctl"
        self._callback = callback
        self._connect_timeout = connect_timeout
        self._health_interval = health_interval
        self._read_timeout = read_timeout
        self.connected = asyncio.Event()
        self.reconnects = 0

    async def stop(self) -> None:
        await super().stop()
        self.connected.clear()

    async def run(self) -> None:
        import redis.asyncio as aioredis

        first = True
        delay = 0.1
        while not self.stopping:
            client: aioredis.Redis | None = None
            try:
                client = aioredis.Redis.from_url(
                    self._url, decode_responses=True,
                    socket_connect_timeout=self._connect_timeout,
                    health_check_interval=self._health_interval)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(self._jobs_channel, self._ctl_channel)
                    self.connected.set()
                    if not first:
                        self.reconnects += 1
                        log.info("redis listener reconnected",
                                 extra={"event": "listener_reconnected"})
                        self._callback("reconnected", None)
                    first = False
                    delay = 0.1
                    while not self.stopping:
                        msg = await pubsub.get_message(timeout=self._read_timeout)
                        if msg is not None and not self.stopping:
                            self._dispatch(str(msg["channel"]), str(msg["data"]))
                finally:
                    self.connected.clear()
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.stopping:
                    return
                log.warning("redis listener connection lost: %s; reconnecting in %.1f s", exc,
                            delay, extra={"event": "listener_lost"})
                await self.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()

    def _dispatch(self, channel: str, data: str) -> None:
        if channel == self._jobs_channel:
            self._callback("job", data)
        elif channel == self._ctl_channel:
            try:
                self._callback("control", json.loads(data))
            except ValueError:
                log.warning("ignoring malformed control message %r", data)
