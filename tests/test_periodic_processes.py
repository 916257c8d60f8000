"""Cluster-wide duties with real worker processes: a per-second schedule over six workers fires
every tick exactly once (also across a SIGKILL); the leader's lease moves within one lease period
when the leader is killed; retention drops only whole history partitions older than the
setting, on the leader only."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.worker.maintenance import Retention
from tests.helpers import run_async, scalar, wait_for

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.processes


def start_worker(dsn: str, lease: float = 30.0) -> subprocess.Popen[str]:
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT),
           "PGQUEUE_TEST_LEADER_LEASE": str(lease)}
    return subprocess.Popen([sys.executable, "-m", "tests.apps.periodic"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def workers(clean: str) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()


def ticks(conn: psycopg.Connection[Any]) -> list[dt.datetime]:
    rows = conn.execute("SELECT (meta->>'tick')::timestamptz FROM pgqueue.jobs "
                        "WHERE meta->>'periodic' = 'every-second' ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def test_six_workers_fire_each_second_exactly_once_across_a_sigkill(
        clean: str, conn: psycopg.Connection[Any],
        workers: list[subprocess.Popen[str]]) -> None:
    workers.extend(start_worker(clean) for _ in range(6))
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM pgqueue.workers") == 6, 60,
             "six workers to register")
    before = wait_for(lambda: len(ticks(conn)) >= 3 and len(ticks(conn)), 30, "three ticks")
    victim = workers[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    wait_for(lambda: len(ticks(conn)) >= before + 5, 30, "five more ticks after the kill")
    for p in workers[1:]:
        p.send_signal(signal.SIGTERM)
    for p in workers[1:]:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, out
    fired = ticks(conn)
    assert len(fired) == len(set(fired)), "a tick fired twice"
    seconds = [(t - fired[0]).total_seconds() for t in fired]
    assert seconds == [float(i) for i in range(len(fired))], f"a tick is missing: {fired}"
    assert len(fired) >= 8
    # the first tick is the first whole second after the schedule was first recorded
    created = scalar(conn, "SELECT created_at FROM pgqueue.schedules "
                           "WHERE name = 'every-second'")
    assert created < fired[0] <= created + dt.timedelta(seconds=1)


def _lease(conn: psycopg.Connection[Any]) -> tuple[str, dt.datetime, dt.datetime] | None:
    row = conn.execute("SELECT holder, acquired_at, expires_at FROM pgqueue.leases "
                       "WHERE name = 'leader'").fetchone()
    return None if row is None else (row[0], row[1], row[2])


def test_leader_killed_another_takes_over_within_one_lease_period(
        clean: str, conn: psycopg.Connection[Any],
        workers: list[subprocess.Popen[str]]) -> None:
    period = 6.0  # the row's expiry is 3/4 of it, every worker tries every quarter of it
    workers.extend(start_worker(clean, lease=period) for _ in range(3))
    first = wait_for(lambda: _lease(conn), 60, "a leader")
    assert first is not None
    holder = first[0]
    pid = int(holder.split(":")[1])
    leader = next(p for p in workers if p.pid == pid)
    # the leader's last renewal before it dies: its lease expires 3/4 period after it
    leader.send_signal(signal.SIGKILL)
    leader.wait(10)
    dead = _lease(conn)
    assert dead is not None and dead[0] == holder
    last_renewal = dead[2] - dt.timedelta(seconds=period * 3 / 4)
    def taken() -> tuple[str, dt.datetime, dt.datetime] | None:
        lease = _lease(conn)
        return lease if lease is not None and lease[0] != holder else None

    taken_over = wait_for(taken, 30, "another worker to take the lease")
    assert taken_over is not None
    new_holder, acquired, _ = taken_over
    assert int(new_holder.split(":")[1]) in {p.pid for p in workers if p is not leader}
    # never two leaders: the new term starts after the dead leader's lease expired ...
    assert acquired >= dead[2]
    # ... and within one lease period of the dead leader's last renewal (plus one second for
    # the scheduling latency of a busy machine: the follower's wake-up and its statement)
    assert (acquired - last_renewal).total_seconds() <= period + 1.0


@pytest.fixture
def partitions(clean: str, conn: psycopg.Connection[Any]) -> Iterator[dict[str, dt.date]]:
    """Daily history partitions 20, 15, 14, 13 and 1 days back, one finished job in each."""
    today = scalar(conn, "SELECT (now() AT TIME ZONE 'UTC')::date")
    made: dict[str, dt.date] = {}
    for back in (20, 15, 14, 13, 1):
        day = today - dt.timedelta(days=back)
        name = f"job_history_p{day:%Y%m%d}"
        conn.execute(f"CREATE TABLE IF NOT EXISTS pgqueue.{name} PARTITION OF "
                     f"pgqueue.job_history FOR VALUES FROM ('{day}T00:00:00+00') "
                     f"TO ('{day + dt.timedelta(days=1)}T00:00:00+00')")
        conn.execute("INSERT INTO pgqueue.job_history (id, queue, task, args, priority, state, "
                     "attempt, max_attempts, enqueued_at, finished_at) VALUES (%s, 'q', 't', "
                     "'{}', 20, 'succeeded', 1, 5, %s, %s)",
                     (back, f"{day}T12:00:00+00", f"{day}T12:00:00+00"))
        made[name] = day
    yield made
    for name in made:
        conn.execute(f"DROP TABLE IF EXISTS pgqueue.{name}")


def _existing(conn: psycopg.Connection[Any], names: dict[str, dt.date]) -> set[str]:
    return {n for n in names if scalar(conn, "SELECT to_regclass(%s)", f"pgqueue.{n}")}


def test_retention_drops_only_whole_partitions_older_than_the_setting_on_the_leader(
        app: pgqueue.App, conn: psycopg.Connection[Any],
        partitions: dict[str, dt.date]) -> None:
    conn.execute("INSERT INTO pgqueue.failed_jobs (id, queue, task, args, priority, attempt, "
                 "max_attempts, reason, enqueued_at, failed_at) VALUES "
                 "(1, 'q', 't', '{}', 20, 5, 5, 'x', now(), now() - interval '10 days'), "
                 "(2, 'q', 't', '{}', 20, 5, 5, 'x', now(), now() - interval '2 days')")
    leading = False
    retention = Retention(app.driver, leader=lambda: leading,
                          history_s=dt.timedelta(days=14).total_seconds(),
                          failed_s=dt.timedelta(days=7).total_seconds())
    run_async(app, retention.tick())
    assert _existing(conn, partitions) == set(partitions)  # not the leader: nothing happens
    leading = True
    run_async(app, retention.tick())
    by_age = {(max(partitions.values()) - d).days + 1: n for n, d in partitions.items()}
    # the day 15 days back ended before now - 14 days: dropped with the older one; the day
    # 14 days back straddles the cutoff and is kept whole
    assert _existing(conn, partitions) == {by_age[14], by_age[13], by_age[1]}
    assert retention.dropped == 2
    assert sorted(r[0] for r in conn.execute("SELECT id FROM pgqueue.job_history")) == [1, 13, 14]
    assert [r[0] for r in conn.execute("SELECT id FROM pgqueue.failed_jobs")] == [2]
    assert retention.purged == 1


def test_leader_service_moves_on_release_and_gates_registry_pruning(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    from pgqueue.worker.maintenance import Leader, StaleWorkers

    conn.execute("INSERT INTO pgqueue.workers (id, host, pid, queues, concurrency, "
                 "heartbeat_at) VALUES ('gone', 'h', 1, '{x}', 1, now() - interval '1 hour')")

    async def main() -> None:
        a = Leader(app.driver, worker_id="a", period_s=60)
        b = Leader(app.driver, worker_id="b", period_s=60)
        await a.tick()
        await b.tick()
        assert a.is_leader() and not b.is_leader() and a.terms == 1
        pruner = StaleWorkers(app.driver, interval=1, older_than_s=60, leader=b.is_leader)
        await pruner.tick()  # b is not the leader: it leaves the registry alone
        assert scalar(conn, "SELECT count(*) FROM pgqueue.workers") == 1
        await a.start()
        await a.stop()  # a clean stop gives the lease up ...
        await b.tick()  # ... so the next try of another worker takes it
        assert b.is_leader() and not a.is_leader()
        await pruner.tick()
        assert scalar(conn, "SELECT count(*) FROM pgqueue.workers") == 0

    run_async(app, main())
