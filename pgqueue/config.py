"""Settings: one validated, frozen object built from defaults, a YAML file, a ``.env`` file, the
environment and explicit arguments -- never writing ``os.environ``.

::

    settings = pgqueue.config.load_settings(yaml_file="app-config.yaml", env_file=".env")
    app = settings.make_app()                      # postgres, memory or redis
    app.worker(**settings.worker_options()).run_forever()

Layers, later wins:

1. **defaults** -- see :class:`Settings`;
2. **YAML** (``yaml_file``), in the backstage shape (needs PyYAML: ``pip install
   'pgqueue[yaml]'``)::

       backend:
         queue:
           defaultStore: postgres          # driver
           defaultConcurrency: 5           # concurrency
           maxAttempts: 3                  # max_attempts
           redis:    {connection: redis://localhost:6379}
           postgres: {connection: postgresql://u@h/db, schema: backstage__queue_service}
           # pgqueue extensions: routes: [a, b], pollInterval: 0.5, cluster: [h1:5432, h2:5432]
           # sqs: / kafka: sections are accepted and ignored (those stores are not provided)

3. **.env** (``env_file``): ``KEY=VALUE`` lines with the same keys as the environment; ``#``
   comments (whole-line, or after whitespace in an unquoted value), ``export KEY=...``, single
   quotes (literal) and double quotes (``\\n``, ``\\t``, ``\\"``, ``\\\\`` escapes). No variable
   expansion. Read by pgqueue itself; nothing is put into ``os.environ``.
4. **environment** (``environ``, default ``os.environ``, only read):

   ===========================================  ================================================
   variables (highest precedence last)          setting
   ===========================================  ================================================
   ``QUEUE_DRIVER``, ``VELA_QUEUE_DRIVER``,     ``driver``: postgres (aliases postgresql,
   ``PGQUEUE_QUEUE_DRIVER``                     database, pg), memory, redis
   ``DATABASE_URL``, ``QUEUE_CONFIG``,          the connection string of the selected driver
   ``VELA_QUEUE_CONFIG``,                       (``QUEUE_CONFIG`` family: database URL for
   ``PGQUEUE_QUEUE_CONFIG``,                    postgres, Redis URL for redis; ``DATABASE_URL``
   ``PGQUEUE_DATABASE_URL``                     and ``PGQUEUE_DATABASE_URL``: postgres only;
                                                ``PGQUEUE_DATABASE_URL`` wins over the
                                                ``QUEUE_CONFIG`` family, ``DATABASE_URL``
                                                loses to it)
   ``QUEUE_CLUSTER``, ``VELA_QUEUE_CLUSTER``,   ``cluster``: ``host1:5432,host2:5432`` (or
   ``PGQUEUE_QUEUE_CLUSTER``                    ``true``: the hosts of the URL)
   ``QUEUE_ROUTES``, ``VELA_QUEUE_ROUTES``,     ``routes``: comma list of the queues a worker
   ``PGQUEUE_QUEUE_ROUTES``                     consumes
   ``QUEUE_REDIS_HOST/PORT/DB/PASSWORD``,       ``redis_url`` (the parts build
   ``QUEUE_CONFIG`` family,                     ``redis://:password@host:port/db``)
   ``PGQUEUE_REDIS_URL``
   ``QUEUE_TABLE``, ``QUEUE_FAILED_TABLE``,     ``schema`` (see below)
   ``PGQUEUE_SCHEMA``
   ``PGQUEUE_CONCURRENCY``                      ``concurrency``
   ``PGQUEUE_POLL_INTERVAL``                    ``poll_interval`` (seconds; ``500ms`` also ok)
   ``PGQUEUE_MAX_ATTEMPTS``                     ``max_attempts``
   ===========================================  ================================================

   Within one layer the most specific name wins: ``PGQUEUE_`` over ``VELA_`` over the bare
   ``QUEUE_`` name (bare names are shared with other programs), and a full connection string
   over the ``QUEUE_REDIS_*`` parts. An empty value counts as not set.
5. **overrides**: keyword arguments named like the fields (``None`` = not set).

``QUEUE_TABLE`` / ``QUEUE_FAILED_TABLE``: pgqueue's tables are always ``jobs`` and
``failed_jobs`` inside a schema. The values ``jobs`` / ``failed_jobs`` are accepted as they
are; ``myschema.jobs`` / ``myschema.failed_jobs`` select the schema ``myschema``; anything
else is an error.

``cluster`` (postgres): a multi-host connection so that a worker follows a failover. The
hosts (``host``, ``host:port``, ``[v6addr]:port``; port default 5432) replace the host of the
database URL (which still gives user, password and database), and
``target_session_attrs=read-write`` makes libpq pick the primary. ``true`` keeps the hosts of the
URL (``postgresql://u@h1:5432,h2:5432/db``) and only adds ``target_session_attrs``; ``false``
disables it. The redis driver does not support Redis Cluster (an error says so).

Driver default: ``postgres`` when a database URL (or a cluster host list) is configured
anywhere, else ``memory`` (as in the backstage and velocity seeds).

Checks: every value is checked in the source it comes from, even when a later source overrides
it, and any invalid value raises :class:`pgqueue.ConfigurationError` naming the setting, the
source (``env VELA_QUEUE_DRIVER``, ``app-config.yaml: backend.queue.maxAttempts``,
``.env line 3: QUEUE_DRIVER``, ``argument concurrency``) and what is allowed. Connection
strings are checked for the driver that is finally selected.
"""

