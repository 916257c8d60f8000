"""``pgqueue demo`` on a given database: the README's first command, end to end (issue 10,
point 6: it says which database, keeps to its own schema, refuses a schema it did not create,
starts clean, and ends with what to try next)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pgqueue.cli import main
from pgqueue.cli.demo import DEMO_SCHEMA


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {f"{r[0]}.{r[1]}" for r in conn.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")}


@pytest.mark.slow
def test_demo_keeps_to_its_own_schema_and_starts_clean(make_database: Callable[[], str],
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    url = make_database()
    with psycopg.connect(url, autocommit=True) as conn:  # the user's own table stays untouched
        conn.execute("CREATE TABLE public.demo_orders (id int)")
    before = tables(url)
    assert main(["demo", "--database-url", url, "--workers", "1", "--keep"]) == 0
    out = capsys.readouterr().out
    assert f"Using the database of --database-url: {url}," in out  # (no password to hide)
    assert f"schema {DEMO_SCHEMA!r}" in out
    assert "Enqueued 80 jobs" in out and "live   0" in out and "Done in" in out
    assert "demo.doomed_export  3/3" in out and "finished/1h" in out
    assert "What next" in out and f"--schema {DEMO_SCHEMA}" in out and "psql '" in out
    # everything the demo made is in its schema; nothing else changed
    assert {t for t in tables(url) if not t.startswith(f"{DEMO_SCHEMA}.")} == before
    assert f"{DEMO_SCHEMA}.demo_orders" in tables(url)
    with psycopg.connect(url) as conn:
        row: Any = conn.execute(f"SELECT count(*) FROM {DEMO_SCHEMA}.jobs").fetchone()
        assert row[0] == 0
        assert conn.execute("SELECT to_regclass('pgqueue.jobs')").fetchone() == (None,)
        # leftovers of an interrupted run: a waiting job and one a killed worker held
        conn.execute(f"INSERT INTO {DEMO_SCHEMA}.jobs (queue, task, args, state) "
                     "VALUES ('emails', 'demo.send_email', '{}', 'waiting'), "
                     "('reports', 'demo.build_report', '{}', 'running')")
        conn.commit()
    # a re-run starts clean; without --keep it leaves the database as it found it
    assert main(["demo", "--database-url", url, "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "Enqueued 80 jobs" in out and "live   0" in out and "--keep" in out
    assert tables(url) == before


def test_demo_refuses_a_schema_it_did_not_create(make_database: Callable[[], str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url = make_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {DEMO_SCHEMA}")
        conn.execute(f"CREATE TABLE {DEMO_SCHEMA}.precious (id int)")
    assert main(["demo", "--database-url", url, "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "did not create" in err and "--force" in err
    assert f"{DEMO_SCHEMA}.precious" in tables(url)
