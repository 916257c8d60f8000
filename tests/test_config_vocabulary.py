"""The generic loader (pgqueue.config) and the seed vocabularies it is handed
(pgqueue.compat._vocabulary): the loader works with pgqueue's own names alone, knows no seed
name, and each seed vocabulary maps its names as pgqueue.load_settings always did."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

import pgqueue
from pgqueue import _defaults, compat, config
from pgqueue.compat._vocabulary import BACKSTAGE, SEEDS, VELA, VELOCITY
from pgqueue.config import Found, Vocabulary, YamlDocument
from pgqueue.drivers.postgres.schema import metadata

CONFIG_DIR = Path(config.__file__).parent

BACKSTAGE_YAML = """\
backend:
  queue:
    defaultStore: postgres
    defaultConcurrency: 4
    maxAttempts: 7
    postgres:
      connection: postgresql://app@db/jobs
      schema: acme
"""

#: every seed spelling, each with a value the generic loader must ignore
SEED_ENV = {"QUEUE_DRIVER": "redis", "VELA_QUEUE_DRIVER": "redis",
            "QUEUE_CONFIG": "redis://r:6379/1", "VELA_QUEUE_CONFIG": "redis://r:6379/2",
            "QUEUE_ROUTES": "a", "VELA_QUEUE_ROUTES": "b", "QUEUE_CLUSTER": "h1,h2",
            "VELA_QUEUE_CLUSTER": "h3", "QUEUE_REDIS_HOST": "cache", "QUEUE_REDIS_PORT": "6380",
            "QUEUE_TABLE": "acme.jobs", "QUEUE_FAILED_TABLE": "acme.failed_jobs"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- the generic loader, without any seed vocabulary -------------------------------------------
def test_generic_source_names_no_seed() -> None:
    """No module of pgqueue/config spells a seed's variable or YAML key."""
    seed_words = ("VELA", "QUEUE_DRIVER", "QUEUE_CONFIG", "QUEUE_ROUTES", "QUEUE_CLUSTER",
                  "QUEUE_REDIS", "QUEUE_TABLE", "QUEUE_FAILED_TABLE", "backend", "defaultStore",
                  "maxAttempts")
    for path in CONFIG_DIR.glob("*.py"):
        code = path.read_text(encoding="utf-8")
        if path.name == "__init__.py":  # its docstring says where the seeds' names went
            code = code.split('"""', 2)[2]
        code = re.sub(r"PGQUEUE_\w+", "", code)  # pgqueue's own spelling of a name is fine
        for word in seed_words:
            assert word not in code, (path.name, word)


def test_generic_loader_ignores_seed_names(tmp_path: Path) -> None:
    yaml_file = write(tmp_path, "app-config.yaml", BACKSTAGE_YAML)
    env_file = write(tmp_path, ".env", "".join(f"{k}={v}\n" for k, v in SEED_ENV.items()))
    s = config.load_settings(environ=SEED_ENV, yaml_file=yaml_file, env_file=env_file)
    assert s == config.Settings()
    assert all(source == "default" or source.startswith("default (")
               for source in s.sources.values())
    assert set(config.ENV_VARS) == set(config.PGQUEUE.env)
    assert not any(var.startswith(("QUEUE_", "VELA_")) for var in config.ENV_VARS)


def test_generic_loader_reads_pgqueue_names(tmp_path: Path) -> None:
    env = {"PGQUEUE_QUEUE_DRIVER": "postgres", "PGQUEUE_QUEUE_CONFIG": "postgresql://h/two",
           "DATABASE_URL": "postgresql://h/one", "PGQUEUE_QUEUE_ROUTES": "a,b",
           "PGQUEUE_QUEUE_CLUSTER": "db1,db2:5433", "PGQUEUE_SCHEMA": "acme",
           "PGQUEUE_CONCURRENCY": "3", "PGQUEUE_MAX_ATTEMPTS": "4",
           "PGQUEUE_POLL_INTERVAL": "250ms", "PGQUEUE_REDIS_URL": "redis://r:6379/3"}
    s = config.load_settings(environ=env)
    params = conninfo_to_dict(s.database_url or "")
    assert (s.driver, params["dbname"], params["host"]) == ("postgres", "two", "db1,db2")
    assert s.source("database_url") == "env PGQUEUE_QUEUE_CONFIG"
    assert (s.routes, s.cluster, s.schema) == (("a", "b"), ("db1:5432", "db2:5433"), "acme")
    assert (s.concurrency, s.max_attempts, s.poll_interval) == (3, 4, 0.25)
    assert s.redis_url == "redis://r:6379/3"
    # .env and precedence work the same without vocabularies
    env_file = write(tmp_path, ".env", "PGQUEUE_CONCURRENCY=9\nPGQUEUE_SCHEMA=other\n")
    s = config.load_settings(environ={"PGQUEUE_CONCURRENCY": "5"}, env_file=env_file)
    assert (s.concurrency, s.schema) == (5, "other")
    assert s.source("schema") == f"{env_file} line 2: PGQUEUE_SCHEMA"
    # driver inferred from pgqueue's own names
    assert config.load_settings(environ={"DATABASE_URL": "postgresql://h/db"}).driver == (
        "postgres")
    assert config.load_settings(environ={"PGQUEUE_QUEUE_CONFIG": "redis://r"}).driver == "redis"


