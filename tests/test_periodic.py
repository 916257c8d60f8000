"""Periodic jobs: schedule arithmetic (cron, every, DST, catch-up), validation at declaration,
the compare-and-set that fires each tick once, the scheduler service, pause/resume/run-now, stale
schedules, the CLI, and drivers without the capability."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.cli import main
from pgqueue.drivers.postgres.driver import PostgresDriver
from pgqueue.job import NewJob
from pgqueue.periodic import Schedule, make_schedule
from pgqueue.worker.maintenance import Scheduler
from tests.helpers import run_async, scalar, wait_for

UTC = dt.UTC
JOB = NewJob("q", "t", "{}")


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
       second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# ---- schedule arithmetic (pure) ----------------------------------------------------------------
def test_cron_and_aliases_tick_in_utc() -> None:
    s = make_schedule("five", JOB, cron="*/5 * * * *")
    assert s.ticks(at(2026, 1, 1, 10, 0), at(2026, 1, 1, 10, 20)) == [
        at(2026, 1, 1, 10, 5), at(2026, 1, 1, 10, 10), at(2026, 1, 1, 10, 15),
        at(2026, 1, 1, 10, 20)]
    hourly = make_schedule("h", JOB, cron="@hourly")
    assert hourly.cron == "0 * * * *"
    assert hourly.next_after(at(2026, 1, 1, 10, 0)) == at(2026, 1, 1, 11, 0)
    assert make_schedule("d", JOB, cron="@daily").next_after(at(2026, 1, 1, 10)) == \
        at(2026, 1, 2)


def test_every_is_aligned_on_the_epoch() -> None:
    s = make_schedule("e", JOB, every=dt.timedelta(minutes=5))
    assert s.spec == "every 5m"
    assert s.next_after(at(2026, 1, 1, 10, 1, 30)) == at(2026, 1, 1, 10, 5)
    assert s.ticks(at(2026, 1, 1, 10, 0), at(2026, 1, 1, 10, 10)) == [
        at(2026, 1, 1, 10, 5), at(2026, 1, 1, 10, 10)]


def test_dst_gap_tick_is_skipped_and_repeated_tick_fires_once() -> None:
    s = make_schedule("berlin", JOB, cron="30 2 * * *", timezone="Europe/Berlin")
    # 2026-03-29: 02:00 -> 03:00 in Berlin; 02:30 does not exist that day
    spring = s.ticks(at(2026, 3, 27), at(2026, 3, 31))
    assert spring == [at(2026, 3, 27, 1, 30), at(2026, 3, 28, 1, 30), at(2026, 3, 30, 0, 30)]
    # 2026-10-25: 03:00 -> 02:00; 02:30 happens twice, fires at its first occurrence only
    autumn = s.ticks(at(2026, 10, 24), at(2026, 10, 26))
    assert autumn == [at(2026, 10, 24, 0, 30), at(2026, 10, 25, 0, 30)]
    assert s.next_after(at(2026, 10, 25, 0, 30)) == at(2026, 10, 26, 1, 30)


def test_catch_up_policies_after_downtime() -> None:
    now = at(2026, 1, 1, 12, 0, 30)
    last = at(2026, 1, 1, 11, 0)  # an hour down: 60 minute ticks due, one of them on time

    def fire(policy: Any, **kw: Any) -> tuple[list[dt.datetime], dt.datetime | None]:
        s = make_schedule("m", JOB, cron="* * * * *", catch_up=policy, **kw)
        return s.due(last, now)

    assert fire("latest") == ([at(2026, 1, 1, 12, 0)], at(2026, 1, 1, 12, 0))
    assert fire("skip") == ([at(2026, 1, 1, 12, 0)], at(2026, 1, 1, 12, 0))
    every, newest = fire("all")
    assert len(every) == 60 and every[0] == at(2026, 1, 1, 11, 1) and newest == every[-1]
    assert fire("all", catch_up_limit=5)[0] == [at(2026, 1, 1, 11, 56 + i) for i in range(4)] + [
        at(2026, 1, 1, 12, 0)]
    # nothing on time: latest fires the newest missed tick, skip fires nothing
    assert fire("latest", grace=10) == ([at(2026, 1, 1, 12, 0)], at(2026, 1, 1, 12, 0))
    assert fire("skip", grace=10) == ([], at(2026, 1, 1, 12, 0))
    # a late tick within the grace period is not "missed": every one fires
    s = make_schedule("s", JOB, every=dt.timedelta(seconds=1))
    assert len(s.due(now - dt.timedelta(seconds=5), now)[0]) == 5
    assert s.due(now, now) == ([], None)


@pytest.mark.parametrize(("options", "message"), [
    ({"cron": "* * *"}, "use 5 fields"),
    ({"cron": "0 0 * * * *"}, "use 5 fields"),
    ({"cron": "61 * * * *"}, "invalid cron expression"),
    ({"cron": "0 0 30 2 *"}, "invalid cron expression"),
    ({"cron": "@reboot"}, "unknown cron alias"),
    ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"every": dt.timedelta(0)}, "at least one second"),
    ({"every": dt.timedelta(milliseconds=500)}, "at least one second"),
    ({"every": "5m"}, "timedelta"),
    ({}, "exactly one of cron"),
    ({"cron": "* * * * *", "every": 60}, "exactly one of cron"),
    ({"cron": "* * * * *", "catch_up": "some"}, "catch_up"),
    ({"cron": "* * * * *", "catch_up_limit": 0}, "catch_up_limit"),
    ({"cron": "* * * * *", "grace": -1}, "grace"),
])
def test_bad_schedules_raise_validation_error_naming_the_schedule(
        options: dict[str, Any], message: str) -> None:
    app = pgqueue.App(database_url="postgresql://nowhere.invalid/x")
    with pytest.raises(pgqueue.ValidationError, match=message) as info:
        app.add_periodic("reports.daily", task="report", **options)
    assert "'reports.daily'" in str(info.value)
    assert app.schedules == {}


def test_declaration_validates_the_task_arguments_and_refuses_duplicates() -> None:
    app = pgqueue.App(database_url="postgresql://nowhere.invalid/x")

    @app.periodic(cron="0 3 * * *", name="cleanup", args={"days": 30}, queue="maint")
    @app.task(name="cleanup-task")
    def cleanup(days: int) -> None: ...

    assert app.schedules["cleanup"].job.queue == "maint"
    assert json.loads(app.schedules["cleanup"].job.args_json) == {"days": 30}
    assert cleanup.name in app.tasks
    with pytest.raises(pgqueue.ValidationError, match="'cleanup' is already declared"):
        app.add_periodic("cleanup", task=cleanup.name, cron="@daily", args={"days": 1})
    with pytest.raises(pgqueue.ValidationError, match="schedule 'other'"):
        app.add_periodic("other", task=cleanup.name, cron="@daily", args={"weeks": 1})
    assert list(app.schedules) == ["cleanup"]


# ---- the compare-and-set in the database ------------------------------------------------------
def _schedule(name: str = "s", **kw: Any) -> Schedule:
    return make_schedule(name, NewJob("ticks", "tick", "{}"), **kw)


def test_two_claims_of_the_same_tick_insert_one_job(clean: str) -> None:
    """The claim statement under READ COMMITTED: the second claimer waits for the first's row
    lock, then finds ``last_tick`` moved and inserts nothing."""
    driver = PostgresDriver(clean)
    s = _schedule(every=dt.timedelta(seconds=1))
    run_async_driver(driver, driver.sync_schedules([_def(s)]))
    with psycopg.connect(clean) as a, psycopg.connect(clean) as b:
        last = a.execute("SELECT last_tick FROM pgqueue.schedules").fetchone()[0]  # type: ignore[index]
        a.commit()
        tick = s.next_after(last)
        assert tick is not None
        params = {"name": "s", "expected": last, "new_last": tick, "next_tick": None,
                  "queue": "ticks", "task": "tick", "args": "{}", "priority": 20,
                  "max_attempts": 5, "timeout_s": None,
                  "metas": [json.dumps({"periodic": "s", "tick": tick.isoformat()})]}
        first = a.execute(driver.sql.claim_ticks, params).fetchall()
        assert [r[0] for r in first] == ["claimed", "job"]
        second: list[Any] = []
        blocked = threading.Thread(
            target=lambda: second.extend(b.execute(driver.sql.claim_ticks, params).fetchall()))
        blocked.start()
        wait_for(lambda: _waiting_on_lock(clean), 10, "the second claim to wait for the lock")
        assert second == []
        a.commit()
        blocked.join(10)
        b.commit()
        assert second == []  # it claimed nothing and inserted nothing
    with psycopg.connect(clean) as c:
        assert scalar(c, "SELECT count(*) FROM pgqueue.jobs WHERE meta->>'periodic' = 's'") == 1
    driver.close()


def _waiting_on_lock(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as c:
        return bool(scalar(c, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                              "'Lock' AND datname = current_database()"))


def _def(s: Schedule) -> Any:
    from pgqueue.drivers.base import ScheduleDef

    return ScheduleDef(s.name, s.spec, s.timezone, s.catch_up, s.job, None)


def run_async_driver(driver: PostgresDriver, coro: Any) -> Any:
    async def main() -> Any:
        try:
            return await coro
        finally:
            await driver.aclose()
    return asyncio.run(main())


def test_scheduler_fires_due_ticks_and_paused_or_stale_schedules_never(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    app.add_periodic("minutely", task="tick", cron="* * * * *", queue="ticks",
                     catch_up="all")
    app.add_periodic("gone", task="tick", cron="* * * * *", queue="ticks")

    async def main() -> None:
        both = Scheduler(app.driver, schedules=app.schedules)
        await both.sync()
        # an outage of 5 minutes: move last_tick back (as if nobody fired since)
        conn.execute("UPDATE pgqueue.schedules SET last_tick = date_trunc('minute', now()) "
                     "- interval '5 minutes'")
        conn.execute("UPDATE pgqueue.schedules SET paused = true WHERE name = 'gone'")
        await both.fire_due()
        # a worker whose code no longer declares "gone"
        only = Scheduler(app.driver, schedules={"minutely": app.schedules["minutely"]})
        await only.sync()
        conn.execute("UPDATE pgqueue.schedules SET paused = false, last_tick = "
                     "date_trunc('minute', now()) - interval '3 minutes' WHERE name = 'gone'")
        await only.fire_due()

    run_async(app, main())
    ticks = [r[0] for r in conn.execute(
        "SELECT (meta->>'tick')::timestamptz FROM pgqueue.jobs "
        "WHERE meta->>'periodic' = 'minutely' ORDER BY id").fetchall()]
    # catch_up="all": each minute since the outage began fired once, in order (5, or 6 if a
    # minute began meanwhile)
    assert len(ticks) in (5, 6)
    assert [(t - ticks[0]).total_seconds() for t in ticks] == [60.0 * i for i in range(len(ticks))]
    assert ticks[-1] == scalar(conn, "SELECT last_tick FROM pgqueue.schedules "
                                     "WHERE name = 'minutely'")
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs "
                        "WHERE meta->>'periodic' = 'gone'") == 0
    rows = {r.name: r for r in app.periodic_schedules()}
    assert rows["gone"].stale and not rows["minutely"].stale
    assert rows["minutely"].next_tick is not None
    assert rows["minutely"].next_tick > rows["minutely"].last_tick
    view = conn.execute("SELECT name, stale, next_run FROM pgqueue.periodic_schedules "
                        "ORDER BY name").fetchall()
    assert [(n, s, r is None) for n, s, r in view] == [("gone", True, True),
                                                       ("minutely", False, False)]


def test_pause_resume_and_run_now(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    app.add_periodic("report", task="tick", cron="@daily", args={"x": 1}, queue="ticks")
    run_async(app, Scheduler(app.driver, schedules=app.schedules).sync())
    app.pause_periodic("report")
    assert app.periodic_schedules()[0].paused
    conn.execute("UPDATE pgqueue.schedules SET last_tick = now() - interval '3 days'")
    app.resume_periodic("report")
    info = app.periodic_schedules()[0]
    assert not info.paused
    # the ticks that passed while paused never fire: last_tick moved to now
    assert info.last_tick > dt.datetime.now(UTC) - dt.timedelta(minutes=1)
    job_id = app.run_periodic_now("report")
    job = app.get_job(job_id)
    assert job is not None and job.args == {"x": 1} and job.queue == "ticks"
    assert job.meta == {"periodic": "report", "run_now": True}
    with pytest.raises(pgqueue.JobNotFoundError, match="no periodic schedule named 'nope'"):
        app.run_periodic_now("nope")
    with pytest.raises(pgqueue.JobNotFoundError):
        app.pause_periodic("nope")


def test_cli_periodic_list_pause_resume_run_now(
        app: pgqueue.App, capsys: pytest.CaptureFixture[str]) -> None:
    app.add_periodic("nightly", task="tick", cron="0 3 * * *", queue="ticks")
    run_async(app, Scheduler(app.driver, schedules=app.schedules).sync())
    url = ["--database-url", app.database_url or ""]
    assert main(["periodic", "list", *url]) == 0
    out = capsys.readouterr().out
    assert "nightly" in out and "0 3 * * *" in out
    assert main(["periodic", "pause", "nightly", *url]) == 0
    assert main(["periodic", "list", "--json", *url]) == 0
    listed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert listed[0]["name"] == "nightly" and listed[0]["paused"] is True
    assert main(["periodic", "resume", "nightly", *url]) == 0
    assert main(["periodic", "run-now", "nightly", *url]) == 0
    assert "enqueued job" in capsys.readouterr().out
    assert main(["periodic", "run-now", "missing", *url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no periodic schedule named 'missing'" in err
    assert main(["periodic", "pause", *url]) == 2
    assert "needs a schedule NAME" in capsys.readouterr().err


def test_worker_runs_the_scheduler_unless_opted_out(app: pgqueue.App) -> None:
    app.add_periodic("p", task="tick", every=dt.timedelta(hours=1), queue="ticks")
    on = app.worker(["idle"], burst=False).start_in_thread()
    off = app.worker(["idle"], periodic=False).start_in_thread()
    try:
        assert any(isinstance(d, Scheduler) for d in on.duties)
        assert not any(isinstance(d, Scheduler) for d in off.duties)
    finally:
        on.stop()
        off.stop()
        assert on.stopped.wait(30) and off.stopped.wait(30)


def test_drivers_without_periodic_refuse_schedules() -> None:
    app = pgqueue.App(driver="memory")
    assert not app.driver.capabilities.periodic
    with pytest.raises(pgqueue.CapabilityError, match="no periodic jobs"):
        app.add_periodic("p", task="tick", cron="@hourly")
    # declared before the driver was chosen: the worker refuses to start
    late = pgqueue.App(database_url="postgresql://nowhere.invalid/x")
    late.add_periodic("p", task="tick", cron="@hourly")
    late._driver = pgqueue.App(driver="memory").driver
    with pytest.raises(pgqueue.CapabilityError, match="--no-periodic"):
        late.worker(["x"]).start_in_thread()
    worker = late.worker(["x"], periodic=False).start_in_thread()
    worker.stop()
    assert worker.stopped.wait(30)


def test_cli_worker_no_periodic_flag() -> None:
    from pgqueue.cli import build_parser

    assert build_parser().parse_args(["worker", "m:app"]).periodic is True
    assert build_parser().parse_args(["worker", "m:app", "--no-periodic"]).periodic is False


@pytest.mark.parametrize("options", [{"history_retention": 0},
                                     {"failed_retention": dt.timedelta(days=-1)},
                                     {"leader_lease_s": "30"}])
def test_bad_retention_or_leader_lease_is_a_validation_error(options: dict[str, Any]) -> None:
    app = pgqueue.App(database_url="postgresql://nowhere.invalid/x")
    with pytest.raises(pgqueue.ValidationError, match="positive number of seconds"):
        app.worker(["q"], **options)
