"""The Redis driver package: :mod:`~pgqueue.drivers.redis.driver` (the operations),
:mod:`~pgqueue.drivers.redis.listener` (pub/sub wake-ups) and ``scripts/*.lua`` (one Lua script
per state change, loaded from the package's files)."""

from pgqueue.drivers.redis.driver import RedisDriver
from pgqueue.drivers.redis.listener import RedisListener

__all__ = ["RedisDriver", "RedisListener"]