def test_generic_loader_messages_name_pgqueue_variables() -> None:
    with pytest.raises(pgqueue.ConfigurationError) as info:
        config.load_settings(environ={"PGQUEUE_QUEUE_DRIVER": "postgres"})
    text = str(info.value)
    assert "needs a database URL" in text and "PGQUEUE_DATABASE_URL" in text
    assert "QUEUE_CONFIG" not in text.replace("PGQUEUE_QUEUE_CONFIG", "")


def test_generic_yaml_is_still_checked(tmp_path: Path) -> None:
    """Without a YAML vocabulary the file is still read and its syntax checked."""
    with pytest.raises(pgqueue.ConfigurationError) as info:
        config.load_settings(environ={}, yaml_file=write(tmp_path, "a.yaml", "- a\n- b\n"))
    assert "top level must be a mapping" in str(info.value)


def test_a_vocabulary_of_ones_own() -> None:
    """The seam the seeds use: variables, an env reader and a YAML reader of a new product."""
    def reader(variables: Mapping[str, str], source_of: Callable[[str], str]) -> list[Found]:
        return [Found("concurrency", 6, "made up", rank=5)]

    mine = Vocabulary(name="mine", env={"MY_WORKERS": ("concurrency", 0),
                                        "MY_DB": ("database_url", 0)},
                      env_readers=(reader,), env_reads=("MY_PARTS",),
                      database_url_names=("MY_DB",))
    s = config.load_settings(environ={"MY_WORKERS": "3"}, vocabularies=[mine])
    assert (s.concurrency, s.source("concurrency")) == (6, "made up")  # rank 5 beats rank 0
    assert config.load_settings(environ={"MY_WORKERS": "3", "PGQUEUE_CONCURRENCY": "2"},
                                vocabularies=[mine]).concurrency == 2
    assert mine.variables == ("MY_WORKERS", "MY_DB", "MY_PARTS")
    with pytest.raises(pgqueue.ConfigurationError) as info:
        config.load_settings(environ={"PGQUEUE_QUEUE_DRIVER": "pg"}, vocabularies=[mine])
    assert "set MY_DB (or PGQUEUE_DATABASE_URL, DATABASE_URL)" in str(info.value)
    clash = Vocabulary(name="clash", env={"MY_WORKERS": ("max_attempts", 0)})
    with pytest.raises(ValueError, match="MY_WORKERS"):
        config.load_settings(environ={}, vocabularies=[mine, clash])
    typo = Vocabulary(name="typo", env={"MY_N": ("concurency", 0)})
    with pytest.raises(ValueError, match="MY_N"):
        config.load_settings(environ={}, vocabularies=[typo])
    odd = Vocabulary(name="odd", env_readers=(lambda env, src: [Found("colour", "x", "s")],))
    with pytest.raises(ValueError, match="colour"):
        config.load_settings(environ={}, vocabularies=[odd])


def test_yaml_document_names_lines(tmp_path: Path) -> None:
    seen: list[str] = []

    def reader(doc: YamlDocument) -> list[Found]:
        seen.extend([doc.source("a", "b"), doc.source("a", "missing")])
        return [Found("schema", config.parse_setting("schema", doc.data["a"]["b"], "x"), "x")]

    path = write(tmp_path, "c.yaml", "top: 1\na:\n  b: acme\n")
    s = config.load_settings(environ={}, yaml_file=path,
                             vocabularies=[Vocabulary(name="y", yaml_readers=(reader,))])
    assert s.schema == "acme"
    assert seen == [f"{path} line 3: a.b", f"{path} line 3: a.missing"]


# ---- each seed vocabulary, alone and together --------------------------------------------------
def test_vela_vocabulary() -> None:
    s = config.load_settings(environ={"QUEUE_DRIVER": "memory", "VELA_QUEUE_DRIVER": "redis",
                                      "VELA_QUEUE_CONFIG": "redis://r:6379/2",
                                      "QUEUE_ROUTES": "x", "VELA_QUEUE_ROUTES": "y,z"},
                             vocabularies=[VELA])
    assert (s.driver, s.redis_url, s.routes) == ("redis", "redis://r:6379/2", ("y", "z"))
    assert s.source("driver") == "env VELA_QUEUE_DRIVER"
    s = config.load_settings(environ={"QUEUE_CONFIG": "postgresql://u:pw@db0/jobs",
                                      "QUEUE_CLUSTER": "db1,db2"}, vocabularies=[VELA])
    assert s.driver == "postgres" and s.cluster == ("db1:5432", "db2:5432")
    # Velocity's parts are not Vela's
    assert config.load_settings(environ={"QUEUE_REDIS_HOST": "cache"},
                                vocabularies=[VELA]).source("redis_url") == "default"


