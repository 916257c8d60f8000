"""Failover to a promoted replica: worker processes and an enqueuer on a multi-host URL
(``target_session_attrs=read-write``) survive the promotion of the synchronous replica and the
immediate stop of the old primary.

2,000 jobs, half of them completing inside their own business transaction: after the failover
nothing acknowledged is lost, nothing is stuck, every in-transaction completion happened exactly
once, the jobs of a worker killed at the moment of failover are rescued and run again, and the
surviving workers' listeners reconnect (a last job is picked up far sooner than the workers'
30-s poll interval). The time from promotion to the first job completed on the new primary is
printed (docs/scaling.md quotes it).

Also: a pooled connection that lands on a read-only server (a demoted primary) is dropped and
the write runs again on a fresh connection; if the server stays read-only, the error says to
list every host with ``target_session_attrs=read-write``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pgqueue
from pgqueue import migrations
from pgqueue.drivers.postgres.driver import PostgresDriver
from pgqueue.job import NewJob
from tests.apps.failover import POLL_INTERVAL, QUEUE
from tests.helpers import scalar, wait_for
from tests.replication import ReplicatedPair, replication_bindir

ROOT = Path(__file__).resolve().parent.parent


JOBS = 2000
BATCH = 50
WORKERS = 3


@pytest.fixture
def pair() -> Iterator[ReplicatedPair]:
    bindir = replication_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries with initdb, postgres and pg_basebackup "
                    "(apt-get install postgresql-15, or set PGQUEUE_PG_BINDIR)")
    try:
        p = ReplicatedPair(bindir)
    except KeyError:  # root without a `postgres` user to run the servers as
        pytest.skip("running as root needs a 'postgres' user (or PGQUEUE_EMBEDDED_USER) to "
                    "run the servers as")
    try:
        p.start()
        yield p
    finally:
        p.stop()


def start_worker(url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PGQUEUE_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.apps.failover"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Enqueuer(threading.Thread):
    """Enqueues ``JOBS`` jobs in batches (half ``plain``, half ``booked``), as an application
    would: a batch that fails with DatabaseUnavailableError is sent again. ``acked`` holds the
    ids of acknowledged jobs."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.app = pgqueue.App(database_url=url, strict=False)
        self.acked: list[int] = []
        self.booked: list[int] = []
        self.retries = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def _send(self, task: str, args: list[dict[str, int]]) -> list[int]:
        while not self.stop.is_set():
            try:
                return self.app.enqueue_many(task, args, queue=QUEUE)
            except pgqueue.DatabaseUnavailableError:
                self.retries += 1
                self.stop.wait(0.1)
        return []

    def run(self) -> None:
        try:
            for start in range(0, JOBS, BATCH):
                half = [{"n": n} for n in range(start, start + BATCH // 2)]
                self.acked += self._send("plain", half)
                ids = self._send("booked", [{"n": n + BATCH // 2} for n in
                                            range(start, start + BATCH // 2)])
                self.booked += ids
                self.acked += ids
                self.stop.wait(0.02)  # pacing: the run spans the failover
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.app.close()


def _read_only(dsn: str, on: bool) -> None:
    """Make the database read-only for new sessions (as a standby is), or writable again."""
    with psycopg.connect(dsn, autocommit=True) as c:
        db = c.info.dbname
        c.execute("SET default_transaction_read_only = off")
        c.execute(f'ALTER DATABASE "{db}" {"SET" if on else "RESET"} '
                  f'default_transaction_read_only{" = on" if on else ""}')


def test_a_pooled_connection_to_a_read_only_server_is_replaced(fresh_dsn: str) -> None:
    driver = PostgresDriver(fresh_dsn)
    job = NewJob(task="t", queue="q", args_json="{}")
    try:
        _read_only(fresh_dsn, True)
        with pytest.raises(pgqueue.DatabaseUnavailableError,
                           match=r"read-only.*target_session_attrs=read-write"):
            driver.insert_many([job])  # every connection refuses: the error says what to do
        driver.close()
        assert driver.get_job(1) is None  # a read: the pool now holds a read-only session
        _read_only(fresh_dsn, False)
        assert len(driver.insert_many([job])) == 1  # dropped, and written on a new one
        assert driver.count("q") == 1
    finally:
        _read_only(fresh_dsn, False)
        driver.close()


async def test_a_retry_written_late_still_runs_at_its_time(app: pgqueue.App, clean: str) -> None:
    """The producer looks for the next run_at before the completer has written the retry (or
    while a failover delays that write): the write wakes it, so the retry does not wait for a
    poll (60 s here). Without LISTEN, as while the listener reconnects: the retry's NOTIFY
    cannot wake the worker."""
    attempts: list[int] = []
    done = asyncio.Event()

    @app.task(name="flaky", queue="q", retry=pgqueue.RetryPolicy(base=0.3, jitter=0))
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    w = app.worker(queues=["q"], poll_interval=60, flush_interval=0.2, listen=False,
                   on_event=lambda e, j: done.set() if e == "succeeded" else None)
    run = asyncio.create_task(w.run())
    app.enqueue("flaky")
    await asyncio.wait_for(done.wait(), 20)
    w.stop()
    await run
    assert len(attempts) == 2


@pytest.mark.slow
@pytest.mark.processes
@pytest.mark.xdist_group("embedded")
def test_failover_to_promoted_replica_loses_nothing(pair: ReplicatedPair) -> None:
    url = pair.url()
    migrations.upgrade(url)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE bookings (job_id bigint NOT NULL, n int NOT NULL, "
                  "pid int NOT NULL)")
    workers = [start_worker(url) for _ in range(WORKERS)]
    enqueuer = Enqueuer(url)
    try:
        with psycopg.connect(pair.primary.dsn(pair.database), autocommit=True) as c:
            wait_for(lambda: scalar(c, "SELECT count(*) FROM pgqueue.workers") == WORKERS, 60,
                     "the workers to register")
            enqueuer.start()
            wait_for(lambda: len(enqueuer.acked) >= JOBS // 2 and scalar(
                c, "SELECT count(*) FROM pgqueue.job_history") >= JOBS // 5, 60,
                "the run to be under way")
            # a worker that dies with the primary (same host): its jobs must be rescued
            victim = workers[0]
            wait_for(lambda: scalar(c, "SELECT count(*) FROM pgqueue.jobs WHERE state = "
                                    "'running' AND worker_id LIKE %s",
                                    f"%:{victim.pid}:%") > 0, 30, "the victim to run jobs")
        victim.kill()
        promoting = time.monotonic()
        pair.promote()
        pair.stop_primary()
        with psycopg.connect(pair.replica.dsn(pair.database), autocommit=True) as new:
            # the history as promoted: any row after that was written on the new primary
            before = scalar(new, "SELECT count(*) FROM pgqueue.job_history")
            wait_for(lambda: scalar(new, "SELECT count(*) FROM pgqueue.job_history") > before,
                     60, "a job completed on the new primary")
            recovery = time.monotonic() - promoting
            print(f"\nfailover: promotion to first job completed on the new primary: "
                  f"{recovery:.2f} s")
            enqueuer.join(120)
            assert not enqueuer.is_alive() and enqueuer.error is None, enqueuer.error
            assert len(enqueuer.acked) == JOBS
            wait_for(lambda: scalar(new, "SELECT count(*) FROM pgqueue.jobs") == 0, 120,
                     "every job to finish on the new primary (none stuck)")
            finished = {r[0] for r in new.execute(
                "SELECT id FROM pgqueue.job_history WHERE state = 'succeeded'").fetchall()}
            lost = set(enqueuer.acked) - finished
            assert not lost, f"{len(lost)} acknowledged jobs lost"
            assert scalar(new, "SELECT count(*) FROM pgqueue.failed_jobs") == 0
            bookings: dict[int, int] = dict(new.execute(
                "SELECT job_id, count(*) FROM bookings GROUP BY job_id").fetchall())
            assert set(enqueuer.booked) <= set(bookings)
            duplicated = {j: n for j, n in bookings.items() if n != 1}
            assert not duplicated, f"in-transaction completions duplicated: {duplicated}"
            rescued = scalar(new, "SELECT count(*) FROM pgqueue.job_history "
                             "WHERE errors::text LIKE %s", "%worker died%")
            assert rescued > 0, "the killed worker's jobs were not rescued"
            reruns = scalar(new, "SELECT count(*) FROM pgqueue.job_history WHERE attempt > 1")
            print(f"failover: {len(enqueuer.acked)} jobs, lost 0, stuck 0, in-transaction "
                  f"duplicates 0, rescued {rescued}, ran more than once {reruns}, enqueue "
                  f"batches resent {enqueuer.retries}")
            # the surviving listeners reconnected: a new job is picked up long before a poll
            probe = pgqueue.App(database_url=url, strict=False)
            try:
                job_id = probe.enqueue("plain", {"n": -1}, queue=QUEUE)
            finally:
                probe.close()
            wait_for(lambda: scalar(new, "SELECT count(*) FROM pgqueue.job_history "
                                    "WHERE id = %s", job_id), POLL_INTERVAL / 2,
                     "a NOTIFY wake-up on the new primary")
    finally:
        enqueuer.stop.set()
        outputs = []
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
            try:
                out, _ = w.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                w.kill()
                out, _ = w.communicate()
            outputs.append(out)
    for w, out in zip(workers[1:], outputs[1:], strict=True):
        assert w.returncode == 0, out[-3000:]
        assert "listener reconnected" in out, out[-3000:]
