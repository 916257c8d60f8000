"""The test suite's own setup (issue 10, point 11): it says which server it uses, and never
creates its databases on the server of a plain ``DATABASE_URL`` (usually an application's
database) unless asked to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgqueue.drivers.postgres import schema
from tests.helpers import PGQUEUE_TABLES

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.processes  # runs pytest in a subprocess

_SERVER_VARS = ("PGQUEUE_TEST_DSN", "DATABASE_URL", "PGQUEUE_TEST_USE_DATABASE_URL",
                "PGQUEUE_TEST_EMBEDDED")


def header(**env: str) -> list[str]:
    """The ``pgqueue tests:`` lines of a collect-only run's header with ``env`` (nothing is
    created: collection starts no server and creates no database)."""
    base = {k: v for k, v in os.environ.items() if k not in _SERVER_VARS}
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-n0", "-p",
                        "no:randomly", "tests/test_packaging.py"], capture_output=True,
                       text=True, cwd=ROOT, timeout=120, env={**base, **env})
    assert r.returncode == 0, r.stdout + r.stderr
    return [line for line in r.stdout.splitlines() if line.startswith("pgqueue tests:")]


APP_URL = "postgresql://shop:s3cret@127.0.0.1:55999/shop_production"


def test_a_plain_database_url_is_not_used_and_the_header_says_so() -> None:
    lines = header(DATABASE_URL=APP_URL)
    assert len(lines) == 2, lines
    assert "55999" not in lines[0] and "s3cret" not in "".join(lines)
    assert "DATABASE_URL is set but not used" in lines[1]
    assert "PGQUEUE_TEST_USE_DATABASE_URL=1" in lines[1]


def test_database_url_with_the_opt_in_is_used() -> None:
    lines = header(DATABASE_URL=APP_URL, PGQUEUE_TEST_USE_DATABASE_URL="1")
    assert len(lines) == 1, lines
    assert "127.0.0.1:55999/shop_production" in lines[0] and "env:DATABASE_URL" in lines[0]
    assert "s3cret" not in lines[0]


def test_pgqueue_test_dsn_is_named_in_the_header() -> None:
    lines = header(PGQUEUE_TEST_DSN="postgresql://postgres@127.0.0.1:55998/postgres",
                   DATABASE_URL=APP_URL)
    assert lines == ["pgqueue tests: PostgreSQL postgresql://postgres@127.0.0.1:55998/postgres "
                     "(env:PGQUEUE_TEST_DSN); databases pgqueue_test_<run>_* on it"]


def test_clean_empties_every_pgqueue_table() -> None:
    """The ``clean`` fixture empties every table the schema declares: a table left out (as
    ``queue_starts`` once was) carries one test's rows into the next, and a test of the per-key
    or hour-long rates then failed depending on which tests ran before it on its xdist worker."""
    assert set(PGQUEUE_TABLES) == {t.name for t in schema.metadata.tables.values()}
