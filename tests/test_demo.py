"""``pgqueue demo`` on a given database: the README's first command, end to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pgqueue.cli import main


@pytest.mark.slow
def test_demo_runs_every_job_and_removes_leftovers(make_database: Callable[[], str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    url = make_database()
    assert main(["demo", "--database-url", url, "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "Enqueued 80 jobs" in out
    assert "live   0" in out and "Done in" in out
    assert "demo.doomed_export  3/3" in out
    with psycopg.connect(url) as conn:
        row: Any = conn.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()
        assert row[0] == 0
        # leftovers of an interrupted run: a waiting job and one a killed worker held
        conn.execute("INSERT INTO pgqueue.jobs (queue, task, args) "
                     "VALUES ('emails', 'demo.send_email', '{}'), "
                     "('reports', 'demo.build_report', '{}')")
        conn.execute("UPDATE pgqueue.jobs SET state = 'running' WHERE queue = 'reports'")
        conn.commit()
    assert main(["demo", "--database-url", url, "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "Enqueued 80 jobs" in out and "live   0" in out
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()
        assert row[0] == 0
