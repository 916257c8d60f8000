"""Precedence: :func:`load_settings` gathers the values of every source and layer, keeps the
winner of each setting and resolves the ones that depend on each other (driver, connection
strings, cluster)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgqueue._dsn import apply_cluster, check_redis_url, to_libpq
from pgqueue.config._settings import FIELDS, Settings, needs_database_url
from pgqueue.config._sources import env_values, read_env_lines, read_yaml
from pgqueue.config._values import PARSERS, parse_setting
from pgqueue.config._vocabulary import PGQUEUE, Found, Vocabulary
from pgqueue.errors import ConfigurationError

__all__ = ["ENV_FILE", "YAML_FILE", "find_settings", "load_settings", "register_vocabulary",
           "registered_vocabularies"]

#: files :func:`find_settings` reads from the directory (default: the current one) when they exist
YAML_FILE = "app-config.yaml"
ENV_FILE = ".env"

#: vocabularies every :func:`find_settings` reads besides pgqueue's own (see
#: :func:`register_vocabulary`)
_REGISTERED: list[Vocabulary] = []

_LAYER_YAML, _LAYER_DOTENV, _LAYER_ENV, _LAYER_ARGS = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class _Entry:
    """One checked value from one source: ``rank`` orders entries (later layer, then more
    specific name, wins)."""

    value: Any
    source: str
    rank: tuple[int, int]


def load_settings(*, environ: Mapping[str, str] | None = None,
                  yaml_file: str | Path | None = None, env_file: str | Path | None = None,
                  vocabularies: Sequence[Vocabulary] = (), **overrides: Any) -> Settings:
    """Build :class:`Settings` from (later wins) defaults, ``yaml_file``, ``env_file``,
    ``environ`` (default: ``os.environ``, only read) and ``overrides`` (keyword arguments named
    like the fields; ``None`` = not set).

    Variables are read in pgqueue's own names (:data:`pgqueue.config.PGQUEUE`) and in those of
    ``vocabularies`` (default: none); a YAML file is read only through the ``vocabularies``'
    YAML readers. :func:`pgqueue.load_settings` is this function with the seed products'
    vocabularies (:data:`pgqueue.compat.SEEDS`).

    Raises :class:`pgqueue.ConfigurationError` for any invalid value, naming the setting, its
    source and what is allowed. See :mod:`pgqueue.config` for every key.
    """
    every = (PGQUEUE, *vocabularies)
    entries: dict[str, list[_Entry]] = {}

    def add(found: Sequence[Found], layer: int) -> None:
        for f in found:
            if f.setting not in PARSERS:
                raise ValueError(f"a reader found {f.setting!r}, which is no setting; "
                                 f"settings: {', '.join(PARSERS)}")
            entries.setdefault(f.setting, []).append(_Entry(f.value, f.source, (layer, f.rank)))

    if yaml_file is not None:
        document = read_yaml(Path(yaml_file))
        if document is not None:
            for vocabulary in every:
                for reader in vocabulary.yaml_readers:
                    add(reader(document), _LAYER_YAML)
    if env_file is not None:
        path = Path(env_file)
        lines = read_env_lines(path)
        add(env_values({k: v for k, (v, _) in lines.items()}, every,
                       lambda var: f"{path} line {lines[var][1]}: {var}"), _LAYER_DOTENV)
    env = os.environ if environ is None else environ
    add(env_values(env, every, lambda var: f"env {var}"), _LAYER_ENV)
    for key, value in overrides.items():
        if key not in FIELDS:
            raise ConfigurationError(f"unknown setting; allowed: {', '.join(FIELDS)}",
                                     key=key, source="argument")
        if value is not None:
            source = f"argument {key}"
            add([Found(key, parse_setting(key, value, source), source)], _LAYER_ARGS)
    url_names = tuple(n for v in (*vocabularies, PGQUEUE) for n in v.database_url_names)
    return _resolve(entries, url_names)


def register_vocabulary(*vocabularies: Vocabulary) -> None:
    """Make :func:`find_settings` (the settings ``pgqueue.App()`` and the ``pgqueue`` command
    use when not told otherwise) read ``vocabularies`` as well. Registering a vocabulary again
    (same name) replaces it.

    :mod:`pgqueue.compat` registers the seed products' vocabularies when it is imported, which
    ``import pgqueue`` always does first: so the seeds' variables and YAML keys count
    everywhere, while this package keeps no product's names of its own. Example::

        register_vocabulary(Vocabulary(name="mine", env={"MY_QUEUE_URL": ("database_url", 0)}))
    """
    for vocabulary in vocabularies:
        _REGISTERED[:] = [v for v in _REGISTERED if v.name != vocabulary.name]
        _REGISTERED.append(vocabulary)


def registered_vocabularies() -> tuple[Vocabulary, ...]:
    """The vocabularies :func:`find_settings` reads besides pgqueue's own, in registration
    order."""
    return tuple(_REGISTERED)


def find_settings(directory: str | Path | None = None, *,
                  environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """The one resolution of settings that ``pgqueue.App()`` (for what it is not given) and
    every ``pgqueue`` command use: ``app-config.yaml`` and ``.env`` of ``directory`` (default:
    the current directory) when they exist, then ``environ`` (default ``os.environ``, only
    read), then ``overrides`` -- read in pgqueue's names and those of every registered
    vocabulary (:func:`register_vocabulary`; after ``import pgqueue``: the seeds' variables,
    ``.env`` keys and YAML shape, see :mod:`pgqueue.compat`).

    Nothing is written to ``os.environ``. Raises :class:`pgqueue.ConfigurationError` for any
    invalid value. Example::

        settings = pgqueue.config.find_settings()       # what `pgqueue config` prints
        settings.database_url, settings.source("database_url")
    """
    base = Path.cwd() if directory is None else Path(directory)
    yaml_file, env_file = base / YAML_FILE, base / ENV_FILE
    return load_settings(environ=environ, yaml_file=yaml_file if yaml_file.is_file() else None,
                         env_file=env_file if env_file.is_file() else None,
                         vocabularies=registered_vocabularies(), **overrides)


def _winner(entries: dict[str, list[_Entry]], *names: str) -> tuple[str, _Entry] | None:
    found = [(e.rank, i, name, e) for name in names for i, e in enumerate(entries.get(name, []))]
    if not found:
        return None
    _, _, name, entry = max(found, key=lambda t: (t[0], t[1]))
    return name, entry


def _resolve(entries: dict[str, list[_Entry]], url_names: tuple[str, ...]) -> Settings:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    for name in ("schema", "routes", "concurrency", "max_attempts", "poll_interval",
                 "event_loop", "redis_timeout", "sqs_region", "sqs_endpoint", "pooler",
                 "listen_url"):
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

    # connections: ``config`` joins the candidates of the selected driver
    db_names = ("database_url", "config") if driver == "postgres" else ("database_url",)
    redis_names = ("redis_url", "config") if driver == "redis" else ("redis_url",)
    won = _winner(entries, *db_names)
    database_url: str | None = None
    if won is not None:
        database_url = to_libpq(won[1].value, source=won[1].source)
        sources["database_url"] = won[1].source
    won = _winner(entries, *redis_names)
    if won is not None:
        values["redis_url"] = check_redis_url(won[1].value, key="redis_url",
                                              source=won[1].source)
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
                    f"name: set {' or '.join(url_names[:2])} as well",
                    key="cluster", source=csource)
            database_url, hosts = apply_cluster(database_url, cluster, source=csource)
            values["cluster"] = hosts
    if driver == "postgres" and database_url is None:
        raise ConfigurationError(needs_database_url(url_names), key="driver",
                                 source=sources["driver"])
    values["database_url"] = database_url
    return Settings(**values, sources=sources)