from __future__ import annotations

import math
import os
import re
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue._dsn import to_libpq
from pgqueue._names import validate_name, validate_schema
from pgqueue.drivers import canonical_name
from pgqueue.errors import ConfigurationError, DriverError, ValidationError

if TYPE_CHECKING:
    from pgqueue.app import App

__all__ = ["ENV_VARS", "FIELDS", "Settings", "load_settings", "read_env_file"]

DEFAULT_SCHEMA = "pgqueue"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CONCURRENCY = 1
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_POLL_INTERVAL = 1.0
MAX_CONCURRENCY = 1000
MAX_ATTEMPTS = 1000
MAX_POLL_INTERVAL = 3600.0

#: the settings, in the order :meth:`Settings.describe` lists them
FIELDS = ("driver", "database_url", "schema", "cluster", "routes", "concurrency",
          "max_attempts", "poll_interval", "redis_url")

_DRIVERS_ALLOWED = "postgres (or postgresql, database, pg), memory, redis"


# ---- the settings object -------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Validated queue settings. Build with :func:`load_settings`; every field records where its
    value came from (:meth:`source`, :meth:`describe`).

    Attributes:
        driver: canonical driver name: ``"postgres"``, ``"memory"`` or ``"redis"``.
        database_url: libpq connection string for postgres (with ``cluster`` applied), or None.
        schema: PostgreSQL schema of pgqueue's tables (default ``pgqueue``).
        cluster: the hosts of a multi-host postgres connection (``"host:port"``), or ``()``.
        routes: the queues a worker consumes (``()`` = the queues of the app's tasks).
        concurrency: jobs a worker runs at once (default 1).
        max_attempts: attempts of a job before it is archived as failed (default 5).
        poll_interval: seconds between checks when no wake-up arrives (default 1.0).
        redis_url: Redis URL for the redis driver (default ``redis://127.0.0.1:6379/0``).
        sources: field name -> where the value came from (``"default"``, ``"env ..."``, ...).
    """

    driver: str = "memory"
    database_url: str | None = None
    schema: str = DEFAULT_SCHEMA
    cluster: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    concurrency: int = DEFAULT_CONCURRENCY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    poll_interval: float = DEFAULT_POLL_INTERVAL
    redis_url: str = DEFAULT_REDIS_URL
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Check the invariants (also for a ``Settings(...)`` built by hand)."""
        def src(name: str) -> str:
            return self.sources.get(name, "argument")

        object.__setattr__(self, "driver", _parse_driver(self.driver, "driver", src("driver")))
        object.__setattr__(self, "schema", _parse_schema(self.schema, "schema", src("schema")))
        object.__setattr__(self, "routes", _parse_routes(self.routes, "routes", src("routes")))
        object.__setattr__(self, "concurrency", _parse_int(
            self.concurrency, "concurrency", src("concurrency"), 1, MAX_CONCURRENCY))
        object.__setattr__(self, "max_attempts", _parse_int(
            self.max_attempts, "max_attempts", src("max_attempts"), 1, MAX_ATTEMPTS))
        object.__setattr__(self, "poll_interval", _parse_seconds(
            self.poll_interval, "poll_interval", src("poll_interval")))
        object.__setattr__(self, "cluster", tuple(self.cluster))
        if self.database_url is not None:
            object.__setattr__(self, "database_url", _check_postgres_url(
                self.database_url, src("database_url")))
        object.__setattr__(self, "redis_url", _check_redis_url(
            self.redis_url, "redis_url", src("redis_url")))
        full = {name: self.sources.get(name, "default") for name in FIELDS}
        object.__setattr__(self, "sources", types.MappingProxyType(full))

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
            if name == "database_url":
                text = redact_conninfo(value) if value else "(not set)"
            elif name == "redis_url":
                text = redact_url(value)
            elif name in ("routes", "cluster"):
                text = ",".join(value) if value else (
                    "(all queues of the app's tasks)" if name == "routes" else "(not set)")
            else:
                text = str(value)
            rows.append((name, text, self.sources[name]))
        return rows

    def make_app(self, *, driver: str | None = None, **app_kwargs: Any) -> App:
        """Build a :class:`pgqueue.App` for these settings.

        ``driver`` picks another configured driver than :attr:`driver` (the backstage
        ``store`` option). postgres uses :attr:`database_url` and :attr:`schema`; redis uses
        :attr:`redis_url`; memory needs nothing. ``app_kwargs`` go to ``App`` (``strict``,
        ``default_queue``, ``pool_size``).
        """
        from pgqueue.app import App
        from pgqueue.drivers import get_driver

        name = self.driver if driver is None else _parse_driver(driver, "driver", "argument")
        if name == "postgres":
            if not self.database_url:
                raise ConfigurationError(
                    "the postgres driver needs a database URL: set QUEUE_CONFIG (or "
                    "PGQUEUE_DATABASE_URL, DATABASE_URL, backend.queue.postgres.connection) to "
                    "postgresql://user@host:5432/dbname",
                    key="database_url", source=self.sources["database_url"])
            return App(database_url=self.database_url, schema=self.schema, **app_kwargs)
        if name == "memory":
            return App(driver=get_driver("memory"), schema=self.schema, **app_kwargs)
        return App(driver=get_driver("redis", url=self.redis_url), schema=self.schema,
                   **app_kwargs)

    def worker_options(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`pgqueue.App.worker`: ``queues`` (the routes, or None for
        the queues of the app's tasks), ``concurrency`` and ``poll_interval``."""
        return {"queues": list(self.routes) or None, "concurrency": self.concurrency,
                "poll_interval": self.poll_interval}


# ---- loading ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Entry:
    """One raw value from one source: ``rank`` orders entries (later layer, then more specific
    name, wins)."""

    value: Any
    source: str
    rank: tuple[int, int]


_LAYER_YAML, _LAYER_DOTENV, _LAYER_ENV, _LAYER_ARGS = 1, 2, 3, 4

#: environment variable -> (setting, rank within the layer). ``config`` is QUEUE_CONFIG: it
#: applies to the connection of whichever driver is finally selected.
_ENV_KEYS: dict[str, tuple[str, int]] = {
    "QUEUE_DRIVER": ("driver", 0), "VELA_QUEUE_DRIVER": ("driver", 1),
    "PGQUEUE_QUEUE_DRIVER": ("driver", 2),
    "DATABASE_URL": ("database_url", -1), "PGQUEUE_DATABASE_URL": ("database_url", 10),
    "QUEUE_CONFIG": ("config", 0), "VELA_QUEUE_CONFIG": ("config", 1),
    "PGQUEUE_QUEUE_CONFIG": ("config", 2),
    "QUEUE_CLUSTER": ("cluster", 0), "VELA_QUEUE_CLUSTER": ("cluster", 1),
    "PGQUEUE_QUEUE_CLUSTER": ("cluster", 2),
    "QUEUE_ROUTES": ("routes", 0), "VELA_QUEUE_ROUTES": ("routes", 1),
    "PGQUEUE_QUEUE_ROUTES": ("routes", 2),
    "QUEUE_TABLE": ("schema", 0), "QUEUE_FAILED_TABLE": ("schema", 0),
    "PGQUEUE_SCHEMA": ("schema", 10),
    "PGQUEUE_CONCURRENCY": ("concurrency", 10),
    "PGQUEUE_POLL_INTERVAL": ("poll_interval", 10),
    "PGQUEUE_MAX_ATTEMPTS": ("max_attempts", 10),
    "PGQUEUE_REDIS_URL": ("redis_url", 10),
}
_REDIS_PARTS = ("QUEUE_REDIS_HOST", "QUEUE_REDIS_PORT", "QUEUE_REDIS_DB", "QUEUE_REDIS_PASSWORD")

#: every variable pgqueue reads (from the environment or a .env file)
ENV_VARS = (*_ENV_KEYS, *_REDIS_PARTS)


def load_settings(*, environ: Mapping[str, str] | None = None,
                  yaml_file: str | Path | None = None, env_file: str | Path | None = None,
                  **overrides: Any) -> Settings:
    """Build :class:`Settings` from (later wins) defaults, ``yaml_file``, ``env_file``,
    ``environ`` (default: ``os.environ``, only read) and ``overrides`` (keyword arguments named
    like the fields; ``None`` = not set).

    Raises :class:`pgqueue.ConfigurationError` for any invalid value, naming the setting, its
    source and what is allowed. See the module documentation for every key.
    """
    entries: dict[str, list[_Entry]] = {}

    def add(name: str, entry: _Entry) -> None:
        entries.setdefault(name, []).append(entry)

    if yaml_file is not None:
        for name, entry in _yaml_entries(Path(yaml_file)):
            add(name, entry)
    if env_file is not None:
        path = Path(env_file)
        values = _read_env_lines(path)
        for name, entry in _env_entries(
                {k: v for k, (v, _) in values.items()}, _LAYER_DOTENV,
                lambda var: f"{path} line {values[var][1]}: {var}"):
            add(name, entry)
    env = os.environ if environ is None else environ
    for name, entry in _env_entries(env, _LAYER_ENV, lambda var: f"env {var}"):
        add(name, entry)
    for key, value in overrides.items():
        if key not in FIELDS:
            raise ConfigurationError(f"unknown setting; allowed: {', '.join(FIELDS)}",
                                     key=key, source="argument")
        if value is not None:
            source = f"argument {key}"
            add(key, _Entry(_PARSERS[key](value, key, source), source, (_LAYER_ARGS, 0)))
    return _resolve(entries)


def _winner(entries: dict[str, list[_Entry]], *names: str) -> tuple[str, _Entry] | None:
    found = [(e.rank, i, name, e) for name in names for i, e in enumerate(entries.get(name, []))]
    if not found:
        return None
    _, _, name, entry = max(found, key=lambda t: (t[0], t[1]))
    return name, entry


def _resolve(entries: dict[str, list[_Entry]]) -> Settings:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    for name in ("schema", "routes", "concurrency", "max_attempts", "poll_interval"):
        won = _winner(entries, name)
        if won is not None:
            values[name], sources[name] = won[1].value, won[1].source

    # driver: explicit, else inferred from the connection settings
    won = _winner(entries, "driver")
    if won is not None:
        driver, sources["driver"] = won[1].value, won[1].source
    else:
        config = _winner(entries, "config")
        if config is not None and str(config[1].value).lower().startswith(("redis", "unix")):
            driver = "redis"
            sources["driver"] = f"default (from the scheme of {config[1].source})"
        elif config is not None or _winner(entries, "database_url") is not None:
            driver = "postgres"
            sources["driver"] = "default (a database URL is set)"
        elif (listed := _winner(entries, "cluster")) is not None and isinstance(
                listed[1].value, tuple) and listed[1].value:
            driver = "postgres"
            sources["driver"] = f"default (a cluster is set by {listed[1].source})"
        else:
            driver = "memory"
            sources["driver"] = "default (no database URL is set)"
    values["driver"] = driver

    # connections: QUEUE_CONFIG joins the candidates of the selected driver
    db_names = ("database_url", "config") if driver == "postgres" else ("database_url",)
    redis_names = ("redis_url", "config") if driver == "redis" else ("redis_url",)
    won = _winner(entries, *db_names)
    database_url: str | None = None
    if won is not None:
        database_url = _check_postgres_url(won[1].value, won[1].source)
        sources["database_url"] = won[1].source
    won = _winner(entries, *redis_names)
    if won is not None:
        values["redis_url"] = _check_redis_url(won[1].value, "redis_url", won[1].source)
        sources["redis_url"] = won[1].source

    won = _winner(entries, "cluster")
    if won is not None:
        cluster, csource = won[1].value, won[1].source
        sources["cluster"] = csource
        if driver == "redis" and cluster:
            raise ConfigurationError(
                "the redis driver does not support Redis Cluster; point the connection at one "
                "Redis server (or use the postgres driver, where cluster means a multi-host "
                "connection)", key="cluster", source=csource)
        if driver == "postgres" and cluster:
            if database_url is None:
                raise ConfigurationError(
                    "a postgres cluster needs a database URL for user, password and database "
                    "name: set QUEUE_CONFIG (or PGQUEUE_DATABASE_URL) as well",
                    key="cluster", source=csource)
            database_url, hosts = _apply_cluster(database_url, cluster, csource)
            values["cluster"] = hosts
    if driver == "postgres" and database_url is None:
        raise ConfigurationError(
            "the postgres driver needs a database URL: set QUEUE_CONFIG (or "
            "PGQUEUE_DATABASE_URL, DATABASE_URL, backend.queue.postgres.connection) to "
            "postgresql://user@host:5432/dbname", key="driver", source=sources["driver"])
    values["database_url"] = database_url
    return Settings(**values, sources=sources)


# ---- sources ----------------------------------------------------------------------------------
def _env_entries(env: Mapping[str, str], layer: int,
                 source_of: Callable[[str], str]) -> list[tuple[str, _Entry]]:
    """Entries from environment-shaped variables (the environment or a .env file)."""
    out: list[tuple[str, _Entry]] = []
    table_schemas: list[tuple[str, str, str]] = []
    for var, (name, rank) in _ENV_KEYS.items():
        raw = env.get(var)
        if raw is None or not raw.strip():
            continue
        source = source_of(var)
        if var in ("QUEUE_TABLE", "QUEUE_FAILED_TABLE"):
            schema = _parse_table(raw, var, source)
            if schema is None:
                continue
            table_schemas.append((schema, var, source))
            value: Any = schema
        else:
            value = _PARSERS[name](raw, name, source)
        out.append((name, _Entry(value, source, (layer, rank))))
    if len({s for s, _, _ in table_schemas}) > 1:
        (s1, v1, _), (s2, v2, src2) = table_schemas[0], table_schemas[1]
        raise ConfigurationError(f"{v1} selects schema {s1!r} but {v2} selects {s2!r}; both "
                                 "tables live in one schema", key="schema", source=src2)
    parts = {var: env[var] for var in _REDIS_PARTS if env.get(var, "").strip()}
    if parts:
        source = ", ".join(source_of(var) for var in parts)
        out.append(("redis_url", _Entry(_redis_from_parts(parts, source_of), source,
                                         (layer, -1))))
    return out


def _yaml_entries(path: Path) -> list[tuple[str, _Entry]]:
    """Entries from a YAML file in the backstage shape (``backend.queue``)."""
    source = str(path)
    try:
        import yaml
    except ImportError:
        raise ConfigurationError("reading a YAML file needs PyYAML: pip install "
                                 "'pgqueue[yaml]'", key="yaml_file", source=source) from None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the file: {exc.strerror or exc}",
                                 key="yaml_file", source=source) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigurationError(f"YAML syntax error{where}: {problem}", key="yaml_file",
                                 source=source) from exc

    def line(*keys: str) -> str:
        n = node
        for key in keys:
            if not isinstance(n, yaml.MappingNode):
                break
            found = [v for k, v in n.value if getattr(k, "value", None) == key]
            if not found:
                break
            n = found[-1]
        return f" line {n.start_mark.line + 1}" if n is not None else ""

    def src(*keys: str) -> str:
        return f"{source}{line(*keys)}: {'.'.join(keys)}"

    if data is None:
        return []
    if not isinstance(data, dict):
        raise ConfigurationError(f"the top level must be a mapping, not {_kind(data)}",
                                 key="yaml_file", source=source)
    backend = data.get("backend")
    if backend is None:
        return []
    if not isinstance(backend, dict):
        raise ConfigurationError(f"must be a mapping, not {_kind(backend)}", key="backend",
                                 source=src("backend"))
    queue = backend.get("queue")
    if queue is None:
        return []
    if not isinstance(queue, dict):
        raise ConfigurationError(f"must be a mapping, not {_kind(queue)}", key="backend.queue",
                                 source=src("backend", "queue"))
    allowed = ("defaultStore", "defaultConcurrency", "maxAttempts", "pollInterval", "routes",
               "cluster", "redis", "postgres", "sqs", "kafka")
    for key in queue:
        if key not in allowed:
            raise ConfigurationError(f"unknown key {key!r}; allowed: {', '.join(allowed)}",
                                     key=f"backend.queue.{key}",
                                     source=src("backend", "queue", str(key)))
    out: list[tuple[str, _Entry]] = []
    base = ("backend", "queue")

    def put(name: str, keys: tuple[str, ...], value: Any, kind: type | tuple[type, ...],
            kind_text: str) -> None:
        where = src(*base, *keys)
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigurationError(f"must be {kind_text}, not a boolean", key=name,
                                     source=where)
        if not isinstance(value, kind):
            raise ConfigurationError(f"must be {kind_text}, not {_kind(value)}", key=name,
                                     source=where)
        out.append((name, _Entry(_PARSERS[name](value, name, where), where, (_LAYER_YAML, 0))))

    simple = (("driver", "defaultStore", str, "a string (memory, redis or postgres)"),
              ("concurrency", "defaultConcurrency", int, "an integer from 1 to 1000"),
              ("max_attempts", "maxAttempts", int, "an integer from 1 to 1000"),
              ("poll_interval", "pollInterval", (int, float), "a number of seconds"),
              ("routes", "routes", (list, str), "a list of queue names"),
              ("cluster", "cluster", (list, str, bool), "a list of host:port entries"))
    for name, key, kind, text in simple:
        if queue.get(key) is not None:
            put(name, (key,), queue[key], kind, text)
    for store, keys in (("redis", ("connection",)), ("postgres", ("connection", "schema")),
                        ("sqs", None), ("kafka", None)):
        section = queue.get(store)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ConfigurationError(f"must be a mapping, not {_kind(section)}",
                                     key=f"backend.queue.{store}",
                                     source=src(*base, store))
        if keys is None:
            continue  # sqs/kafka: accepted, not provided (selecting them is an error)
        for key in section:
            if key not in keys:
                raise ConfigurationError(f"unknown key {key!r}; allowed: {', '.join(keys)}",
                                         key=f"backend.queue.{store}.{key}",
                                         source=src(*base, store, str(key)))
        if section.get("connection") is not None:
            name = "redis_url" if store == "redis" else "database_url"
            put(name, (store, "connection"), section["connection"], str, "a connection string")
        if store == "postgres" and section.get("schema") is not None:
            put("schema", (store, "schema"), section["schema"], str, "a schema name")
    return out


def read_env_file(path: str | Path) -> dict[str, str]:
    """Parse a ``.env`` file into a dict (see the module docs for the syntax). Nothing is put
    into ``os.environ``. Raises :class:`pgqueue.ConfigurationError` for a malformed line."""
    return {k: v for k, (v, _) in _read_env_lines(Path(path)).items()}


_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _read_env_lines(path: Path) -> dict[str, tuple[str, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the file: {exc.strerror or exc}",
                                 key="env_file", source=str(path)) from exc
    out: dict[str, tuple[str, int]] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        source = f"{path} line {number}"
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not _ENV_KEY_RE.fullmatch(key):
            raise ConfigurationError(
                f"malformed line {raw_line.strip()[:60]!r}: expected KEY=VALUE (KEY: letters, "
                "digits and _), a # comment or a blank line", key="env_file", source=source)
        out[key] = (_env_value(rest.strip(), key, source), number)
    return out


def _env_value(rest: str, key: str, source: str) -> str:
    if rest[:1] in ("'", '"'):
        quote_char = rest[0]
        chars: list[str] = []
        i = 1
        while i < len(rest):
            c = rest[i]
            if quote_char == '"' and c == "\\" and i + 1 < len(rest):
                nxt = rest[i + 1]
                chars.append(_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            if c == quote_char:
                tail = rest[i + 1:].strip()
                if tail and not tail.startswith("#"):
                    raise ConfigurationError(f"unexpected text {tail[:30]!r} after the closing "
                                             "quote (a comment needs '#')", key=key,
                                             source=source)
                return "".join(chars)
            chars.append(c)
            i += 1
        raise ConfigurationError(f"unterminated {quote_char} quote; close it on the same line",
                                 key=key, source=source)
    comment = re.search(r"\s#", rest)
    return (rest[:comment.start()] if comment else rest).rstrip()


# ---- value parsers ----------------------------------------------------------------------------
def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _parse_driver(value: object, key: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"must be a driver name ({_DRIVERS_ALLOWED}), not {value!r}",
                                 key=key, source=source)
    try:
        return canonical_name(value)
    except DriverError as exc:
        raise ConfigurationError(f"{exc}", key=key, source=source) from exc


def _parse_int(value: object, key: str, source: str, low: int, high: int) -> int:
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


def _parse_seconds(value: object, key: str, source: str) -> float:
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


def _parse_schema(value: object, key: str, source: str) -> str:
    try:
        return validate_schema(value.strip() if isinstance(value, str) else value)
    except ValidationError as exc:
        raise ConfigurationError(str(exc), key=key, source=source) from exc


def _parse_routes(value: object, key: str, source: str) -> tuple[str, ...]:
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
                                 f"{_kind(value)}", key=key, source=source)
    out: list[str] = []
    for item in items:
        try:
            name = validate_name(item.strip() if isinstance(item, str) else item, "queue")
        except ValidationError as exc:
            raise ConfigurationError(str(exc), key=key, source=source) from exc
        if name not in out:
            out.append(name)
    return tuple(out)


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _parse_cluster(value: object, key: str, source: str) -> tuple[str, ...] | bool:
    """``True`` (hosts from the URL), ``False``/() (off), or a tuple of ``host:port``."""
    allowed = ("a comma list of host[:port] entries (e.g. 'db1:5432,db2:5432'), or "
               "true/false")
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        parts: list[object] = [p.strip() for p in text.split(",")]
    elif isinstance(value, Sequence):
        parts = list(value)
    else:
        raise ConfigurationError(f"{value!r} is not valid; allowed: {allowed}", key=key,
                                 source=source)
    hosts: list[str] = []
    for part in parts:
        if not isinstance(part, str) or not part:
            raise ConfigurationError(f"empty or non-text host {part!r}; allowed: {allowed}",
                                     key=key, source=source)
        m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._\-]+)(?::(\d+))?", part)
        if m is None or not 1 <= int(m.group(2) or 5432) <= 65535:
            raise ConfigurationError(f"{part!r} is not host[:port]; allowed: {allowed}",
                                     key=key, source=source)
        hosts.append(f"{m.group(1)}:{int(m.group(2) or 5432)}")
    return tuple(hosts)


def _parse_text(value: object, key: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"must be a non-empty string, not {value!r}", key=key,
                                 source=source)
    return value.strip()


_PARSERS: dict[str, Callable[[Any, str, str], Any]] = {
    "driver": _parse_driver,
    "database_url": _parse_text,
    "config": _parse_text,
    "redis_url": _parse_text,
    "schema": _parse_schema,
    "cluster": _parse_cluster,
    "routes": _parse_routes,
    "concurrency": lambda v, k, s: _parse_int(v, k, s, 1, MAX_CONCURRENCY),
    "max_attempts": lambda v, k, s: _parse_int(v, k, s, 1, MAX_ATTEMPTS),
    "poll_interval": _parse_seconds,
}


def _parse_table(value: str, var: str, source: str) -> str | None:
    """``QUEUE_TABLE``/``QUEUE_FAILED_TABLE`` -> the schema it selects (None = unchanged)."""
    table = "jobs" if var == "QUEUE_TABLE" else "failed_jobs"
    text = value.strip()
    if text == table:
        return None
    schema, dot, name = text.rpartition(".")
    if dot and name == table:
        return _parse_schema(schema, "schema", source)
    raise ConfigurationError(
        f"{text!r} is not supported: pgqueue's tables are always 'jobs' and 'failed_jobs' "
        f"inside a schema; allowed: '{table}' or '<schema>.{table}' (which selects the schema; "
        "or set PGQUEUE_SCHEMA)", key="schema", source=source)


# ---- connection strings -----------------------------------------------------------------------
def _check_postgres_url(value: str, source: str) -> str:
    """A normalised libpq connection string (``to_libpq``), with its ports checked too."""
    conninfo = to_libpq(value, source=source)
    port = str(conninfo_to_dict(conninfo).get("port") or "")
    for part in filter(None, port.split(",")):
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise ConfigurationError(
                f"port {part!r} is not a number from 1 to 65535; expected "
                "postgresql://user@host:5432/dbname", key="database_url", source=source)
    return conninfo


def _check_redis_url(value: str, key: str, source: str) -> str:
    allowed = "redis://[:password@]host[:port][/db], rediss://... or unix:///path/redis.sock"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{redact_url(value)!r} is malformed ({exc}); allowed: "
                                 f"{allowed}", key=key, source=source) from exc
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"{redact_url(value)!r} is not a Redis URL; allowed: "
                                 f"{allowed}", key=key, source=source)
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"{value!r} names no socket path; allowed: {allowed}",
                                     key=key, source=source)
        return value
    if not parts.hostname:
        raise ConfigurationError(f"{redact_url(value)!r} has no host; allowed: {allowed}",
                                 key=key, source=source)
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigurationError(f"database {db!r} is not a number; allowed: {allowed}",
                                 key=key, source=source)
    if port is not None and not 1 <= port <= 65535:
        raise ConfigurationError(f"port {port} is out of range; allowed: {allowed}", key=key,
                                 source=source)
    return value


