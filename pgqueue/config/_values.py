"""Value checks for settings: each parser takes a raw value (text from the environment or a
``.env`` file, a YAML scalar or list, a keyword argument), the setting's name and where the value
came from, and returns the typed value or raises a :class:`pgqueue.ConfigurationError` naming
all three and what is allowed."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pgqueue._defaults import EVENT_LOOPS, POOLERS, pooler_value
from pgqueue._dsn import parse_hosts
from pgqueue._names import validate_name, validate_schema
from pgqueue.drivers import canonical_name
from pgqueue.errors import ConfigurationError, DriverError, ValidationError

MAX_CONCURRENCY = 1000
MAX_ATTEMPTS = 1000
MAX_POLL_INTERVAL = 3600.0

_DRIVERS_ALLOWED = "postgres (or postgresql, database, pg), memory, redis, sqs"
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def kind_of(value: object) -> str:
    """``"a mapping"``, ``"a list"``, ``"a string"``... for messages about a value's type."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def parse_driver(value: object, key: str, source: str) -> str:
    """A canonical driver name (``postgres``, ``memory``, ``redis``)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"must be a driver name ({_DRIVERS_ALLOWED}), not {value!r}",
                                 key=key, source=source)
    try:
        return canonical_name(value)
    except DriverError as exc:
        raise ConfigurationError(f"{exc}", key=key, source=source) from exc


def parse_int(value: object, key: str, source: str, low: int, high: int) -> int:
    """An integer from ``low`` to ``high`` (text is accepted, booleans are not)."""
    allowed = f"an integer from {low} to {high}"
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ConfigurationError(f"{value!r} is not an integer; allowed: {allowed}",
                                     key=key, source=source)
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{value!r} is not an integer; allowed: {allowed}", key=key,
                                 source=source)
    if not low <= value <= high:
        raise ConfigurationError(f"{value} is out of range; allowed: {allowed}", key=key,
                                 source=source)
    return value


def parse_seconds(value: object, key: str, source: str) -> float:
    """A duration in seconds, > 0 and <= an hour (text: ``0.5``, ``0.5s`` or ``500ms``)."""
    allowed = f"a number of seconds > 0 and <= {MAX_POLL_INTERVAL:g} (e.g. 0.5 or 500ms)"
    number: float
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*(ms|s)?\s*", value)
        if m is None:
            raise ConfigurationError(f"{value!r} is not a duration; allowed: {allowed}",
                                     key=key, source=source)
        number = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{value!r} is not a number; allowed: {allowed}", key=key,
                                 source=source)
    else:
        number = float(value)
    if math.isnan(number) or not 0 < number <= MAX_POLL_INTERVAL:
        raise ConfigurationError(f"{value!r} is out of range; allowed: {allowed}", key=key,
                                 source=source)
    return number


def parse_schema(value: object, key: str, source: str) -> str:
    """A schema name (see :func:`pgqueue._names.validate_schema`)."""
    try:
        return validate_schema(value.strip() if isinstance(value, str) else value)
    except ValidationError as exc:
        raise ConfigurationError(str(exc), key=key, source=source) from exc


def parse_routes(value: object, key: str, source: str) -> tuple[str, ...]:
    """Queue names from a comma list or a list, without duplicates, in order."""
    if isinstance(value, str):
        items: list[object] = [part.strip() for part in value.split(",")]
        items = [i for i in items if i]
        if not items and value.strip():
            raise ConfigurationError(f"{value!r} names no queue; allowed: a comma list of "
                                     "queue names, e.g. 'emails,default'", key=key,
                                     source=source)
    elif isinstance(value, Iterable) and not isinstance(value, bytes | Mapping):
        items = list(value)
    else:
        raise ConfigurationError(f"must be a comma list or a list of queue names, not "
                                 f"{kind_of(value)}", key=key, source=source)
    out: list[str] = []
    for item in items:
        try:
            name = validate_name(item.strip() if isinstance(item, str) else item, "queue")
        except ValidationError as exc:
            raise ConfigurationError(str(exc), key=key, source=source) from exc
        if name not in out:
            out.append(name)
    return tuple(out)


def parse_cluster(value: object, key: str, source: str) -> tuple[str, ...] | bool:
    """``True`` (hosts from the URL), ``False`` (off), or a tuple of ``host:port``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        return parse_hosts([p.strip() for p in text.split(",")], key=key, source=source)
    if isinstance(value, Sequence):
        return parse_hosts(list(value), key=key, source=source)
    raise ConfigurationError(f"{value!r} is not valid; allowed: a comma list of host[:port] "
                             "entries (e.g. 'db1:5432,db2:5432'), or true/false", key=key,
                             source=source)


def parse_text(value: object, key: str, source: str) -> str:
    """A non-empty string, stripped (connection strings are checked once the driver is
    known)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"must be a non-empty string, not {value!r}", key=key,
                                 source=source)
    return value.strip()


def parse_pooler(value: object, key: str, source: str) -> str | None:
    """``none``, ``transaction`` or ``session`` (what stands between pgqueue and PostgreSQL)."""
    try:
        return pooler_value(value)
    except ValueError:
        raise ConfigurationError(f"{value!r} is not valid; allowed: none, "
                                 f"{', '.join(POOLERS)}", key=key, source=source) from None


def parse_event_loop(value: object, key: str, source: str) -> str:
    """``asyncio``, ``uvloop`` or ``auto`` (the worker's event loop), case-insensitive."""
    if isinstance(value, str) and value.strip().lower() in EVENT_LOOPS:
        return value.strip().lower()
    raise ConfigurationError(f"{value!r} is not valid; allowed: {', '.join(EVENT_LOOPS)}",
                             key=key, source=source)


#: setting -> its parser. ``config`` is a connection string for whichever driver is finally
#: selected (the database URL for postgres, the Redis URL for redis).
PARSERS: Mapping[str, Callable[[Any, str, str], Any]] = {
    "driver": parse_driver,
    "database_url": parse_text,
    "config": parse_text,
    "redis_url": parse_text,
    "schema": parse_schema,
    "cluster": parse_cluster,
    "pooler": parse_pooler,
    "listen_url": parse_text,
    "routes": parse_routes,
    "concurrency": lambda v, k, s: parse_int(v, k, s, 1, MAX_CONCURRENCY),
    "max_attempts": lambda v, k, s: parse_int(v, k, s, 1, MAX_ATTEMPTS),
    "poll_interval": parse_seconds,
    "event_loop": parse_event_loop,
    "redis_timeout": parse_seconds,
    "sqs_region": parse_text,
    "sqs_endpoint": parse_text,
}


def parse_setting(name: str, value: object, source: str) -> Any:
    """``value`` checked and typed for setting ``name`` (a field of :class:`Settings`, or
    ``config``); raises :class:`pgqueue.ConfigurationError` naming ``source``."""
    return PARSERS[name](value, name, source)
