"""Plan regression: the claim queries use the partial claim index, never a scan of the whole
jobs table, with a large backlog, for custom and for generic (prepared) plans."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue.drivers.postgres.sql import statements


def plan(conn: psycopg.Connection[Any], query: sql.Composed,
         params: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Every plan node touching a relation: (node type, relation, index)."""
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, params).fetchone()
    assert row is not None
    nodes: list[tuple[str, str, str]] = []

    def walk(node: dict[str, Any]) -> None:
        if "Relation Name" in node or "Index Name" in node:
            nodes.append((node["Node Type"], node.get("Relation Name", ""),
                          node.get("Index Name", "")))
        for child in node.get("Plans", []):
            walk(child)

    walk(row[0][0]["Plan"])
    return nodes


def jobs_scans(nodes: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [n for n in nodes if n[1] == "jobs" or n[2].startswith("jobs_")]


@pytest.fixture
def backlog(tx: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A large backlog of waiting jobs, analysed, in a transaction rolled back after the test."""
    tx.execute("""
        INSERT INTO pgqueue.jobs (queue, task, args, priority)
        SELECT CASE WHEN g % 10 = 0 THEN 'other' ELSE 'main' END, 't', '{}', g % 50
          FROM generate_series(1, 30000) g""")
    tx.execute("ANALYZE pgqueue.jobs")
    return tx


@pytest.mark.parametrize("generic", [False, True])
def test_claim_uses_the_partial_index(backlog: psycopg.Connection[Any], generic: bool) -> None:
    st = statements("pgqueue")
    if generic:
        backlog.execute("SET plan_cache_mode = force_generic_plan")
    one = plan(backlog, st.claim_one_queue,
               {"queue": "main", "limit": 100, "worker": "w", "lease": 30})
    many = plan(backlog, st.claim_many_queues,
                {"queues": ["main", "other"], "limit": 100, "worker": "w", "lease": 30})
    for nodes in (one, many):
        scans = jobs_scans(nodes)
        assert any(index == "jobs_claim_idx" for _, _, index in scans), scans
        assert not any(kind == "Seq Scan" for kind, _, _ in scans), scans
    backlog.execute("RESET plan_cache_mode")


def test_completion_and_heartbeat_use_an_index(backlog: psycopg.Connection[Any]) -> None:
    st = statements("pgqueue")
    ids = [r[0] for r in backlog.execute("SELECT id FROM pgqueue.jobs LIMIT 100")]
    finish = plan(backlog, st.finish_many, {"ids": ids, "attempts": [1] * 100,
                                            "states": ["succeeded"] * 100,
                                            "results": [None] * 100, "worker": "w"})
    beat = plan(backlog, st.heartbeat, {"ids": ids, "worker": "w", "lease": 30})
    for nodes in (finish, beat):
        scans = jobs_scans(nodes)
        assert not any(kind == "Seq Scan" for kind, _, _ in scans), scans
        # the primary key, or the partial index of running jobs (few by design: the backlog of
        # claimed jobs is bounded by the worker's concurrency)
        assert any(index in ("jobs_pkey", "jobs_running_lease_idx")
                   for _, _, index in scans), scans


def rows_read(conn: psycopg.Connection[Any], query: sql.Composed,
              params: dict[str, Any]) -> int:
    """Rows (index entries) the plan's nodes on ``jobs`` returned when run, over all loops."""
    row = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + query, params).fetchone()
    assert row is not None
    total = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal total
        if node.get("Relation Name") == "jobs":
            total += int(node["Actual Rows"] * node["Actual Loops"])
        for child in node.get("Plans", []):
            walk(child)

    walk(row[0][0]["Plan"])
    return total


@pytest.mark.parametrize("generic", [False, True])
def test_next_run_at_reads_a_few_entries_not_the_backlog(
        backlog: psycopg.Connection[Any], generic: bool) -> None:
    """An idle worker asks when its queues' next job is due after every claim that came back
    short: with 27,000 waiting jobs in 50 priorities, that reads about two entries per
    priority, not every entry (it took 60-100 ms per look with 300,000 scheduled jobs)."""
    st = statements("pgqueue")
    backlog.execute("""
        INSERT INTO pgqueue.jobs (queue, task, args, run_at, concurrency_key)
        VALUES ('main', 't', '{}', now() - interval '1 hour', 'k')""")
    if generic:
        backlog.execute("SET plan_cache_mode = force_generic_plan")
    for query, params in (
            (st.next_run_at, {"queues": ["main", "other"]}),
            (st.next_claim_in, {"queues": ["main", "other"], "limited": [], "recheck": 0.05})):
        assert rows_read(backlog, query, params) < 300
    earliest = backlog.execute(st.next_run_at, {"queues": ["main", "other"]}).fetchone()
    expected = backlog.execute("SELECT min(run_at) FROM pgqueue.jobs WHERE state = 'waiting'"
                               ).fetchone()
    assert earliest == expected  # the keyed job, an hour ago
    backlog.execute("UPDATE pgqueue.jobs SET run_at = now() + interval '1 day'")
    backlog.execute("UPDATE pgqueue.jobs SET run_at = now() + interval '1 hour' "
                    "WHERE queue = 'other' AND priority = 40 AND id % 7 = 0")
    earliest = backlog.execute(st.next_run_at, {"queues": ["main", "other"]}).fetchone()
    assert earliest is not None and earliest[0] is not None
    only_main = backlog.execute(st.next_run_at, {"queues": ["main"]}).fetchone()
    assert only_main is not None and only_main[0] > earliest[0]
