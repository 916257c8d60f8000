"""Plan regression: the claim queries use the partial claim index, never a scan of the whole
jobs table, with a large backlog, for custom and for generic (prepared) plans."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue.drivers.postgres.claim_cursor import HEAD
from pgqueue.drivers.postgres.sql import statements
from tests.helpers import prepare_statement, scalar


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
    one = plan(backlog, st.claim_one(100), {
        "queue": "main", "limit": 100, "worker": "w", "lease": 30, **after(HEAD)})
    one_after = plan(backlog, st.claim_one(100), {
        "queue": "main", "limit": 100, "worker": "w", "lease": 30,
        **after((20, dt.datetime.now(dt.UTC), 1000))})
    many = plan(backlog, st.claim_many(100, 2), {
        "queues": ["main", "other"], "limit": 100, "worker": "w", "lease": 30,
        **after(HEAD, (20, dt.datetime.now(dt.UTC), 1000))})
    for nodes in (one, one_after, many):
        scans = jobs_scans(nodes)
        assert any(index == "jobs_claim_idx" for _, _, index in scans), scans
        assert not any(kind == "Seq Scan" for kind, _, _ in scans), scans
    backlog.execute("RESET plan_cache_mode")


def join_filters(conn: psycopg.Connection[Any], query: sql.Composed,
                 params: dict[str, Any]) -> list[str]:
    """Every join filter of the plan."""
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, params).fetchone()
    assert row is not None
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Join Filter" in node:
            found.append(node["Join Filter"])
        for child in node.get("Plans", []):
            walk(child)

    walk(row[0][0]["Plan"])
    return found


def after(*keys: tuple[int, dt.datetime, int], arrays: bool = False) -> dict[str, Any]:
    """The claim's ``after_*`` parameters: one key for ``Statements.claim_one``, one per queue for
    ``claim_many`` and ``next_run_at`` (``arrays``: even for one queue)."""
    if len(keys) == 1 and not arrays:
        return {"after_p": keys[0][0], "after_r": keys[0][1], "after_i": keys[0][2]}
    return {"after_p": [k[0] for k in keys], "after_r": [k[1] for k in keys],
            "after_i": [k[2] for k in keys]}


@pytest.mark.parametrize("generic", [False, True])
def test_statements_by_id_read_running_jobs_through_the_primary_key(
        backlog: psycopg.Connection[Any], generic: bool) -> None:
    """Completion, heartbeat, cancel and the cancel poll: found by id, through ``jobs_pkey``,
    never by a scan of the partial index of running jobs. That index looks cheapest when its
    statistics are small (here: 100 running jobs), but a snapshot held open leaves one entry
    in it for every job claimed since, and a completion then read them all."""
    st = statements("pgqueue")
    backlog.execute("UPDATE pgqueue.jobs SET state = 'running', worker_id = 'w', attempt = 1,"
                    " lease_expires_at = now() + interval '1 min' WHERE id % 300 = 0")
    backlog.execute("ANALYZE pgqueue.jobs")
    if generic:
        backlog.execute("SET plan_cache_mode = force_generic_plan")
    ids = [r[0] for r in backlog.execute(
        "SELECT id FROM pgqueue.jobs WHERE state = 'running' ORDER BY id LIMIT 100")]
    n = len(ids)
    by_ids: dict[str, tuple[sql.Composed, dict[str, Any]]] = {
        "finish_many": (st.finish_many, {"ids": ids, "attempts": [1] * n,
                                         "states": ["succeeded"] * n, "results": [None] * n,
                                         "worker": "w"}),
        "heartbeat": (st.heartbeat, {"ids": ids, "worker": "w", "lease": 30}),
        "cancel_running": (st.cancel_running, {"id": ids[0]}),
        "cancel_requested_ids": (st.cancel_requested_ids, {"ids": ids, "worker": "w"}),
    }
    for name, (query, params) in by_ids.items():
        # and driven by the ids: each found once through the key, never matched against the
        # batch by a join filter (the old finish_many's plans had one: quadratic in the batch)
        assert join_filters(backlog, query, params) == [], name
        scans = jobs_scans(plan(backlog, query, params))
        assert not any(kind == "Seq Scan" for kind, _, _ in scans), (name, scans)
        assert any(index == "jobs_pkey" for _, _, index in scans), (name, scans)
        assert not any(index == "jobs_running_lease_idx" for _, _, index in scans), (name, scans)
    backlog.execute("RESET plan_cache_mode")


def test_a_claim_after_its_key_skips_the_entries_of_jobs_claimed_before(
        backlog: psycopg.Connection[Any]) -> None:
    """The claim index keeps an entry for every job claimed since the oldest open snapshot
    (here: claimed in this transaction, which no scan may skip either). A claim from the head
    reads the table for each of them; one after the last claimed key reads a tenth as much
    (mostly its own UPDATE: 1,400 pages against 83,000 here)."""
    st = statements("pgqueue")
    backlog.execute("UPDATE pgqueue.jobs SET state = 'running', worker_id = 'w', attempt = 1,"
                    " lease_expires_at = now() + interval '1 min'"
                    " WHERE queue = 'main' AND priority < 49")
    key = backlog.execute("SELECT priority, run_at, id FROM pgqueue.jobs"
                          " WHERE queue = 'main' AND state = 'running'"
                          " ORDER BY 1 DESC, 2 DESC, 3 DESC LIMIT 1").fetchone()
    assert key is not None
    params = {"queue": "main", "limit": 100, "worker": "w", "lease": 30}

    backlog.execute("SAVEPOINT s")
    from_head = buffers(backlog, st.claim_one(100), {**params, **after(HEAD)})
    backlog.execute("ROLLBACK TO SAVEPOINT s")
    after_key = buffers(backlog, st.claim_one(100), {**params, **after(tuple(key))})
    assert 10 * after_key < from_head, (after_key, from_head)


def buffers(conn: psycopg.Connection[Any], query: sql.Composed, params: dict[str, Any]) -> int:
    """Pages the statement read (shared buffers hit or read), when run."""
    row = conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + query,
                       params).fetchone()
    assert row is not None
    top = row[0][0]["Plan"]
    return int(top["Shared Hit Blocks"] + top["Shared Read Blocks"])


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
    both = {"queues": ["main", "other"], **after(HEAD, HEAD)}
    for query, params in (
            (st.next_run_at(2), both),
            (st.next_claim_in, {"queues": ["main", "other"], "limited": [], "recheck": 0.05})):
        assert rows_read(backlog, query, params) < 300
    earliest = backlog.execute(st.next_run_at(2), both).fetchone()
    expected = backlog.execute("SELECT min(run_at) FROM pgqueue.jobs WHERE state = 'waiting'"
                               ).fetchone()
    assert earliest == expected  # the keyed job, an hour ago
    backlog.execute("UPDATE pgqueue.jobs SET run_at = now() + interval '1 day'")
    backlog.execute("UPDATE pgqueue.jobs SET run_at = now() + interval '1 hour' "
                    "WHERE queue = 'other' AND priority = 40 AND id % 7 = 0")
    earliest = backlog.execute(st.next_run_at(2), both).fetchone()
    assert earliest is not None and earliest[0] is not None
    only_main = backlog.execute(st.next_run_at(1), {"queues": ["main"],
                                                    **after(HEAD, arrays=True)}).fetchone()
    assert only_main is not None and only_main[0] > earliest[0]


def test_next_run_at_after_a_key_skips_the_entries_of_jobs_claimed_before(
        backlog: psycopg.Connection[Any]) -> None:
    """``next_run_at`` from a worker's claim key (while reading from the head is costly): the
    entries of the jobs claimed before the key, which a held snapshot keeps, are not read,
    and the answer is the earliest ``run_at`` after the key, in the key's priority and in
    every later one."""
    st = statements("pgqueue")
    backlog.execute("UPDATE pgqueue.jobs SET state = 'running', worker_id = 'w', attempt = 1,"
                    " lease_expires_at = now() + interval '1 min'"
                    " WHERE queue = 'main' AND (priority < 31 OR priority = 31 AND id <="
                    " (SELECT avg(id) FROM pgqueue.jobs WHERE queue = 'main' AND priority = 31))")
    key = backlog.execute("SELECT priority, run_at, id FROM pgqueue.jobs"
                          " WHERE queue = 'main' AND state = 'running'"
                          " ORDER BY 1 DESC, 2 DESC, 3 DESC LIMIT 1").fetchone()
    assert key is not None and key[0] == 31
    # a job of a later priority, due a day ago (earlier than the rest after the key)
    backlog.execute("UPDATE pgqueue.jobs SET run_at = now() - interval '1 day' WHERE id = "
                    "(SELECT max(id) FROM pgqueue.jobs WHERE queue = 'main' AND priority = 41)")
    params = {"queues": ["main"], **after(tuple(key), arrays=True)}
    from_head = buffers(backlog, st.next_run_at(1), {"queues": ["main"],
                                                     **after(HEAD, arrays=True)})
    after_key = buffers(backlog, st.next_run_at(1), params)
    assert 10 * after_key < from_head, (after_key, from_head)
    got = backlog.execute(st.next_run_at(1), params).fetchone()
    expected = backlog.execute(
        "SELECT min(run_at) FROM pgqueue.jobs WHERE queue = 'main' AND state = 'waiting'"
        " AND (priority, run_at, id) > (%s, %s, %s)", tuple(key)).fetchone()
    assert got == expected and got is not None
    hour_ago = backlog.execute("SELECT now() - interval '1 hour'").fetchone()
    assert hour_ago is not None and got[0] < hour_ago[0]  # the later priority's job


@pytest.mark.parametrize("limit", [1, 10, 100, 500])
@pytest.mark.parametrize("many", [False, True])
def test_the_claim_plan_is_planned_once(backlog: psycopg.Connection[Any], limit: int,
                                        many: bool) -> None:
    """Prepared (as psycopg prepares a statement it runs often), the claim settles on its
    generic plan: PostgreSQL stops planning it at every execution. With its limit only a
    parameter, the generic plan expected a tenth of the queue and lost to the custom plans,
    and each claim was planned again (116 us, as long as running it, for claims of 10)."""
    st = statements("pgqueue")
    params: dict[str, Any] = {"limit": limit, "worker": "w", "lease": 30}
    if many:
        query = st.claim_many(limit, 2)
        params |= {"queues": ["main", "other"], **after(HEAD, HEAD)}
    else:
        query = st.claim_one(limit)
        params |= {"queue": "main", **after(HEAD)}
    execute = prepare_statement(backlog, query, params)
    for _ in range(10):  # five custom plans, then the generic one is weighed at each execution
        assert len(backlog.execute(execute).fetchall()) == limit
    counts = backlog.execute("SELECT custom_plans, generic_plans FROM pg_prepared_statements"
                             " WHERE name = 'stmt'").fetchone()
    assert counts == (5, 5), "custom plans: the claim is planned at every execution"
    row = backlog.execute(f"EXPLAIN (FORMAT JSON) {execute}").fetchone()
    assert row is not None
    shown = json.dumps(row[0])
    assert "Seq Scan" not in shown and "Hash Join" not in shown, shown


def test_the_claim_locks_only_the_jobs_it_takes(clean: str) -> None:
    """The claim's locking scan sits under a literal bound (16, 128, ...) and the limit above
    it: exactly ``limit`` rows are locked, none of the bound's others (another worker's claim
    would skip them until this claim commits)."""
    st = statements("pgqueue")
    with psycopg.connect(clean, autocommit=True) as a, psycopg.connect(clean,
                                                                       autocommit=True) as b:
        a.execute("INSERT INTO pgqueue.jobs (queue, task) SELECT 'main', 't'"
                  " FROM generate_series(1, 40)")
        for limit, many in ((5, False), (3, True)):
            with a.transaction(force_rollback=True):
                params: dict[str, Any] = {"limit": limit, "worker": "w", "lease": 30}
                if many:
                    params |= {"queues": ["main", "other"], **after(HEAD, HEAD)}
                    a.execute(st.claim_many(limit, 2), params)
                else:
                    params |= {"queue": "main", **after(HEAD)}
                    a.execute(st.claim_one(limit), params)
                free = scalar(b, "SELECT count(*) FROM (SELECT id FROM pgqueue.jobs"
                                 " WHERE state = 'waiting' FOR UPDATE SKIP LOCKED) x")
                assert free == 40 - limit


@pytest.mark.parametrize("queues", [1, 3])
def test_next_run_at_is_planned_once(backlog: psycopg.Connection[Any], queues: int) -> None:
    """An idle worker asks ``next_run_at`` after every short claim: prepared, it settles on
    its generic plan (it was planned at every call: 1 ms of planning for a 0.05 ms read)."""
    names = ["main", "other", "third"][:queues]
    execute = prepare_statement(backlog, statements("pgqueue").next_run_at(queues),
                        {"queues": names, **after(*[HEAD] * queues, arrays=True)})
    for _ in range(10):
        backlog.execute(execute)
    counts = backlog.execute("SELECT custom_plans, generic_plans FROM pg_prepared_statements"
                             " WHERE name = 'stmt'").fetchone()
    assert counts == (5, 5), "custom plans: next_run_at is planned at every call"
