"""The bad-neighbour matrix: one poison job among 100 good ones, on every driver.

A worker of concurrency 10 with a short lease runs 100 good jobs and one poison job. Whatever the
poison, every good job runs exactly once and ends succeeded, the poison job ends where its kind
says (the archive, with a reason naming its fault), and the worker is still alive -- or, for a
poison that kills its process, restarted worker processes drain the rest and the poison is
quarantined (the rescue rule of :mod:`pgqueue.job`).

To add a poison, append a :class:`Poison` to :data:`POISONS` (an in-process kind: it registers
the task ``poison`` on the app) or extend ``tests/apps/bad_neighbours.py`` (a kind that needs
real processes).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest

import pgqueue
from pgqueue.job import RESCUE_REASON
from tests.apps import bad_neighbours as bn
from tests.helpers import eventually, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
GOOD_JOBS = 100
CONCURRENCY = 10
#: short, yet long enough that a busy test machine does not stall a live worker past it
LEASE_S = 2.0
HUGE = 10_000_000


# ---- the poison kinds ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Poison:
    """One kind of bad job: ``install`` registers the task ``poison`` (queue ``q``) and any hook
    on the app; ``ends`` is where the job must end -- ``failed`` (the archive, its reason
    containing ``fault``) or ``succeeded`` (what it returned was stored with the documented
    replacement of what cannot be stored)."""

    name: str
    install: Callable[[pgqueue.App], None]
    ends: Literal["failed", "succeeded"]
    fault: str


def _sync_systemexit(app: pgqueue.App) -> None:
    @app.task(name="poison", queue="q", max_attempts=1)
    def poison() -> None:
        raise SystemExit(3)


def _async_exit_with_timeout(exc: type[BaseException]) -> Callable[[pgqueue.App], None]:
    def install(app: pgqueue.App) -> None:
        @app.task(name="poison", queue="q", max_attempts=1, timeout=5)
        async def poison() -> None:
            await asyncio.sleep(0)
            raise exc(3)
    return install


def _dead_letter_hook_systemexit(app: pgqueue.App) -> None:
    def hook(job: pgqueue.Job, exc: BaseException) -> None:
        raise SystemExit(1)
    app.on_dead_letter("q", hook)

    @app.task(name="poison", queue="q", max_attempts=1)
    def poison() -> None:
        raise ValueError("poisoned before its dead-letter hook")


def _returns(value: Any) -> Callable[[pgqueue.App], None]:
    def install(app: pgqueue.App) -> None:
        @app.task(name="poison", queue="q", max_attempts=1)
        def poison() -> Any:
            return value
    return install


def _raises(message: str) -> Callable[[pgqueue.App], None]:
    def install(app: pgqueue.App) -> None:
        @app.task(name="poison", queue="q", max_attempts=1)
        def poison() -> None:
            raise ValueError(message)
    return install


#: The in-process poison kinds (the os._exit kind runs real processes: see below).
POISONS = [
    Poison("sync-systemexit", _sync_systemexit, "failed", "SystemExit"),
    Poison("async-systemexit-timeout", _async_exit_with_timeout(SystemExit), "failed",
           "SystemExit"),
    Poison("async-keyboardinterrupt-timeout", _async_exit_with_timeout(KeyboardInterrupt),
           "failed", "KeyboardInterrupt"),
    Poison("dead-letter-hook-systemexit", _dead_letter_hook_systemexit, "failed",
           "ValueError: poisoned before its dead-letter hook"),
    Poison("unstorable-result-nul", _returns({"text": "a\x00b"}), "succeeded", "a\ufffdb"),
    Poison("unstorable-result-surrogate", _returns(["a\ud800b"]), "succeeded", "a\ufffdb"),
    Poison("unstorable-error-nul", _raises("bad \x00 text"), "failed",
           "ValueError: bad \ufffd text"),
    Poison("error-message-10mb", _raises("HEAD" + "x" * HUGE + "TAIL"), "failed",
           "characters cut"),
]


# ---- in-process kinds, on every driver ---------------------------------------------------------
@pytest.mark.parametrize("poison", POISONS, ids=[p.name for p in POISONS])
async def test_one_poison_among_100_good_jobs(driver_app: pgqueue.App, poison: Poison) -> None:
    app = driver_app
    runs: Counter[int] = Counter()
    events: dict[str, Counter[int]] = {"succeeded": Counter(), "failed": Counter()}
    lock = threading.Lock()

    @app.task(name="good", queue="q")
    def good(n: int) -> int:
        with lock:
            runs[pgqueue.current_job().id] += 1
        time.sleep(0.002)
        return n

    poison.install(app)

    def on_event(event: str, job: pgqueue.Job) -> None:
        if event in events:
            events[event][job.id] += 1

    good_ids = app.enqueue_many("good", [{"n": i} for i in range(GOOD_JOBS // 2)])
    bad = app.enqueue("poison", {})
    good_ids += app.enqueue_many("good", [{"n": i} for i in range(GOOD_JOBS // 2, GOOD_JOBS)])
    # on the SQS emulator every heartbeat is an HTTP round trip to a server that slows down
    # with its queue's length: a longer lease keeps a loaded machine from letting one lapse
    lease = LEASE_S * 3 if app.driver.name == "sqs" else LEASE_S
    worker: pgqueue.Worker = app.worker(["q"], concurrency=CONCURRENCY, lease_s=lease,
                                        poll_interval=0.05, on_event=on_event)
    run = asyncio.create_task(worker.run())
    try:
        def settled() -> bool:  # on the worker's own events: no blocking call on its loop
            return len(events["succeeded"]) + len(events["failed"]) >= GOOD_JOBS + 1

        async def written() -> bool:  # the outcomes are written in batches
            return await app.count_async("q") == 0

        await eventually(settled, 60, f"the 101 jobs to settle ({poison.name})")
        await eventually(written, 30, "their outcomes to be written")
        assert not run.done(), "the worker stopped"  # alive after the poison
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)  # stops cleanly: no exception escapes the worker

    assert sorted(runs) == sorted(good_ids) and set(runs.values()) == {1}  # each ran once
    assert all(events["succeeded"][i] == 1 for i in good_ids)
    failed = app.failed("q")
    if poison.ends == "failed":
        assert [f.id for f in failed] == [bad]
        assert poison.fault in failed[0].reason, failed[0].reason[:300]
        assert len(failed[0].reason) < 10_000  # capped, whatever the message
    else:
        assert failed == [] and events["succeeded"][bad] == 1


# ---- a job that kills its process (os._exit): real worker processes ----------------------------
class Supervisor:
    """Two worker processes of ``tests.apps.bad_neighbours``; a dead one is replaced at once."""

    def __init__(self, argv: list[str], n: int = 2) -> None:
        self.argv = argv
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exit_codes: list[int] = []
        for _ in range(n):
            self._spawn()

    def _spawn(self) -> None:
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.apps.bad_neighbours", *self.argv], cwd=ROOT,
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def replace_dead(self) -> None:
        for p in list(self.procs):
            code = p.poll()
            if code is not None:
                self.procs.remove(p)
                self.exit_codes.append(code)
                self._spawn()

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


@pytest.fixture
def supervisor() -> Iterator[Callable[[list[str]], Supervisor]]:
    made: list[Supervisor] = []

    def make(argv: list[str]) -> Supervisor:
        made.append(Supervisor(argv))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _enqueue_with_killer(app: pgqueue.App) -> tuple[list[int], int]:
    good = app.enqueue_many(bn.GOOD, [{"n": i} for i in range(GOOD_JOBS // 2)], queue=bn.QUEUE)
    killer = app.enqueue(bn.KILLER, {}, queue=bn.QUEUE)
    good += app.enqueue_many(bn.GOOD, [{"n": i} for i in range(GOOD_JOBS // 2, GOOD_JOBS)],
                             queue=bn.QUEUE)
    return good, killer


def _drained_and_quarantined(app: pgqueue.App, sup: Supervisor, killer: int) -> bool:
    sup.replace_dead()
    if app.count(bn.QUEUE) != 0:
        return False
    try:
        app.get_failed(killer)
    except pgqueue.JobNotFoundError:
        return False
    return True


@pytest.mark.processes
def test_os_exit_poison_on_worker_processes(
        driver_kind_app: pgqueue.App, request: pytest.FixtureRequest,
        supervisor: Callable[[list[str]], Supervisor]) -> None:
    """A job that kills its process: restarted workers drain the good jobs and the killer is
    quarantined. Needs a store shared by processes: the memory driver lives inside one process
    (``cross_process=False``), and a process that exits takes its jobs with it, so it is
    skipped by that flag."""
    app = driver_kind_app
    try:
        if not app.driver.capabilities.cross_process:
            pytest.skip("declared: no cross-process store (a job killing its process takes "
                        "the in-process store with it)")
        if not app.driver.capabilities.rescue:
            pytest.skip("declared: the backend makes expired jobs claimable by itself (no "
                        "rescue rule, so no quarantine)")
        if app.database_url is not None:
            _os_exit_on_postgres(app, request.getfixturevalue("conn"), supervisor)
        else:
            _os_exit_on_redis(app, request.getfixturevalue("redis_prefix"), supervisor)
    finally:
        app.close()


def _os_exit_on_postgres(app: pgqueue.App, conn: psycopg.Connection[Any],
                         supervisor: Callable[[list[str]], Supervisor]) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {bn.RUNS_TABLE} (job_id bigint, pid int)")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {bn.KILLS_TABLE} (job_id bigint, pid int)")
    conn.execute(f"TRUNCATE {bn.RUNS_TABLE}, {bn.KILLS_TABLE}")
    assert app.database_url is not None
    good, killer = _enqueue_with_killer(app)
    sup = supervisor(["postgres", app.database_url])
    wait_for(lambda: _drained_and_quarantined(app, sup, killer), 120,
             "restarted workers to drain the queue and quarantine the killer")
    kills = conn.execute(f"SELECT count(*) FROM {bn.KILLS_TABLE}").fetchone()
    assert kills is not None and kills[0] >= 3
    assert bn.EXIT_CODE in sup.exit_codes
    # every good job's effect exists exactly once (written in its completion transaction)
    rows = conn.execute(f"SELECT job_id, count(*) FROM {bn.RUNS_TABLE} GROUP BY 1").fetchall()
    assert sorted(r[0] for r in rows) == sorted(good) and {r[1] for r in rows} == {1}
    assert conn.execute("SELECT count(*) FROM pgqueue.job_history "
                        "WHERE state = 'succeeded' AND id = ANY(%s)", (good,)
                        ).fetchone() == (GOOD_JOBS,)
    failed = app.failed(bn.QUEUE)
    assert [f.id for f in failed] == [killer]  # no innocent neighbour archived
    assert "quarantined" in failed[0].reason and "os._exit" in failed[0].reason
    assert {e.error for e in failed[0].errors} == {RESCUE_REASON}


def _os_exit_on_redis(app: pgqueue.App, url_prefix: tuple[str, str],
                      supervisor: Callable[[list[str]], Supervisor]) -> None:
    import redis

    url, prefix = url_prefix
    marker = redis.Redis.from_url(url, decode_responses=True)
    try:
        good, killer = _enqueue_with_killer(app)
        sup = supervisor(["redis", url, prefix])
        wait_for(lambda: _drained_and_quarantined(app, sup, killer), 120,
                 "restarted workers to drain the queue and quarantine the killer")
        killed_pids = {int(p) for p in marker.lrange(f"{prefix}:test:kills", 0, -1)}
        assert len(killed_pids) >= 3
        # every good job ran and succeeded; a second run only re-ran what a killed process
        # held (its earlier runs' pids are killed ones): at-least-once, without transactions
        for job_id in good:
            pids = [int(p) for p in marker.lrange(f"{prefix}:test:runs:{job_id}", 0, -1)]
            assert pids, f"good job {job_id} never ran"
            assert all(p in killed_pids for p in pids[:-1]), (job_id, pids)
        [stats] = [s for s in app.stats() if s.queue == bn.QUEUE]
        assert stats.finished_last_hour == GOOD_JOBS
        failed = app.failed(bn.QUEUE)
        assert [f.id for f in failed] == [killer]  # no innocent neighbour archived
        assert "quarantined" in failed[0].reason
    finally:
        marker.close()
