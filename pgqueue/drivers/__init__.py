"""Drivers behind one seam (see :mod:`pgqueue.drivers.base`), chosen by name."""

from __future__ import annotations

from typing import Any

from pgqueue._defaults import DEFAULT_REDIS_TIMEOUT, DEFAULT_SCHEMA
from pgqueue.drivers.base import Capabilities, Driver
from pgqueue.errors import DriverError

__all__ = ["DRIVER_NAMES", "Capabilities", "Driver", "get_driver"]

#: accepted names -> canonical name
DRIVER_NAMES = {
    "postgres": "postgres", "postgresql": "postgres", "database": "postgres", "pg": "postgres",
    "memory": "memory",
    "redis": "redis",
}

_NOT_PROVIDED = {
    "sqs": "Amazon SQS is not provided by pgqueue (no priorities, delays capped at 15 min, and "
           "no server here to test against); use 'postgres' (or 'redis')",
    "kafka": "Kafka is not provided by pgqueue (no priorities, no delays, no per-job retries "
             "in place); use 'postgres' (or 'redis')",
}


def canonical_name(name: str) -> str:
    key = name.strip().lower() if isinstance(name, str) else name
    if key in _NOT_PROVIDED:
        raise DriverError(f"driver {name!r}: {_NOT_PROVIDED[key]}")
    if key not in DRIVER_NAMES:
        raise DriverError(f"unknown driver {name!r}; choose one of "
                          f"{', '.join(sorted(DRIVER_NAMES))}")
    return DRIVER_NAMES[key]


def get_driver(name: str, **options: Any) -> Driver:
    """Build a driver by name. Options: ``dsn``, ``schema``, ``pool_size``,
    ``connect_timeout``, ``lock_timeout``, ``statement_timeout``, ``prepare_threshold``,
    ``pooler`` and ``listen_url`` (postgres, see
    :class:`~pgqueue.drivers.postgres.driver.PostgresDriver`); ``url``, ``prefix`` and
    ``socket_timeout`` (redis, seconds per command; default 5). Example::

        app = pgqueue.App(driver=get_driver("postgres", dsn=url, lock_timeout=2.0))
    """
    canonical = canonical_name(name)
    if canonical == "postgres":
        from pgqueue.drivers.postgres.driver import PostgresDriver

        if not options.get("dsn"):
            raise DriverError("the postgres driver needs a database URL (dsn=...)")
        extra = {k: options[k] for k in ("lock_timeout", "statement_timeout", "pool_size",
                                          "connect_timeout", "prepare_threshold", "pooler",
                                          "listen_url") if k in options}
        return PostgresDriver(options["dsn"], schema=options.get("schema", DEFAULT_SCHEMA),
                              **extra)
    if canonical == "memory":
        from pgqueue.drivers.memory import MemoryDriver

        return MemoryDriver()
    from pgqueue.drivers.redis import RedisDriver

    return RedisDriver(options.get("url", "redis://127.0.0.1:6379/0"),
                       prefix=options.get("prefix", "pgqueue"),
                       socket_timeout=options.get("socket_timeout", DEFAULT_REDIS_TIMEOUT))
