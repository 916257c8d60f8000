"""Settings as pgqueue.load_settings builds them (pgqueue.config with the seed vocabularies of
pgqueue.compat): every source, the layering, the seed shapes, and errors that name the setting,
its source and what is allowed. The library never writes os.environ."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

import pgqueue
from pgqueue.compat import load_settings
from pgqueue.config import FIELDS, Settings, read_env_file

SEED_ENV = """\
# Queue configuration
QUEUE_DRIVER=memory  # Options: memory, redis, database

# Redis settings (when using redis driver)
QUEUE_REDIS_HOST=localhost
QUEUE_REDIS_PORT=6379
QUEUE_REDIS_DB=0
QUEUE_REDIS_PASSWORD=

# Database settings (when using database driver)
QUEUE_TABLE=jobs
QUEUE_FAILED_TABLE=failed_jobs
"""

SEED_YAML = """\
app:
  title: example
backend:
  queue:
    defaultStore: redis
    redis:
      connection: redis://localhost:6379
    maxAttempts: 3
    defaultConcurrency: 5
"""


@pytest.fixture(autouse=True)
def environ_untouched() -> Iterator[None]:
    """Every test here: os.environ is the same after as before."""
    before = environ_now()
    yield
    assert environ_now() == before


def environ_now() -> dict[str, str]:
    """os.environ without the variable pytest itself updates."""
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def raises_config(key: str, source: str, *words: str) -> Any:
    """Context manager: a ConfigurationError naming ``key`` and ``source`` (and ``words``)."""
    class Check:
        def __enter__(self) -> Check:
            self.ctx = pytest.raises(pgqueue.ConfigurationError)
            self.info = self.ctx.__enter__()
            return self

        def __exit__(self, *exc: Any) -> bool:
            handled = self.ctx.__exit__(*exc)
            err = self.info.value
            text = str(err)
            assert err.key == key, text
            assert err.source is not None and source in err.source, text
            assert text.startswith(f"{key} (from "), text
            for word in words:
                assert word in text, text
            return bool(handled)

    return Check()


# ---- defaults and sources ----------------------------------------------------------------------
def test_defaults_without_any_source() -> None:
    s = load_settings(environ={})
    assert (s.driver, s.database_url, s.schema, s.cluster, s.routes) == (
        "memory", None, "pgqueue", (), ())
    assert (s.concurrency, s.max_attempts, s.poll_interval) == (1, 5, 1.0)
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.source("concurrency") == "default"
    assert s.source("driver").startswith("default")
    assert [row[0] for row in s.describe()] == list(FIELDS)


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_CONCURRENCY", "7")
    s = load_settings()
    assert s.concurrency == 7 and s.source("concurrency") == "env PGQUEUE_CONCURRENCY"


def test_backstage_yaml_shape(tmp_path: Path) -> None:
    path = write(tmp_path, "app-config.yaml", SEED_YAML)
    s = load_settings(environ={}, yaml_file=path)
    assert (s.driver, s.concurrency, s.max_attempts) == ("redis", 5, 3)
    assert s.redis_url == "redis://localhost:6379"
    assert s.source("driver") == f"{path} line 5: backend.queue.defaultStore"
    assert s.source("max_attempts") == f"{path} line 8: backend.queue.maxAttempts"


def test_backstage_yaml_postgres_and_extensions(tmp_path: Path) -> None:
    path = write(tmp_path, "app-config.yaml", """\
backend:
  queue:
    defaultStore: postgres
    postgres:
      connection: postgresql://user:password@localhost:5432/backstage_queue
      schema: backstage__queue_service
    routes: [emails, default]
    pollInterval: 0.25
    sqs: {region: us-east-1}
    kafka: {brokers: [kafka1:9092]}
