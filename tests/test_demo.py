"""``pgqueue demo`` on a given database: the README's first command, end to end (issue 10,
point 6: it says which database, keeps to its own schema, refuses a schema it did not create,
starts clean, and ends with what to try next)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue._embedded.binaries import find_bindir
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


@pytest.mark.slow
@pytest.mark.embedded
@pytest.mark.xdist_group("embedded")
def test_demo_keep_on_the_embedded_server_serves_until_ctrl_c() -> None:
    """``pgqueue demo --keep`` without a URL: the embedded server stays up with the demo's
    jobs, the printed ``pgqueue status`` command works, and Ctrl-C stops it cleanly."""
    if find_bindir() is None:
        pytest.skip("no PostgreSQL binaries: pip install 'pgqueue-tx[embedded]'")
    root = Path(__file__).resolve().parent.parent
    datadir = Path(tempfile.gettempdir()) / f"pgqueue-test-demo-{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PGQUEUE_DATABASE_URL", "DATABASE_URL")}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "demo", "--keep",
                             "--workers", "1", "--data-dir", str(datadir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=root)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # blocks until the demo prints; ends if it exits
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        out = "".join(lines)
        assert "Using an embedded PostgreSQL in" in out and "What next" in out, out
        status_line = next(x for x in lines if "pgqueue status" in x).strip()
        # as the user would: the printed command, run by a shell (it reads the password file)
        bindir = str(Path(sys.executable).parent)
        r = subprocess.run(["bash", "-c", status_line + " --json"], capture_output=True,
                           text=True, env={**env, "PATH": bindir + os.pathsep + env["PATH"]},
                           cwd=root, timeout=60)
        secrets = [p.read_text().strip() for p in datadir.rglob("pgqueue.password")]
        assert secrets and not any(x in out for x in secrets), "the password was printed"
        assert r.returncode == 0, r.stderr
        assert {"emails", "reports"} <= {q["queue"] for q in json.loads(r.stdout)["queues"]}
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "stopping the embedded server" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(datadir, ignore_errors=True)
