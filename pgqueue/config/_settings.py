"""The :class:`Settings` object: every setting, its default and its invariants."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pgqueue._defaults import (
    DEFAULT_CONCURRENCY,
    DEFAULT_EVENT_LOOP,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_REDIS_TIMEOUT,
    DEFAULT_REDIS_URL,
    DEFAULT_SCHEMA,
)
from pgqueue._dsn import check_redis_url, redact, to_libpq
from pgqueue.config._values import (
    MAX_ATTEMPTS,
    MAX_CONCURRENCY,
    parse_driver,
    parse_event_loop,
    parse_int,
    parse_pooler,
    parse_routes,
    parse_schema,
    parse_seconds,
)
from pgqueue.errors import ConfigurationError

__all__ = ["FIELDS", "Settings", "needs_database_url"]

#: the settings, in the order :meth:`Settings.describe` lists them
FIELDS = ("driver", "database_url", "schema", "cluster", "pooler", "listen_url", "routes",
          "concurrency", "max_attempts", "poll_interval", "event_loop", "redis_url",
          "redis_timeout", "sqs_region", "sqs_endpoint")


def needs_database_url(names: tuple[str, ...]) -> str:
    """The message for a postgres driver without a database URL; ``names`` are the places
    that can set one (variables, YAML keys), most likely first."""
    first, *rest = names
    also = f" (or {', '.join(rest)})" if rest else ""
    return (f"the postgres driver needs a database URL: set {first}{also} to "
            "postgresql://user@host:5432/dbname")


@dataclass(frozen=True)
class Settings:
    """Validated queue settings. Build with :func:`pgqueue.load_settings`; every field records
    where its value came from (:meth:`source`, :meth:`describe`).

    Attributes:
        driver: canonical driver name: ``"postgres"``, ``"memory"`` (default), ``"redis"`` or
            ``"sqs"``.
        database_url: libpq connection string for postgres (with ``cluster`` applied), or None.
        schema: PostgreSQL schema of pgqueue's tables (default ``pgqueue``).
        cluster: the hosts of a multi-host postgres connection (``"host:port"``), or ``()``.
        pooler: what stands between pgqueue and PostgreSQL: None (default), ``"transaction"``
            (PgBouncer's transaction mode and most cloud poolers) or ``"session"``; see
            :class:`~pgqueue.drivers.postgres.driver.PostgresDriver`.
        listen_url: a direct PostgreSQL URL for the worker's LISTEN connection when
            ``database_url`` is a transaction pooler (default None: the database URL, or
            polling behind a transaction pooler).
        routes: the queues a worker consumes (``()`` = the queues of the app's tasks).
        concurrency: jobs a worker runs at once (default 1).
        max_attempts: attempts of a job before it is archived as failed (default 5).
        poll_interval: seconds between checks when no wake-up arrives (default 1.0).
        event_loop: the event loop a worker runs on: ``"asyncio"`` (default), ``"uvloop"``
            (``pip install 'pgqueue-tx[uvloop]'``) or ``"auto"`` (uvloop when installed); see
            :class:`pgqueue.Worker`.
        redis_url: Redis URL for the redis driver (default ``redis://127.0.0.1:6379/0``).
        redis_timeout: seconds Redis may take to answer a command before the call fails
            with :class:`pgqueue.DatabaseUnavailableError` (default 5).
        sqs_region: the AWS region of the sqs driver (default None: boto3's own configuration).
        sqs_endpoint: another SQS endpoint for the sqs driver (LocalStack, moto), or None.
        sources: field name -> where the value came from (``"default"``, ``"env ..."``, ...).
    """

    driver: str = "memory"
    database_url: str | None = None
    schema: str = DEFAULT_SCHEMA
    cluster: tuple[str, ...] = ()
    pooler: str | None = None
    listen_url: str | None = None
    routes: tuple[str, ...] = ()
    concurrency: int = DEFAULT_CONCURRENCY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    poll_interval: float = DEFAULT_POLL_INTERVAL
    event_loop: str = DEFAULT_EVENT_LOOP
    redis_url: str = DEFAULT_REDIS_URL
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT
    sqs_region: str | None = None
    sqs_endpoint: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Check the invariants (also for a ``Settings(...)`` built by hand)."""
        def src(name: str) -> str:
            return self.sources.get(name, "argument")

        object.__setattr__(self, "driver", parse_driver(self.driver, "driver", src("driver")))
        object.__setattr__(self, "schema", parse_schema(self.schema, "schema", src("schema")))
        object.__setattr__(self, "routes", parse_routes(self.routes, "routes", src("routes")))
        object.__setattr__(self, "concurrency", parse_int(
            self.concurrency, "concurrency", src("concurrency"), 1, MAX_CONCURRENCY))
        object.__setattr__(self, "max_attempts", parse_int(
            self.max_attempts, "max_attempts", src("max_attempts"), 1, MAX_ATTEMPTS))
        object.__setattr__(self, "poll_interval", parse_seconds(
            self.poll_interval, "poll_interval", src("poll_interval")))
        object.__setattr__(self, "event_loop", parse_event_loop(
            self.event_loop, "event_loop", src("event_loop")))
        object.__setattr__(self, "redis_timeout", parse_seconds(
            self.redis_timeout, "redis_timeout", src("redis_timeout")))
        object.__setattr__(self, "cluster", tuple(self.cluster))
        if self.pooler is not None:
            object.__setattr__(self, "pooler", parse_pooler(self.pooler, "pooler",
                                                            src("pooler")))
        if self.listen_url is not None:
            object.__setattr__(self, "listen_url", to_libpq(
                self.listen_url, source=src("listen_url")))
        if self.database_url is not None:
            object.__setattr__(self, "database_url", to_libpq(
                self.database_url, source=src("database_url")))
        object.__setattr__(self, "redis_url", check_redis_url(
            self.redis_url, key="redis_url", source=src("redis_url")))
        full = {name: self.sources.get(name, "default") for name in FIELDS}
        object.__setattr__(self, "sources", types.MappingProxyType(full))

    def __repr__(self) -> str:
        """Every field as in a dataclass repr, the connection strings' passwords shown as
        ``***`` (a repr ends up in logs and tracebacks): for
        ``Settings(driver="postgres", database_url="postgresql://app:pw@db/shop")`` it reads
        ``Settings(driver='postgres', database_url='user=app password=*** dbname=shop host=db',
        ...)``."""
        parts = []
        for name in FIELDS:
            value = getattr(self, name)
            if name in ("database_url", "redis_url", "listen_url") and value is not None:
                value = redact(value)
            parts.append(f"{name}={value!r}")
        return f"Settings({', '.join(parts)})"

    def source(self, name: str) -> str:
        """Where the value of setting ``name`` came from."""
        if name not in FIELDS:
            raise ConfigurationError(f"unknown setting; known: {', '.join(FIELDS)}", key=name)
        return self.sources[name]

    def describe(self) -> list[tuple[str, str, str]]:
        """``(setting, value, source)`` rows for display (``pgqueue config``); passwords are
        shown as ``***``."""
        rows: list[tuple[str, str, str]] = []
        for name in FIELDS:
            value: Any = getattr(self, name)
            if name in ("database_url", "redis_url", "listen_url"):
                text = redact(value) if value else "(not set)"
            elif name == "pooler":
                text = value or "none"
            elif name in ("routes", "cluster"):
                text = ",".join(value) if value else (
                    "(all queues of the app's tasks)" if name == "routes" else "(not set)")
            else:
                text = str(value)
            rows.append((name, text, self.sources[name]))
        return rows

    def worker_options(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`pgqueue.App.worker`: ``queues`` (the routes, or None for
        the queues of the app's tasks), ``concurrency``, ``poll_interval`` and
        ``event_loop``."""
        return {"queues": list(self.routes) or None, "concurrency": self.concurrency,
                "poll_interval": self.poll_interval, "event_loop": self.event_loop}