""")
    s = load_settings(environ={}, yaml_file=path)
    assert s.driver == "postgres"
    params = conninfo_to_dict(s.database_url or "")
    assert (params["dbname"], params["user"], params["password"]) == (
        "backstage_queue", "user", "password")
    assert s.schema == "backstage__queue_service"
    assert s.routes == ("emails", "default")
    assert s.poll_interval == 0.25
    assert s.worker_options() == {"queues": ["emails", "default"], "concurrency": 1,
                                  "poll_interval": 0.25, "event_loop": "asyncio"}


def test_empty_yaml_and_yaml_without_queue_section(tmp_path: Path) -> None:
    assert load_settings(environ={}, yaml_file=write(tmp_path, "a.yaml", "")).driver == "memory"
    other = write(tmp_path, "b.yaml", "backend:\n  baseUrl: http://x\n")
    assert load_settings(environ={}, yaml_file=other).concurrency == 1


def test_velocity_env_file_of_the_seed(tmp_path: Path) -> None:
    path = write(tmp_path, ".env", SEED_ENV)
    assert read_env_file(path)["QUEUE_DRIVER"] == "memory"  # inline comment stripped
    s = load_settings(environ={}, env_file=path)
    assert s.driver == "memory"
    assert s.source("driver") == f"{path} line 2: QUEUE_DRIVER"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.schema == "pgqueue"  # QUEUE_TABLE=jobs / QUEUE_FAILED_TABLE=failed_jobs accepted


def test_env_file_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, ".env", """\
export QUEUE_DRIVER=database
DATABASE_URL='postgresql://u:p#1@h/db'   # single quotes: literal
QUEUE_ROUTES="a,b" # comment after a quoted value
PGQUEUE_SCHEMA = acme
UNRELATED="x\\ty\\n\\"z\\""
EMPTY=
   # indented comment
