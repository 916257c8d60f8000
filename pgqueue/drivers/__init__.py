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
    "sqs": "sqs",
}

_NOT_PROVIDED = {
    "kafka": "Kafka is not provided by pgqueue (no priorities, no delays, no per-job retries "
             "in place); use 'postgres' (or 'redis')",
}


#: the options of get_driver("sqs", ...) passed on to SqsDriver (others, such as the App's
#: ``schema``, are ignored as for the other drivers)
_SQS_OPTIONS = ("region", "endpoint_url", "queue_prefix", "create_queues", "aws_access_key_id",
                "aws_secret_access_key", "aws_session_token", "wait_time_s",
                "max_message_bytes", "scan_hold_s", "connect_timeout", "read_timeout")


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
    ``socket_timeout`` (redis, seconds per command; default 5); ``region``, ``endpoint_url``,
    ``queue_prefix`` and the other keyword arguments of
    :class:`~pgqueue.drivers.sqs.SqsDriver` (sqs). Example::

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
    if canonical == "sqs":
        from pgqueue.drivers.sqs import SqsDriver

        sqs_options = {k: v for k, v in options.items() if k in _SQS_OPTIONS}
        return SqsDriver(**sqs_options)
    from pgqueue.drivers.redis import RedisDriver

    return RedisDriver(options.get("url", "redis://127.0.0.1:6379/0"),
                       prefix=options.get("prefix", "pgqueue"),
                       socket_timeout=options.get("socket_timeout", DEFAULT_REDIS_TIMEOUT))
