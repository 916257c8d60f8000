"""Migrations: up, down to base, up again; head equals the declared metadata; idempotent; --sql;
a custom schema; run from an application's own alembic env; from an installed wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import pgqueue
from pgqueue import migrations
from pgqueue._dsn import to_sqlalchemy_url
from pgqueue.drivers.postgres.schema import metadata
from pgqueue.errors import ValidationError
from tests.conftest import MakeDatabase

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.processes  # the CLI and the wheel tests


def objects(dsn: str, schema: str = "pgqueue") -> set[tuple[str, str]]:
    """Every relation, view and function in ``schema`` (kind, name)."""
    with psycopg.connect(dsn) as c:
        rels = c.execute(
            "SELECT c.relkind::text, c.relname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s", (schema,)).fetchall()
        funcs = c.execute(
            "SELECT 'f', p.proname::text FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = %s", (schema,)).fetchall()
        has_schema = c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                               (schema,)).fetchone()
    found = {(k, n) for k, n in rels + funcs}
    if has_schema and has_schema[0]:
        found.add(("schema", schema))
    return found


def schema_diff(dsn: str) -> list[Any]:
    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        # skip partitions (made by ensure_history_partitions) and alembic's own table
        skipped = bool(name) and (str(name).startswith("job_history_")
                                  or name == "pgqueue_alembic_version")
        return not (type_ == "table" and skipped)

    engine = sa.create_engine(to_sqlalchemy_url(dsn))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "include_schemas": True, "include_object": include,
                "include_name": lambda name, type_, parent: (
                    type_ != "schema" or name == "pgqueue"),
                "compare_server_default": True,
            })
            return list(compare_metadata(ctx, metadata))
    finally:
        engine.dispose()


def test_checkout_finds_the_revisions_where_the_wheel_has_them() -> None:
    """One lookup: ``pgqueue/_alembic``, a symlink to the top-level ``alembic/`` in a checkout
    (the wheel test below checks the installed copy)."""
    location = migrations.script_location()
    assert location == Path(migrations.__file__).resolve().parent / "_alembic"
    if (ROOT / "pgqueue" / "__init__.py").resolve() == Path(pgqueue.__file__).resolve():
        assert location.resolve() == ROOT / "alembic"


def test_code_knows_the_head_revision() -> None:
    from pgqueue._names import SCHEMA_HEAD

    assert migrations.head() == SCHEMA_HEAD


def test_up_down_up_is_clean_and_head_matches_metadata(
        make_database: Callable[[], str]) -> None:
    url = make_database()
    assert migrations.current(url) is None
    migrations.upgrade(url)
    assert migrations.current(url) == migrations.head()
    first = objects(url)
    assert ("r", "jobs") in first and ("v", "queue_stats") in first
    assert schema_diff(url) == []
    migrations.upgrade(url)  # idempotent: nothing changes
    assert objects(url) == first
    migrations.downgrade(url)
    assert objects(url) == set()  # everything pgqueue created is gone, schema included
    migrations.upgrade(url)
    assert objects(url) == first
    assert schema_diff(url) == []


def test_own_version_table_leaves_application_alembic_alone(
        make_database: Callable[[], str]) -> None:
    url = make_database()
    with psycopg.connect(url) as c:
        c.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        c.execute("INSERT INTO alembic_version VALUES ('app_rev_42')")
    migrations.upgrade(url)
    migrations.downgrade(url)
    with psycopg.connect(url) as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("app_rev_42",)]


def test_custom_schema(make_database: Callable[[], str]) -> None:
    url = make_database()
    migrations.upgrade(url, schema="jobs_x")
    assert ("r", "jobs") in objects(url, "jobs_x")
    assert objects(url, "pgqueue") == set()
    migrations.downgrade(url, schema="jobs_x")
    assert objects(url, "jobs_x") == set()


def test_sql_prints_ddl_without_touching_a_database() -> None:
    ddl = migrations.sql()
    assert "CREATE TABLE pgqueue.jobs" in ddl
    assert "jobs_claim_idx" in ddl
    assert "pgqueue_alembic_version" in ddl
    assert "CREATE SCHEMA IF NOT EXISTS pgqueue" in ddl
    assert 'CREATE TABLE "other".jobs' not in migrations.sql(schema="other")
    assert "CREATE TABLE other.jobs" in migrations.sql(schema="other")


@pytest.mark.parametrize("schema", ["x; DROP TABLE y", 'a"b', "A", "pg_toast", "x" * 60])
def test_hostile_schema_rejected(schema: str) -> None:
    with pytest.raises(ValidationError):
        migrations.sql(schema=schema)


def test_from_the_applications_own_alembic_env(make_database: Callable[[], str],
                                               tmp_path: Path) -> None:
    """An app's revision calls pgqueue.migrations.upgrade(op.get_bind()) in its transaction."""
    url = make_database()
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(textwrap.dedent("""
        from alembic import context
        import sqlalchemy as sa
        engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url"))
        with engine.connect() as conn:
            context.configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    """))
    (tmp_path / "versions" / "a1_app.py").write_text(textwrap.dedent("""
        from alembic import op
        import pgqueue.migrations
        revision = "a1"
        down_revision = None
        def upgrade():
            op.execute("CREATE TABLE orders (id serial PRIMARY KEY)")
            pgqueue.migrations.upgrade(op.get_bind(), schema="pgqueue")
        def downgrade():
            pgqueue.migrations.downgrade(op.get_bind(), schema="pgqueue")
            op.execute("DROP TABLE orders")
    """))
    from alembic.config import Config

    from alembic import command

    cfg = Config()
    cfg.set_main_option("script_location", str(tmp_path))
    cfg.set_main_option("sqlalchemy.url", to_sqlalchemy_url(url))
    command.upgrade(cfg, "head")
    with psycopg.connect(url) as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchone() == ("a1",)
    assert migrations.current(url) == migrations.head()
    command.downgrade(cfg, "base")
    assert objects(url) == set()