PGQUEUE_POLL_INTERVAL=250ms
""")
    values = read_env_file(path)
    assert values["UNRELATED"] == 'x\ty\n"z"'
    assert values["EMPTY"] == ""
    s = load_settings(environ={}, env_file=path)
    assert s.driver == "postgres"
    assert conninfo_to_dict(s.database_url or "")["password"] == "p#1"
    assert s.routes == ("a", "b")
    assert s.schema == "acme"
    assert s.poll_interval == 0.25


def test_vela_env_shape_and_prefix_precedence() -> None:
    env = {"QUEUE_DRIVER": "redis", "VELA_QUEUE_DRIVER": "memory",
           "QUEUE_ROUTES": "x", "VELA_QUEUE_ROUTES": "y", "PGQUEUE_QUEUE_ROUTES": "a, b,a"}
    s = load_settings(environ=env)
    assert s.driver == "memory" and s.source("driver") == "env VELA_QUEUE_DRIVER"
    assert s.routes == ("a", "b") and s.source("routes") == "env PGQUEUE_QUEUE_ROUTES"
    s = load_settings(environ={"QUEUE_DRIVER": "database", "PGQUEUE_QUEUE_DRIVER": "redis"})
    assert s.driver == "redis"


def test_queue_config_follows_the_driver() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/app"
    s = load_settings(environ={"VELA_QUEUE_DRIVER": "postgres", "VELA_QUEUE_CONFIG": url})
    assert conninfo_to_dict(s.database_url or "")["dbname"] == "app"
    assert s.source("database_url") == "env VELA_QUEUE_CONFIG"
    s = load_settings(environ={"QUEUE_DRIVER": "redis", "QUEUE_CONFIG": "redis://r:6380/2"})
    assert s.redis_url == "redis://r:6380/2" and s.database_url is None
    # no driver: inferred from the connection string
    assert load_settings(environ={"QUEUE_CONFIG": "redis://r"}).driver == "redis"
    s = load_settings(environ={"QUEUE_CONFIG": url})
    assert s.driver == "postgres" and "database URL" in s.source("driver")
    assert load_settings(environ={"DATABASE_URL": url}).driver == "postgres"
    # memory ignores the connection string of another backend
    assert load_settings(environ={"QUEUE_DRIVER": "memory", "QUEUE_CONFIG": url}).driver == (
        "memory")


def test_database_url_precedence() -> None:
    env = {"DATABASE_URL": "postgresql://h/one", "QUEUE_CONFIG": "postgresql://h/two",
           "VELA_QUEUE_CONFIG": "postgresql://h/three"}
    assert "dbname=three" in (load_settings(environ=env).database_url or "")
    env["PGQUEUE_DATABASE_URL"] = "postgresql://h/four"
    s = load_settings(environ=env)
    assert "dbname=four" in (s.database_url or "")
    assert s.source("database_url") == "env PGQUEUE_DATABASE_URL"


def test_velocity_redis_parts() -> None:
    s = load_settings(environ={"QUEUE_DRIVER": "redis", "QUEUE_REDIS_HOST": "cache",
                               "QUEUE_REDIS_PORT": "6380", "QUEUE_REDIS_DB": "3",
                               "QUEUE_REDIS_PASSWORD": "p@ss/word"})
    assert s.redis_url == "redis://:p%40ss%2Fword@cache:6380/3"
    assert "env QUEUE_REDIS_HOST" in s.source("redis_url")
    described = dict((k, v) for k, v, _ in s.describe())
    assert "p%40ss" not in described["redis_url"] and "***" in described["redis_url"]
    # a full connection string beats the parts in the same layer
    s = load_settings(environ={"QUEUE_DRIVER": "redis", "QUEUE_REDIS_HOST": "cache",
                               "QUEUE_CONFIG": "redis://other:6379/0"})
    assert s.redis_url == "redis://other:6379/0"


def test_queue_table_selects_the_schema() -> None:
    s = load_settings(environ={"QUEUE_TABLE": "acme.jobs",
                               "QUEUE_FAILED_TABLE": "acme.failed_jobs"})
    assert s.schema == "acme"
    s = load_settings(environ={"QUEUE_TABLE": "acme.jobs", "PGQUEUE_SCHEMA": "other"})
    assert s.schema == "other"  # PGQUEUE_SCHEMA is more specific


def test_pgqueue_env_keys() -> None:
    s = load_settings(environ={"PGQUEUE_SCHEMA": "q1", "PGQUEUE_CONCURRENCY": " 8 ",
                               "PGQUEUE_POLL_INTERVAL": "0.5", "PGQUEUE_MAX_ATTEMPTS": "9",
                               "PGQUEUE_REDIS_URL": "rediss://r:6379/1", "QUEUE_ROUTES": ""})
    assert (s.schema, s.concurrency, s.poll_interval, s.max_attempts) == ("q1", 8, 0.5, 9)
    assert s.redis_url == "rediss://r:6379/1"
    assert s.routes == ()  # empty counts as not set


def test_event_loop_from_each_source(tmp_path: Path) -> None:
    """``event_loop``: the environment, a ``.env`` file, the YAML key and an argument set it,
    and its source says which."""
    s = load_settings(environ={})
    assert (s.event_loop, s.source("event_loop")) == ("asyncio", "default")
    s = load_settings(environ={"PGQUEUE_EVENT_LOOP": " UVLOOP "})
    assert (s.event_loop, s.source("event_loop")) == ("uvloop", "env PGQUEUE_EVENT_LOOP")
    env_file = write(tmp_path, ".env", "PGQUEUE_CONCURRENCY=2\nPGQUEUE_EVENT_LOOP=auto\n")
    s = load_settings(environ={}, env_file=env_file)
    assert (s.event_loop, s.source("event_loop")) == (
        "auto", f"{env_file} line 2: PGQUEUE_EVENT_LOOP")
    yaml_file = write(tmp_path, "app-config.yaml",
                      "backend:\n  queue:\n    eventLoop: uvloop\n")
    s = load_settings(environ={}, yaml_file=yaml_file)
    assert (s.event_loop, s.source("event_loop")) == (
        "uvloop", f"{yaml_file} line 3: backend.queue.eventLoop")
    s = load_settings(environ={"PGQUEUE_EVENT_LOOP": "auto"}, yaml_file=yaml_file)
    assert s.source("event_loop") == "env PGQUEUE_EVENT_LOOP"  # the environment wins
    s = load_settings(environ={"PGQUEUE_EVENT_LOOP": "auto"}, event_loop="asyncio")
    assert (s.event_loop, s.source("event_loop")) == ("asyncio", "argument event_loop")
    assert s.worker_options()["event_loop"] == "asyncio"
    assert ("event_loop", "asyncio", "argument event_loop") in s.describe()


def test_layering_later_wins(tmp_path: Path) -> None:
    yaml_file = write(tmp_path, "app-config.yaml",
                      "backend:\n  queue:\n    defaultConcurrency: 2\n    maxAttempts: 2\n"
                      "    defaultStore: memory\n")
    env_file = write(tmp_path, ".env", "PGQUEUE_CONCURRENCY=3\nPGQUEUE_MAX_ATTEMPTS=3\n")
    environ = {"PGQUEUE_CONCURRENCY": "4"}
    s = load_settings(environ=environ, yaml_file=yaml_file, env_file=env_file)
    assert (s.concurrency, s.source("concurrency")) == (4, "env PGQUEUE_CONCURRENCY")
    assert (s.max_attempts, s.source("max_attempts")) == (3, f"{env_file} line 2: "
                                                           "PGQUEUE_MAX_ATTEMPTS")
    assert s.source("driver").startswith(str(yaml_file))
    s = load_settings(environ=environ, yaml_file=yaml_file, env_file=env_file, concurrency=5,
                      max_attempts=None)
    assert (s.concurrency, s.source("concurrency")) == (5, "argument concurrency")
    assert s.max_attempts == 3  # None = not set


def test_overrides_are_validated_and_typed() -> None:
    s = load_settings(environ={}, routes=["a", "b"], poll_interval=0.1, driver="pg",
                      database_url="postgresql://u@h/db", cluster="h1,h2:5433")
    assert s.driver == "postgres" and s.routes == ("a", "b")
    assert s.cluster == ("h1:5432", "h2:5433")
    with raises_config("colour", "argument", "allowed"):
        load_settings(environ={}, colour="blue")
    with raises_config("concurrency", "argument concurrency", "1 to 1000"):
        load_settings(environ={}, concurrency=0)


def test_cluster_builds_a_multi_host_connection() -> None:
    s = load_settings(environ={"VELA_QUEUE_DRIVER": "postgres",
                               "VELA_QUEUE_CONFIG": "postgresql://app:secret@db0:5432/jobs",
                               "VELA_QUEUE_CLUSTER": "db1:5432, db2:5433,[::1]"})
    params = conninfo_to_dict(s.database_url or "")
    assert params["host"] == "db1,db2,::1"
    assert params["port"] == "5432,5433,5432"
    assert params["target_session_attrs"] == "read-write"
    assert (params["user"], params["password"], params["dbname"]) == ("app", "secret", "jobs")
    assert s.cluster == ("db1:5432", "db2:5433", "[::1]:5432")
    assert s.source("cluster") == "env VELA_QUEUE_CLUSTER"
    # true: the hosts of a multi-host URL
    s = load_settings(environ={"QUEUE_CONFIG": "postgresql://u@h1:5432,h2:5432/db",
                               "QUEUE_CLUSTER": "true"})
    assert conninfo_to_dict(s.database_url or "")["target_session_attrs"] == "read-write"
    assert s.cluster == ("h1:5432", "h2:5432")
    s = load_settings(environ={"QUEUE_CONFIG": "postgresql://u@h1/db", "QUEUE_CLUSTER": "false"})
    assert "target_session_attrs" not in conninfo_to_dict(s.database_url or "")


def test_describe_redacts_passwords() -> None:
    s = load_settings(environ={"QUEUE_CONFIG": "postgresql://u:topsecret@h/db"})
    rows = {k: (v, src) for k, v, src in s.describe()}
    assert "topsecret" not in rows["database_url"][0]
    assert "password=***" in rows["database_url"][0]
    assert rows["database_url"][1] == "env QUEUE_CONFIG"
    assert rows["routes"][0] == "(all queues of the app's tasks)"


def test_settings_is_frozen_and_checked() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.concurrency = 3  # type: ignore[misc]
    with raises_config("concurrency", "argument", "1 to 1000"):
        Settings(concurrency=-1)
    with raises_config("driver", "argument", "unknown driver"):
        Settings(driver="rabbitmq")
    with raises_config("driver", "x", "unknown driver"):
        Settings(driver="rabbitmq", sources={"driver": "x"})
    with raises_config("event_loop", "argument", "'trio' is not valid",
                       "allowed: asyncio, uvloop, auto"):
        Settings(event_loop="trio")


# ---- errors: key, source and what is allowed -----------------------------------------------------
ENV_ERRORS = [
    ({"QUEUE_DRIVER": "rabbitmq"}, "driver", "env QUEUE_DRIVER", "postgres"),
    ({"VELA_QUEUE_DRIVER": "kafka"}, "driver", "env VELA_QUEUE_DRIVER", "not provided"),
    ({"QUEUE_DRIVER": "kafka"}, "driver", "env QUEUE_DRIVER", "use 'postgres'"),
    ({"QUEUE_DRIVER": "postgres"}, "driver", "env QUEUE_DRIVER", "needs a database URL"),
    ({"QUEUE_CONFIG": "postgresql://u@h:port/db"}, "database_url", "env QUEUE_CONFIG",
     "postgresql://user@host:5432/dbname"),
    ({"QUEUE_CONFIG": "postgresql://u@h:99999/db"}, "database_url", "env QUEUE_CONFIG",
     "1 to 65535"),
    ({"QUEUE_DRIVER": "database", "QUEUE_CONFIG": "mysql://u@h/db"}, "database_url",
     "env QUEUE_CONFIG", "not a PostgreSQL URL"),
    ({"DATABASE_URL": "postgresql://u@h/db?bogus=1"}, "database_url", "env DATABASE_URL",
     "malformed"),
    ({"QUEUE_DRIVER": "redis", "QUEUE_CONFIG": "http://r:6379"}, "redis_url",
     "env QUEUE_CONFIG", "redis://"),
    ({"QUEUE_DRIVER": "redis", "QUEUE_CONFIG": "redis://r:6379/zero"}, "redis_url",
     "env QUEUE_CONFIG", "not a number"),
    ({"QUEUE_REDIS_PORT": "sixty"}, "redis_url", "env QUEUE_REDIS_PORT", "1 to 65535"),
    ({"QUEUE_REDIS_DB": "-1"}, "redis_url", "env QUEUE_REDIS_DB", "integer"),
    ({"PGQUEUE_CONCURRENCY": "-2"}, "concurrency", "env PGQUEUE_CONCURRENCY", "1 to 1000"),
    ({"PGQUEUE_CONCURRENCY": "0"}, "concurrency", "env PGQUEUE_CONCURRENCY", "1 to 1000"),
    ({"PGQUEUE_CONCURRENCY": "2.5"}, "concurrency", "env PGQUEUE_CONCURRENCY",
     "not an integer"),
    ({"PGQUEUE_CONCURRENCY": "many"}, "concurrency", "env PGQUEUE_CONCURRENCY",
     "not an integer"),
    ({"PGQUEUE_MAX_ATTEMPTS": "0"}, "max_attempts", "env PGQUEUE_MAX_ATTEMPTS", "1 to 1000"),
    ({"PGQUEUE_POLL_INTERVAL": "soon"}, "poll_interval", "env PGQUEUE_POLL_INTERVAL",
     "seconds"),
    ({"PGQUEUE_POLL_INTERVAL": "0"}, "poll_interval", "env PGQUEUE_POLL_INTERVAL", "> 0"),
    ({"PGQUEUE_EVENT_LOOP": "trio"}, "event_loop", "env PGQUEUE_EVENT_LOOP",
     "'trio' is not valid; allowed: asyncio, uvloop, auto"),
    ({"PGQUEUE_SCHEMA": "Bad-Schema"}, "schema", "env PGQUEUE_SCHEMA", "lowercase"),
    ({"QUEUE_TABLE": "my_jobs"}, "schema", "env QUEUE_TABLE", "'<schema>.jobs'"),
    ({"QUEUE_FAILED_TABLE": "acme.failures"}, "schema", "env QUEUE_FAILED_TABLE",
     "'<schema>.failed_jobs'"),
    ({"QUEUE_TABLE": "a.jobs", "QUEUE_FAILED_TABLE": "b.failed_jobs"}, "schema",
     "env QUEUE_FAILED_TABLE", "one schema"),
    ({"QUEUE_ROUTES": "emails,bad queue"}, "routes", "env QUEUE_ROUTES", "letters, digits"),
    ({"QUEUE_ROUTES": " , "}, "routes", "env QUEUE_ROUTES", "comma list"),
    ({"QUEUE_CLUSTER": "db1:5432,db2:x"}, "cluster", "env QUEUE_CLUSTER", "host[:port]"),
    ({"QUEUE_CLUSTER": "db1,db2"}, "cluster", "env QUEUE_CLUSTER", "needs a database URL"),
    ({"QUEUE_DRIVER": "redis", "VELA_QUEUE_CLUSTER": "true"}, "cluster",
     "env VELA_QUEUE_CLUSTER", "Redis Cluster"),
    # an invalid value is an error even when a later source overrides it
    ({"QUEUE_DRIVER": "nope", "VELA_QUEUE_DRIVER": "memory"}, "driver", "env QUEUE_DRIVER",
     "unknown driver"),
]


@pytest.mark.parametrize(("env", "key", "source", "allowed"), ENV_ERRORS,
                         ids=[f"{e[1]}-{i}" for i, e in enumerate(ENV_ERRORS)])
def test_invalid_env_values(env: dict[str, str], key: str, source: str, allowed: str) -> None:
    with raises_config(key, source, allowed):
        load_settings(environ=env)


YAML_ERRORS = [
    ("backend:\n  queue:\n    defaultStore: memory\n     maxAttempts: 3\n", "yaml_file",
     "", "YAML syntax error at line 4"),
    ("backend:\n  queue: [1, 2\n", "yaml_file", "", "YAML syntax error at line"),
    ("- just\n- a list\n", "yaml_file", "", "top level must be a mapping"),
    ("backend:\n  queue: memory\n", "backend.queue", "line 2: backend.queue", "mapping"),
    ("backend:\n  queue:\n    defaultConcurrency: five\n", "concurrency",
     "line 3: backend.queue.defaultConcurrency", "must be an integer"),
    ("backend:\n  queue:\n    defaultConcurrency: -1\n", "concurrency",
     "backend.queue.defaultConcurrency", "1 to 1000"),
    ("backend:\n  queue:\n    defaultConcurrency: true\n", "concurrency",
     "backend.queue.defaultConcurrency", "not a boolean"),
    ("backend:\n  queue:\n    maxAttempts: 2.5\n", "max_attempts", "backend.queue.maxAttempts",
     "integer"),
    ("backend:\n  queue:\n    defaultStore: [memory]\n", "driver",
     "backend.queue.defaultStore", "must be a string"),
    ("backend:\n  queue:\n    defaultStore: kafka\n", "driver", "backend.queue.defaultStore",
     "not provided"),
    ("backend:\n  queue:\n    defaultConcurency: 5\n", "backend.queue.defaultConcurency",
     "line 3: backend.queue.defaultConcurency", "allowed: defaultStore"),
    ("backend:\n  queue:\n    postgres: postgresql://x\n", "backend.queue.postgres",
     "backend.queue.postgres", "mapping"),
    ("backend:\n  queue:\n    postgres:\n      connection: 5432\n", "database_url",
     "backend.queue.postgres.connection", "must be a connection string"),
    ("backend:\n  queue:\n    postgres:\n      schema: 'Upper'\n", "schema",
     "backend.queue.postgres.schema", "lowercase"),
    ("backend:\n  queue:\n    postgres:\n      host: x\n", "backend.queue.postgres.host",
     "backend.queue.postgres.host", "allowed: connection, schema"),
    ("backend:\n  queue:\n    defaultStore: postgres\n    postgres:\n"
     "      connection: 'postgres://u@h:x/db'\n", "database_url",
     "backend.queue.postgres.connection", "1 to 65535"),
    ("backend:\n  queue:\n    redis:\n      connection: 'localhost:6379'\n", "redis_url",
     "backend.queue.redis.connection", "not a Redis URL"),
    ("backend:\n  queue:\n    pollInterval: -1\n", "poll_interval", "backend.queue.pollInterval",
     "> 0"),
    ("backend:\n  queue:\n    eventLoop: trio\n", "event_loop", "line 3: backend.queue.eventLoop",
     "'trio' is not valid; allowed: asyncio, uvloop, auto"),
    ("backend:\n  queue:\n    eventLoop: [uvloop]\n", "event_loop", "backend.queue.eventLoop",
     "must be a string (asyncio, uvloop or auto), not a list"),
]


@pytest.mark.parametrize(("text", "key", "where", "allowed"), YAML_ERRORS,
                         ids=[f"{e[1]}-{i}" for i, e in enumerate(YAML_ERRORS)])
def test_invalid_yaml(tmp_path: Path, text: str, key: str, where: str, allowed: str) -> None:
    path = write(tmp_path, "app-config.yaml", text)
    with raises_config(key, f"{path}", where, allowed):
        load_settings(environ={}, yaml_file=path)


def test_yaml_needs_pyyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "app-config.yaml", SEED_YAML)
    monkeypatch.setitem(sys.modules, "yaml", None)
    with raises_config("yaml_file", str(path), "pip install 'pgqueue-tx[yaml]'"):
        load_settings(environ={}, yaml_file=path)


def test_missing_files(tmp_path: Path) -> None:
    with raises_config("yaml_file", "nope.yaml", "cannot read"):
        load_settings(environ={}, yaml_file=tmp_path / "nope.yaml")
    with raises_config("env_file", ".env", "cannot read"):
        load_settings(environ={}, env_file=tmp_path / ".env")


@pytest.mark.parametrize(("text", "key", "line", "words"), [
    ("QUEUE_DRIVER=memory\nnot a setting\n", "env_file", "line 2", "expected KEY=VALUE"),
    ("QUEUE-DRIVER=memory\n", "env_file", "line 1", "expected KEY=VALUE"),
    ('QUEUE_DRIVER="memory\n', "QUEUE_DRIVER", "line 1", "unterminated"),
    ("QUEUE_DRIVER='memory' redis\n", "QUEUE_DRIVER", "line 1", "after the closing quote"),
    ("\n\nQUEUE_DRIVER=rabbit\n", "driver", "line 3: QUEUE_DRIVER", "unknown driver"),
    ("PGQUEUE_CONCURRENCY=-1\n", "concurrency", "line 1: PGQUEUE_CONCURRENCY", "1 to 1000"),
])
def test_invalid_env_file(tmp_path: Path, text: str, key: str, line: str, words: str) -> None:
    path = write(tmp_path, ".env", text)
    with raises_config(key, f"{path} {line}", words):
        load_settings(environ={}, env_file=path)


def test_env_file_never_reaches_os_environ(tmp_path: Path) -> None:
    before = environ_now()
    path = write(tmp_path, ".env", SEED_ENV + "PGQUEUE_SECRET_MARKER=1\nQUEUE_ROUTES=x\n")
    load_settings(env_file=path)
    read_env_file(path)
    assert environ_now() == before
    assert "PGQUEUE_SECRET_MARKER" not in os.environ


# ---- building apps and workers --------------------------------------------------------------
def test_make_app_memory_and_worker_options() -> None:
    s = load_settings(environ={"QUEUE_DRIVER": "memory", "QUEUE_ROUTES": "a,b",
                               "PGQUEUE_CONCURRENCY": "3", "PGQUEUE_POLL_INTERVAL": "0.2",
                               "PGQUEUE_EVENT_LOOP": "auto"})
    app = pgqueue.App.from_settings(s)
    assert app.driver.name == "memory"
    worker = app.worker(**s.worker_options())
    assert (worker.queues, worker.concurrency, worker.poll_interval, worker.event_loop) == (
        ["a", "b"], 3, 0.2, "auto")


def test_make_app_postgres(clean: str) -> None:
    s = load_settings(environ={"QUEUE_DRIVER": "database", "QUEUE_CONFIG": clean})
    app = pgqueue.App.from_settings(s)
    try:
        assert app.driver.name == "postgres"
        app.enqueue("t", {"x": 1}, queue="cfg")
        assert app.count("cfg") == 1
    finally:
        app.close()


def test_make_app_redis_and_store_choice() -> None:
    s = load_settings(environ={"QUEUE_DRIVER": "redis", "QUEUE_CONFIG": "redis://127.0.0.1:6379/0"})
    app = pgqueue.App.from_settings(s)
    assert app.driver.name == "redis"
    app.close()
    assert pgqueue.App.from_settings(s, driver="memory").driver.name == "memory"
    with raises_config("database_url", "default", "needs a database URL"):
        pgqueue.App.from_settings(s, driver="postgres")
    with raises_config("driver", "argument", "not provided"):
        pgqueue.App.from_settings(s, driver="kafka")


def test_pooler_and_listen_url_from_the_environment() -> None:
    env = {"PGQUEUE_DATABASE_URL": "postgresql://app@pgbouncer:6432/shop",
           "PGQUEUE_POOLER": "Transaction", "PGQUEUE_LISTEN_URL": "postgresql://app:pw@db/shop"}
    s = load_settings(environ=env)
    assert s.pooler == "transaction" and s.source("pooler") == "env PGQUEUE_POOLER"
    assert conninfo_to_dict(s.listen_url or "")["host"] == "db"
    assert "pw" not in dict((k, v) for k, v, _ in s.describe())["listen_url"]
    app = pgqueue.App(environ=env)
    assert app.pooler == "transaction" and app.listen_url == s.listen_url
    assert load_settings(environ={**env, "PGQUEUE_POOLER": "none"}).pooler is None
    with pytest.raises(pgqueue.ConfigurationError,
                       match=r"pooler \(from env PGQUEUE_POOLER\).*transaction, session"):
        load_settings(environ={**env, "PGQUEUE_POOLER": "statement"})
    with pytest.raises(pgqueue.ConfigurationError, match="pooler"):
        pgqueue.App("postgresql://app@db/shop", pooler="yes")