def test_velocity_vocabulary(tmp_path: Path) -> None:
    env_file = write(tmp_path, ".env", "QUEUE_DRIVER=redis\nQUEUE_REDIS_HOST=cache\n"
                                       "QUEUE_REDIS_PASSWORD=p@ss\nQUEUE_TABLE=acme.jobs\n")
    s = config.load_settings(environ={}, env_file=env_file, vocabularies=[VELOCITY])
    assert (s.driver, s.redis_url, s.schema) == ("redis", "redis://:p%40ss@cache:6379/0", "acme")
    # only the parts that are set are named as the source (no error for the missing ones)
    assert s.source("redis_url") == (f"{env_file} line 2: QUEUE_REDIS_HOST, "
                                     f"{env_file} line 3: QUEUE_REDIS_PASSWORD")
    assert s.source("schema") == f"{env_file} line 4: QUEUE_TABLE"
    # Vela's names are not Velocity's
    assert config.load_settings(environ={"VELA_QUEUE_DRIVER": "redis"},
                                vocabularies=[VELOCITY]).driver == "memory"
    assert set(VELOCITY.variables) == {
        "QUEUE_DRIVER", "QUEUE_TABLE", "QUEUE_FAILED_TABLE", "QUEUE_REDIS_HOST",
        "QUEUE_REDIS_PORT", "QUEUE_REDIS_DB", "QUEUE_REDIS_PASSWORD"}


def test_backstage_vocabulary(tmp_path: Path) -> None:
    path = write(tmp_path, "app-config.yaml", BACKSTAGE_YAML)
    s = config.load_settings(environ={}, yaml_file=path, vocabularies=[BACKSTAGE])
    assert (s.driver, s.concurrency, s.max_attempts, s.schema) == ("postgres", 4, 7, "acme")
    assert conninfo_to_dict(s.database_url or "")["dbname"] == "jobs"
    assert s.source("max_attempts") == f"{path} line 5: backend.queue.maxAttempts"
    assert BACKSTAGE.variables == ()


def test_seeds_are_what_pgqueue_load_settings_reads(tmp_path: Path) -> None:
    assert pgqueue.load_settings is compat.load_settings
    assert SEEDS == (VELA, VELOCITY, BACKSTAGE)
    path = write(tmp_path, "app-config.yaml", BACKSTAGE_YAML)
    env = {"VELA_QUEUE_ROUTES": "a", "QUEUE_TABLE": "acme.jobs"}
    assert pgqueue.load_settings(environ=env, yaml_file=path) == config.load_settings(
        environ=env, yaml_file=path, vocabularies=SEEDS)
    assert set(compat.ENV_VARS) == {*config.ENV_VARS, *SEED_ENV, "QUEUE_REDIS_DB",
                                    "QUEUE_REDIS_PASSWORD"}
    with pytest.raises(pgqueue.ConfigurationError) as info:
        pgqueue.load_settings(environ={"QUEUE_DRIVER": "postgres"})
    assert "QUEUE_CONFIG" in str(info.value) and "backend.queue.postgres.connection" in str(
        info.value)


# ---- one definition of each default ------------------------------------------------------------
def test_defaults_have_one_definition() -> None:
    s = config.Settings()
    assert (s.schema, s.concurrency, s.max_attempts, s.poll_interval, s.redis_url) == (
        _defaults.DEFAULT_SCHEMA, _defaults.DEFAULT_CONCURRENCY, _defaults.DEFAULT_MAX_ATTEMPTS,
        _defaults.DEFAULT_POLL_INTERVAL, _defaults.DEFAULT_REDIS_URL)
    assert s.event_loop == _defaults.DEFAULT_EVENT_LOOP == pgqueue.App(
        driver="memory").worker().event_loop
    app = pgqueue.App(driver="memory")
    assert (app.schema, app.default_queue) == (_defaults.DEFAULT_SCHEMA, _defaults.DEFAULT_QUEUE)
    job = pgqueue.Job(id=1, queue="q", task="t", args={})
    assert (job.priority, job.max_attempts) == (_defaults.DEFAULT_PRIORITY,
                                                _defaults.DEFAULT_MAX_ATTEMPTS)
    assert {t.name for t in metadata.sorted_tables} >= {_defaults.JOBS_TABLE,
                                                        _defaults.FAILED_JOBS_TABLE}