def run_cli(*args: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgqueue.cli", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          timeout=120, cwd=cwd)


def test_cli_migrate_up_base_up_and_sql(make_database: Callable[[], str]) -> None:
    url = make_database()
    r = run_cli("migrate", "--database-url", url)
    assert r.returncode == 0, r.stderr
    head = migrations.head()
    assert f"none -> {head}" in r.stdout
    r = run_cli("migrate", "--database-url", url)
    assert f"{head} -> {head}" in r.stdout
    r = run_cli("migrate", "--to", "base", "--database-url", url)
    assert r.returncode == 0 and "removed" in r.stdout
    assert objects(url) == set()
    r = run_cli("migrate", "--sql")
    assert r.returncode == 0 and "CREATE TABLE pgqueue.jobs" in r.stdout


def test_cli_errors_are_one_clear_line(make_database: Callable[[], str]) -> None:
    env = {"PGQUEUE_DATABASE_URL": "", "DATABASE_URL": ""}
    r = run_cli("migrate", env=env)
    assert r.returncode == 2
    assert "no database configured" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("status", "--database-url", make_database())
    assert r.returncode == 2 and "pgqueue migrate" in r.stderr


@pytest.mark.slow  # the pool waits out its 10 s connection timeout first
def test_cli_unreachable_database_is_one_clear_line() -> None:
    r = run_cli("status", "--database-url", "postgresql://postgres@127.0.0.1:1/x")
    assert r.returncode == 1 and "did not answer" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def skip_unless_package_index_answers(tmp_path: Path,
                                      env: dict[str, str] | None = None) -> None:
    """Skip, with pip's own reason, when pip cannot fetch from the configured package index
    (the wheel build and the fresh venv's install both need it). One quick try: no retries, a
    10 s timeout, so an offline machine skips in seconds instead of failing after minutes."""
    try:
        probe = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--retries", "0",
             "--timeout", "10", "--dest", str(tmp_path / "probe"), "hatchling"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, **env} if env is not None else None)
    except subprocess.TimeoutExpired:
        pytest.skip("the package index is unreachable (pip download hatchling did not finish "
                    "in 120 s); this test needs the network")
    if probe.returncode != 0:
        errors = [line for line in probe.stderr.splitlines() if "ERROR" in line]
        reason = errors[-1] if errors else probe.stderr.strip()[-300:]
        pytest.skip(f"the package index is unreachable (pip download hatchling: {reason}); "
                    "this test needs the network")


