"""One resolution of settings (issue 10, points 13 and 14): ``pgqueue.App()`` with no URL and
the ``pgqueue`` command (``migrate``, ``status``, ``worker``) find the same database and schema
-- the seeds' ways included: Vela's ``QUEUE_CONFIG``/``VELA_QUEUE_CONFIG``, Velocity's ``.env``
with ``QUEUE_TABLE=schema.jobs``, Backstage's ``postgres.schema`` in ``app-config.yaml``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pgqueue
from pgqueue import config, migrations
from tests.conftest import MakeDatabase

pytestmark = pytest.mark.processes  # the CLI in subprocesses

ROOT = Path(__file__).resolve().parent.parent

#: every variable that could point pgqueue elsewhere than the test says
_CONFIG_VARS = pgqueue.compat.ENV_VARS


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No configuration in the environment; the current directory is an empty ``tmp_path``."""
    for var in _CONFIG_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in _CONFIG_VARS}
    return subprocess.run([sys.executable, "-m", "pgqueue.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120,
                          env={**base, "PYTHONPATH": str(ROOT), **(env or {})})


def waiting(url: str, schema: str, queue: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute(f"SELECT count(*) FROM {schema}.jobs WHERE queue = %s",
                        (queue,)).fetchone()
    assert row is not None
    return int(row[0])


# ---- point 14: App() honours the seeds' variables, as the CLI does ---------------------------
@pytest.mark.parametrize("var", ["QUEUE_CONFIG", "VELA_QUEUE_CONFIG"])
def test_app_without_url_uses_vela_queue_config(var: str, bare: Path, fresh_dsn: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(var, fresh_dsn)
    app = pgqueue.App()
    try:
        assert app.database_url is not None
        assert app.database_url == config.find_settings().database_url
        assert app._url_source == f"env {var}"
        app.enqueue("vela_task", {"n": 1}, queue="vela")
    finally:
        app.close()
    assert waiting(fresh_dsn, "pgqueue", "vela") == 1
    # the CLI finds the same database: status counts that job
    r = cli("status", "--json", cwd=bare, env={var: fresh_dsn})
    assert r.returncode == 0, r.stderr
    assert '"vela"' in r.stdout


def test_precedence_is_the_clis(bare: Path, fresh_dsn: str, make_database: MakeDatabase,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    other = make_database()
    # QUEUE_CONFIG wins over DATABASE_URL (the conventional name loses to every other)
    monkeypatch.setenv("DATABASE_URL", other)
    monkeypatch.setenv("QUEUE_CONFIG", fresh_dsn)
    app = pgqueue.App()
    assert app.database_url == config.find_settings().database_url
    assert app._url_source == "env QUEUE_CONFIG"
    # PGQUEUE_DATABASE_URL wins over both
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", other)
    assert pgqueue.App()._url_source == "env PGQUEUE_DATABASE_URL"
    # an explicit URL wins over everything
    assert pgqueue.App(fresh_dsn)._url_source == "database_url argument"


def test_app_reads_velocity_env_file_and_backstage_yaml(bare: Path, fresh_dsn: str) -> None:
    (bare / ".env").write_text(f"QUEUE_CONFIG={fresh_dsn}\nQUEUE_TABLE=velq.jobs\n")
    app = pgqueue.App()
    assert (app.schema, app._url_source) == ("velq", f"{bare / '.env'} line 1: QUEUE_CONFIG")
    (bare / ".env").unlink()
    (bare / "app-config.yaml").write_text(
        "backend:\n  queue:\n    defaultStore: postgres\n"
        f"    postgres:\n      connection: '{fresh_dsn}'\n      schema: bsq\n")
    app = pgqueue.App()
    assert app.schema == "bsq" and app.database_url is not None
    # explicit arguments win over the files
    assert pgqueue.App(fresh_dsn, schema="mine").schema == "mine"


def test_explicit_redis_or_memory_driver_is_honoured_default_memory_is_not(
        bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "memory")
    assert pgqueue.App().driver.name == "memory"
    monkeypatch.delenv("QUEUE_DRIVER")
    # nothing configured: no silent process-local queue, the error says what to set
    with pytest.raises(pgqueue.ConfigurationError, match="no database configured"):
        pgqueue.App().driver  # noqa: B018


# ---- point 13: migrate uses the schema of the configuration it takes the URL from -----------
def test_migrate_uses_the_schema_of_a_velocity_env_file(bare: Path,
                                                        make_database: MakeDatabase) -> None:
    url = make_database()
    (bare / ".env").write_text(f"DATABASE_URL={url}\nQUEUE_TABLE=shopq.jobs\n")
    r = cli("migrate", cwd=bare)
    assert r.returncode == 0, r.stderr
    assert f"pgqueue schema 'shopq': none -> {migrations.head()}" in r.stdout
    assert migrations.current(url, schema="shopq") == migrations.head()
    assert migrations.current(url, schema="pgqueue") is None
    # and the next push, from the same configuration, finds its tables
    app = pgqueue.App()
    try:
        app.enqueue("push", {}, queue="velocity")
    finally:
        app.close()
    assert waiting(url, "shopq", "velocity") == 1
    r = cli("migrate", "--sql", cwd=bare)
    assert "CREATE TABLE shopq.jobs" in r.stdout


def test_migrate_uses_the_schema_of_the_environment_and_yaml(
        bare: Path, make_database: MakeDatabase) -> None:
    url = make_database()
    r = cli("migrate", "--database-url", url, cwd=bare, env={"QUEUE_TABLE": "envq.jobs"})
    assert r.returncode == 0, r.stderr
    assert migrations.current(url, schema="envq") == migrations.head()
    (bare / "app-config.yaml").write_text(
        "backend:\n  queue:\n    defaultStore: postgres\n"
        f"    postgres:\n      connection: '{url}'\n      schema: yamlq\n")
    r = cli("migrate", cwd=bare)
    assert r.returncode == 0, r.stderr
    assert migrations.current(url, schema="yamlq") == migrations.head()
    # --schema still wins
    r = cli("migrate", "--schema", "flagq", cwd=bare)
    assert r.returncode == 0 and migrations.current(url, schema="flagq") == migrations.head()


def test_cli_and_app_agree_when_several_names_are_set(bare: Path, fresh_dsn: str,
                                                      make_database: MakeDatabase) -> None:
    """DATABASE_URL loses to QUEUE_CONFIG for the CLI as for App() (it used to win there)."""
    other = make_database()
    env = {"DATABASE_URL": other, "QUEUE_CONFIG": fresh_dsn}
    r = cli("enqueue", "agree", "--queue", "agreeq", cwd=bare, env=env)
    assert r.returncode == 0, r.stderr
    assert waiting(fresh_dsn, "pgqueue", "agreeq") == 1
