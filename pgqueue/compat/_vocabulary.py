"""The configuration vocabularies of the three products pgqueue replaces, as
:class:`pgqueue.config.Vocabulary` values that :func:`pgqueue.compat.load_settings` (and so
:func:`pgqueue.load_settings`) hands to the generic loader.

**Vela** (environment; within one layer ``PGQUEUE_`` over ``VELA_`` over the bare ``QUEUE_``
name, as bare names are shared with other programs):

=========================================  ==============================================
variables (least specific first)           setting
=========================================  ==============================================
``QUEUE_DRIVER``, ``VELA_QUEUE_DRIVER``    ``driver``
``QUEUE_CONFIG``, ``VELA_QUEUE_CONFIG``    the connection string of the selected driver
                                           (database URL for postgres, Redis URL for
                                           redis); wins over ``DATABASE_URL``, loses to
                                           ``PGQUEUE_DATABASE_URL``
``QUEUE_CLUSTER``, ``VELA_QUEUE_CLUSTER``  ``cluster``
``QUEUE_ROUTES``, ``VELA_QUEUE_ROUTES``    ``routes``
=========================================  ==============================================

**Velocity** (its ``.env``, or the environment):

- ``QUEUE_DRIVER=memory|redis|database`` (``database`` = postgres);
- ``QUEUE_REDIS_HOST`` / ``PORT`` / ``DB`` / ``PASSWORD`` build ``redis_url``
  (``redis://:password@host:port/db``; defaults ``localhost``, 6379, 0); a full connection
  string in the same layer wins over the parts;
- ``QUEUE_TABLE`` / ``QUEUE_FAILED_TABLE``: pgqueue's tables are always ``jobs`` and
  ``failed_jobs`` inside a schema. The values ``jobs`` / ``failed_jobs`` are accepted as they
  are; ``myschema.jobs`` / ``myschema.failed_jobs`` select the schema ``myschema`` (below
  ``PGQUEUE_SCHEMA``); anything else is an error.

**Backstage** (``app-config.yaml``)::

    backend:
      queue:
        defaultStore: postgres          # driver
        defaultConcurrency: 5           # concurrency
        maxAttempts: 3                  # max_attempts
        redis:    {connection: redis://localhost:6379}
        postgres: {connection: postgresql://u@h/db, schema: backstage__queue_service}
        # pgqueue extensions: routes: [a, b], pollInterval: 0.5, eventLoop: uvloop,
        #                     cluster: [h1:5432, h2:5432]
        sqs:      {region: us-east-1, endpoint: http://localhost:4566}   # sqs_region/endpoint
        # a kafka: section is accepted and ignored (that store is not provided)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pgqueue._defaults import FAILED_JOBS_TABLE, JOBS_TABLE
from pgqueue._dsn import redis_url
from pgqueue.config import Found, Vocabulary, YamlDocument, kind_of, parse_int, parse_setting
from pgqueue.errors import ConfigurationError

__all__ = ["BACKSTAGE", "SEEDS", "VELA", "VELOCITY"]


# ---- Vela --------------------------------------------------------------------------------------
VELA = Vocabulary(
    name="vela",
    env={
        "QUEUE_DRIVER": ("driver", 0), "VELA_QUEUE_DRIVER": ("driver", 1),
        "QUEUE_CONFIG": ("config", 0), "VELA_QUEUE_CONFIG": ("config", 1),
        "QUEUE_CLUSTER": ("cluster", 0), "VELA_QUEUE_CLUSTER": ("cluster", 1),
        "QUEUE_ROUTES": ("routes", 0), "VELA_QUEUE_ROUTES": ("routes", 1),
    },
    database_url_names=("QUEUE_CONFIG",),
)


# ---- Velocity ----------------------------------------------------------------------------------
_TABLE_VARS = (("QUEUE_TABLE", JOBS_TABLE), ("QUEUE_FAILED_TABLE", FAILED_JOBS_TABLE))
_REDIS_PARTS = ("QUEUE_REDIS_HOST", "QUEUE_REDIS_PORT", "QUEUE_REDIS_DB", "QUEUE_REDIS_PASSWORD")


def _table_schema(value: str, var: str, table: str, source: str) -> str | None:
    """``QUEUE_TABLE``/``QUEUE_FAILED_TABLE`` -> the schema it selects (None = unchanged)."""
    text = value.strip()
    if text == table:
        return None
    schema, dot, name = text.rpartition(".")
    if dot and name == table:
        return str(parse_setting("schema", schema, source))
    raise ConfigurationError(
        f"{text!r} is not supported: pgqueue's tables are always '{JOBS_TABLE}' and "
        f"'{FAILED_JOBS_TABLE}' inside a schema; allowed: '{table}' or '<schema>.{table}' "
        "(which selects the schema; or set PGQUEUE_SCHEMA)", key="schema", source=source)


def _velocity_tables(variables: Mapping[str, str],
                     source_of: Callable[[str], str]) -> list[Found]:
    """The schema ``QUEUE_TABLE`` / ``QUEUE_FAILED_TABLE`` select (they must agree)."""
    found: list[tuple[Found, str]] = []
    for var, table in _TABLE_VARS:
        raw = variables.get(var)
        if raw is None or not raw.strip():
            continue
        source = source_of(var)
        schema = _table_schema(raw, var, table, source)
        if schema is not None:
            found.append((Found("schema", schema, source), var))
    if len({f.value for f, _ in found}) > 1:
        (f1, v1), (f2, v2) = found
        raise ConfigurationError(f"{v1} selects schema {f1.value!r} but {v2} selects "
                                 f"{f2.value!r}; both tables live in one schema", key="schema",
                                 source=f2.source)
    return [f for f, _ in found]


def _velocity_redis(variables: Mapping[str, str],
                    source_of: Callable[[str], str]) -> list[Found]:
    """``redis_url`` from the ``QUEUE_REDIS_*`` parts (below a full URL of the same layer)."""
    parts = {var: variables[var] for var in _REDIS_PARTS if variables.get(var, "").strip()}
    if not parts:
        return []

    def src(var: str) -> str:
        return source_of(var) if var in parts else "default"

    host = parts.get("QUEUE_REDIS_HOST", "localhost").strip()
    if not re.fullmatch(r"[A-Za-z0-9._\-]+|[0-9A-Fa-f:]+", host):
        raise ConfigurationError(f"{host!r} is not a host name or address", key="redis_url",
                                 source=src("QUEUE_REDIS_HOST"))
    port = parse_int(parts.get("QUEUE_REDIS_PORT", "6379"), "redis_url",
                     src("QUEUE_REDIS_PORT"), 1, 65535)
    db = parse_int(parts.get("QUEUE_REDIS_DB", "0"), "redis_url", src("QUEUE_REDIS_DB"),
                   0, 1_000_000)
    url = redis_url(host, port, db, parts.get("QUEUE_REDIS_PASSWORD", ""))
    return [Found("redis_url", url, ", ".join(source_of(var) for var in parts), rank=-1)]


VELOCITY = Vocabulary(
    name="velocity",
    env={"QUEUE_DRIVER": ("driver", 0)},
    env_readers=(_velocity_tables, _velocity_redis),
    env_reads=(*(var for var, _ in _TABLE_VARS), *_REDIS_PARTS),
)


# ---- Backstage ---------------------------------------------------------------------------------
_QUEUE_KEYS = ("defaultStore", "defaultConcurrency", "maxAttempts", "pollInterval", "eventLoop",
               "routes", "cluster", "redis", "postgres", "sqs", "kafka")
#: setting, key, accepted YAML types, what the message calls them
_SIMPLE_KEYS: tuple[tuple[str, str, type | tuple[type, ...], str], ...] = (
    ("driver", "defaultStore", str, "a string (memory, redis, postgres or sqs)"),
    ("concurrency", "defaultConcurrency", int, "an integer from 1 to 1000"),
    ("max_attempts", "maxAttempts", int, "an integer from 1 to 1000"),
    ("poll_interval", "pollInterval", (int, float), "a number of seconds"),
    ("event_loop", "eventLoop", str, "a string (asyncio, uvloop or auto)"),
    ("routes", "routes", (list, str), "a list of queue names"),
    ("cluster", "cluster", (list, str, bool), "a list of host:port entries"),
)
#: store section -> its keys (None: accepted and ignored, the store is not provided)
_STORES: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("redis", ("connection",)), ("postgres", ("connection", "schema")),
    ("sqs", ("region", "endpoint")), ("kafka", None))
#: (store, key) -> the setting it sets (and what the message calls a bad value)
_STORE_KEYS = {("redis", "connection"): ("redis_url", "a connection string"),
               ("postgres", "connection"): ("database_url", "a connection string"),
               ("postgres", "schema"): ("schema", "a schema name"),
               ("sqs", "region"): ("sqs_region", "an AWS region name"),
               ("sqs", "endpoint"): ("sqs_endpoint", "a URL (http://host:port)")}


def _backstage_yaml(doc: YamlDocument) -> list[Found]:
    """Settings from ``backend.queue`` of a Backstage ``app-config.yaml``."""
    backend = doc.data.get("backend")
    if backend is None:
        return []
    if not isinstance(backend, dict):
        raise ConfigurationError(f"must be a mapping, not {kind_of(backend)}", key="backend",
                                 source=doc.source("backend"))
    queue = backend.get("queue")
    if queue is None:
        return []
    base = ("backend", "queue")
    if not isinstance(queue, dict):
        raise ConfigurationError(f"must be a mapping, not {kind_of(queue)}", key="backend.queue",
                                 source=doc.source(*base))
    for key in queue:
        if key not in _QUEUE_KEYS:
            raise ConfigurationError(f"unknown key {key!r}; allowed: {', '.join(_QUEUE_KEYS)}",
                                     key=f"backend.queue.{key}",
                                     source=doc.source(*base, str(key)))
    out: list[Found] = []

    def put(name: str, keys: tuple[str, ...], value: Any, kind: type | tuple[type, ...],
            kind_text: str) -> None:
        where = doc.source(*base, *keys)
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigurationError(f"must be {kind_text}, not a boolean", key=name,
                                     source=where)
        if not isinstance(value, kind):
            raise ConfigurationError(f"must be {kind_text}, not {kind_of(value)}", key=name,
                                     source=where)
        out.append(Found(name, parse_setting(name, value, where), where))

    for name, key, kind, text in _SIMPLE_KEYS:
        if queue.get(key) is not None:
            put(name, (key,), queue[key], kind, text)
    for store, keys in _STORES:
        section = queue.get(store)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ConfigurationError(f"must be a mapping, not {kind_of(section)}",
                                     key=f"backend.queue.{store}",
                                     source=doc.source(*base, store))
        if keys is None:
            continue  # kafka: accepted, not provided (selecting it is an error)
        for key in section:
            if key not in keys:
                raise ConfigurationError(f"unknown key {key!r}; allowed: {', '.join(keys)}",
                                         key=f"backend.queue.{store}.{key}",
                                         source=doc.source(*base, store, str(key)))
        for key in keys:
            if section.get(key) is not None:
                name, text = _STORE_KEYS[(store, key)]
                put(name, (store, key), section[key], str, text)
    return out


BACKSTAGE = Vocabulary(
    name="backstage",
    yaml_readers=(_backstage_yaml,),
    database_url_names=("backend.queue.postgres.connection",),
)

#: the three seeds' vocabularies, as :func:`pgqueue.load_settings` reads them
SEEDS = (VELA, VELOCITY, BACKSTAGE)