def run_step(*cmd: str, timeout: float, cwd: Path | None = None) -> None:
    """Run one step of the wheel test; on failure, show its own output (pip's error)."""
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"


def test_the_network_probe_skips_with_a_reason_when_the_index_is_unreachable(
        tmp_path: Path) -> None:
    unreachable = {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:1/simple",
                   "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "", "PIP_NO_CACHE_DIR": "1"}
    with pytest.raises(pytest.skip.Exception, match="package index is unreachable"):
        skip_unless_package_index_answers(tmp_path, unreachable)


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.timeout(1200)  # a wheel build and a fresh venv's install: minutes on a busy box
def test_wheel_in_fresh_venv_can_migrate(make_database: Callable[[], str],
                                         tmp_path: Path) -> None:
    """Needs the package index (the build backend and the dependencies): marked ``network``
    and skipped, saying why, when the index does not answer."""
    skip_unless_package_index_answers(tmp_path)
    dist = tmp_path / "dist"
    run_step(sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT),
             timeout=300)
    wheel = next(dist.glob("pgqueue_tx-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    run_step(str(py), "-m", "pip", "install", "-q", str(wheel), timeout=600)
    url = make_database()
    r = subprocess.run([str(env_dir / "bin" / "pgqueue"), "migrate", "--database-url", url],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert migrations.current(url) == migrations.head()
    where = subprocess.run([str(py), "-c", "import pgqueue.migrations as m; "
                            "print(m.script_location())"], capture_output=True, text=True,
                           cwd=tmp_path, check=True).stdout
    assert str(env_dir) in where  # the revisions came from the wheel, not the checkout


# ---- the printed SQL applies with psql and equals what migrate does --------------------------
def pg_tool(name: str) -> str:
    """``psql`` / ``pg_dump``: the embedded server's (newest, so it reads any server) if
    installed, else the one on PATH; skip when there is none."""
    from pgqueue._embedded import find_bindir

    bindir = find_bindir()
    if bindir is not None and (Path(bindir) / name).is_file():
        return str(Path(bindir) / name)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"no {name} (install the PostgreSQL client or pgqueue-tx[embedded])")
    return found


def psql_apply(url: str, ddl: str, tmp_path: Path) -> None:
    script = tmp_path / f"ddl-{len(list(tmp_path.iterdir()))}.sql"
    script.write_text(ddl)
    r = subprocess.run([pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url,
                        "-f", str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def dump(url: str) -> list[str]:
    """The database's whole schema as pg_dump prints it, minus comments, its random
    ``\\restrict`` key and per-server column markers (``SET (pg_attver=<n>)``, which some
    builds keep in every column's options)."""
    r = subprocess.run([pg_tool("pg_dump"), "--schema-only", "--no-owner", "--no-privileges",
                        "-d", url], capture_output=True, text=True, timeout=120, check=True)
    return [line for line in r.stdout.splitlines()
            if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
            and "SET (pg_attver=" not in line]


NO_CONFIG = {"PGQUEUE_SCHEMA": "", "QUEUE_TABLE": "", "QUEUE_FAILED_TABLE": ""}


def test_printed_sql_applies_with_psql_and_equals_migrate(
        make_database: Callable[[], str], tmp_path: Path) -> None:
    by_psql, by_migrate = make_database(), make_database()
    printed = run_cli("migrate", "--sql", env=NO_CONFIG, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert "%%" not in printed.stdout  # format('%I', ...) as written, not escaped
    psql_apply(by_psql, printed.stdout, tmp_path)
    r = run_cli("migrate", "--database-url", by_migrate, env=NO_CONFIG, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert migrations.current(by_psql) == migrations.current(by_migrate) == migrations.head()
    assert ("r", "jobs") in objects(by_psql)
    assert dump(by_psql) == dump(by_migrate)
    # the partition functions work in the psql-made schema (they are the %I/%L users)
    with psycopg.connect(by_psql) as c:
        c.execute("SELECT pgqueue.ensure_history_partitions(3)")
        c.execute("SELECT pgqueue.drop_history_before(now() - interval '30 days')")

    removal = run_cli("migrate", "--sql", "--to", "base", env=NO_CONFIG, cwd=tmp_path)
    assert removal.returncode == 0, removal.stderr
    assert "DROP TABLE IF EXISTS pgqueue.jobs" in removal.stdout
    psql_apply(by_psql, removal.stdout, tmp_path)
    r = run_cli("migrate", "--to", "base", "--database-url", by_migrate, env=NO_CONFIG,
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert objects(by_psql) == objects(by_migrate) == set()
    assert dump(by_psql) == dump(by_migrate)


def test_removal_sql_keeps_a_schema_that_holds_the_applications_objects(
        make_database: Callable[[], str], tmp_path: Path) -> None:
    url = make_database()
    migrations.upgrade(url, schema="shared_x")
    with psycopg.connect(url) as c:
        c.execute("CREATE TABLE shared_x.app_table (id int)")
    psql_apply(url, migrations.sql(schema="shared_x", to="base"), tmp_path)
    assert objects(url, "shared_x") == {("schema", "shared_x"), ("r", "app_table")}


# ---- concurrent migrations and conflicts ------------------------------------------------------
READY_THEN_MIGRATE = """
import sys
import pgqueue.migrations  # the slow imports first, so that every process starts together
from pgqueue.cli import main
print("ready", flush=True)
sys.stdin.readline()
sys.exit(main(["migrate", "--database-url", sys.argv[1]]))
"""


def test_ten_concurrent_migrations_all_succeed(make_database: Callable[[], str]) -> None:
    url = make_database()
    procs = [subprocess.Popen([sys.executable, "-c", READY_THEN_MIGRATE, url],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **NO_CONFIG})
             for _ in range(10)]
    try:
        for p in procs:  # wait until each has imported everything
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # then let them all go at once
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.flush()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * 10, [err for _, err in results]
    assert all("Traceback" not in err for _, err in results)
    assert sum(f"none -> {migrations.head()}" in out for out, _ in results) == 1  # one did it
    assert migrations.current(url) == migrations.head()
    assert schema_diff(url) == []


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_table_named_like_ours_is_one_clear_line(make_database: Callable[[], str]) -> None:
    url = make_database()
    with psycopg.connect(url) as c:
        c.execute("CREATE SCHEMA pgqueue")
        c.execute("CREATE TABLE pgqueue.jobs (id int)")  # the application's own
    r = run_cli("migrate", "--database-url", url, env=NO_CONFIG)
    one_line_error(r, "'pgqueue'", '"jobs" already exists', "--schema")
    with psycopg.connect(url) as c:  # nothing half-written, the user's table untouched
        assert c.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)
    assert objects(url) == {("schema", "pgqueue"), ("r", "jobs")}
    with pytest.raises(pgqueue.MigrationError, match="already exists"):
        migrations.upgrade(url)


def test_an_unknown_recorded_revision_is_one_clear_line(make_database: MakeDatabase) -> None:
    url = make_database(migrated=True)
    with psycopg.connect(url) as c:
        c.execute("UPDATE pgqueue.pgqueue_alembic_version SET version_num = '0099'")
    r = run_cli("migrate", "--database-url", url, env=NO_CONFIG)
    one_line_error(r, "'0099'", "newer pgqueue")
    r = run_cli("migrate", "--to", "base", "--database-url", url, env=NO_CONFIG)
    one_line_error(r, "'0099'")
    with pytest.raises(pgqueue.MigrationError, match="0099"):
        migrations.current(url)
    assert ("r", "jobs") in objects(url)  # nothing was removed


def test_an_unknown_target_revision_is_one_clear_line(make_database: Callable[[], str]) -> None:
    url = make_database()
    for args in (("migrate", "--to", "0099", "--database-url", url),
                 ("migrate", "--sql", "--to", "0099")):
        one_line_error(run_cli(*args, env=NO_CONFIG), "unknown revision '0099'", "0001")
    with pytest.raises(ValidationError, match="unknown revision"):
        migrations.upgrade(url, to="nope")
    assert objects(url) == set()