def _redis_from_parts(parts: Mapping[str, str], source_of: Callable[[str], str]) -> str:
    """``redis://:password@host:port/db`` from the velocity ``QUEUE_REDIS_*`` variables."""
    host = parts.get("QUEUE_REDIS_HOST", "localhost").strip()
    if not re.fullmatch(r"[A-Za-z0-9._\-]+|[0-9A-Fa-f:]+", host):
        raise ConfigurationError(f"{host!r} is not a host name or address", key="redis_url",
                                 source=source_of("QUEUE_REDIS_HOST"))
    port = _parse_int(parts.get("QUEUE_REDIS_PORT", "6379"), "redis_url",
                      source_of("QUEUE_REDIS_PORT"), 1, 65535)
    db = _parse_int(parts.get("QUEUE_REDIS_DB", "0"), "redis_url",
                    source_of("QUEUE_REDIS_DB"), 0, 1_000_000)
    password = parts.get("QUEUE_REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    netloc_host = f"[{host}]" if ":" in host else host
    return f"redis://{auth}{netloc_host}:{port}/{db}"


def _apply_cluster(conninfo: str, cluster: tuple[str, ...] | bool,
                   source: str) -> tuple[str, tuple[str, ...]]:
    """The conninfo with the cluster's hosts and ``target_session_attrs=read-write``."""
    params: dict[str, Any] = dict(conninfo_to_dict(conninfo))
    if isinstance(cluster, tuple):
        hosts = [h.rsplit(":", 1) for h in cluster]
        params["host"] = ",".join(h.strip("[]") for h, _ in hosts)
        params["port"] = ",".join(p for _, p in hosts)
        params.pop("hostaddr", None)
    host_list = str(params.get("host") or "").split(",")
    port_list = str(params.get("port") or "5432").split(",")
    if len(port_list) == 1:
        port_list = port_list * len(host_list)
    params["target_session_attrs"] = "read-write"
    try:
        result = make_conninfo(**params)
        conninfo_to_dict(result)
    except psycopg.ProgrammingError as exc:  # pragma: no cover - inputs were checked above
        raise ConfigurationError(f"cannot build the multi-host connection: {exc}",
                                 key="cluster", source=source) from exc
    named = tuple(f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
                  for h, p in zip(host_list, port_list, strict=False) if h)
    return result, named


def redact_conninfo(conninfo: str) -> str:
    """A libpq connection string with its password replaced by ``***``."""
    try:
        params: dict[str, Any] = dict(conninfo_to_dict(conninfo))
    except psycopg.ProgrammingError:
        return "(unparseable)"
    if params.get("password"):
        params["password"] = "***"
    return make_conninfo(**params)


def redact_url(url: str) -> str:
    """A URL with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = unquote(parts.username or "")
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "(unparseable)"
