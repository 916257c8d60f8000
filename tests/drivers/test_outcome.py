"""Outcome policy across the driver seam: the attempt-error record and the rescue reason are
defined once (:mod:`pgqueue.job`) and every driver stores and returns them the same way."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import pgqueue
from pgqueue.job import (
    OUTCOMES,
    QUARANTINE_REASON,
    RESCUE_REASON,
    AttemptError,
    JobState,
    quarantine_reason_for,
    rescue_counts,
    rescue_quarantines,
)
from pgqueue.retry import RetryPolicy
from tests.drivers.test_behaviour import claim, drain, needs
from tests.helpers import eventually

PACKAGE = Path(pgqueue.__file__).resolve().parent


def _shape(errors: list[AttemptError]) -> list[tuple[type, int, str, bool, str | None]]:
    """What must be equal across drivers (times and tracebacks differ run to run)."""
    return [(type(e), e.attempt, e.error, e.traceback is not None and "Traceback" in e.traceback,
             e.worker) for e in errors]


async def test_failed_job_returns_typed_attempt_errors(driver_app: pgqueue.App) -> None:
    """Retried once, then archived: the archive holds one :class:`AttemptError` per attempt,
    with the attempt number, the error text, the traceback and an aware time."""
    app = driver_app
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)

    @app.task(name="boom", queue="q", max_attempts=2,
              retry=RetryPolicy(base=0.01, factor=1.0, jitter=0.0))
    def boom() -> None:
        raise ValueError(f"boom {pgqueue.current_job().attempt}")

    job_id = app.enqueue("boom")
    worker = await drain(app, queues=["q"])
    assert worker.counts == {"retried": 1, "failed": 1}

    failed = app.get_failed(job_id)
    kept = (1, 2) if app.driver.capabilities.attempt_errors else (2,)  # else the last one
    assert _shape(failed.errors) == [(AttemptError, i, f"ValueError: boom {i}", True, None)
                                     for i in kept]
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    for e in failed.errors:
        assert e.at is not None and e.at.tzinfo is not None and before < e.at < after
    assert failed.errors[0].at <= failed.errors[-1].at  # type: ignore[operator]
    assert failed.reason == "ValueError: boom 2"
    assert app.failed("q") == [failed]  # list and get agree

    # re-driven, the job keeps its typed errors
    app.retry_failed(job_id)
    if app.driver.capabilities.job_lookup:
        live = app.get_job(job_id)
        assert live is not None and live.errors == failed.errors
    else:
        [live] = await app.driver.claim(["q"], 1, worker_id="w", lease_s=60)
        assert live.errors == failed.errors


async def test_rescued_job_carries_the_one_rescue_reason(driver_app: pgqueue.App) -> None:
    needs(driver_app, "rescue", "the backend makes expired jobs claimable by itself")
    """A rescue appends an :class:`AttemptError` with :data:`RESCUE_REASON` (and the dead
    worker); a quarantined job's archive reason is :data:`QUARANTINE_REASON` with its count."""
    app, driver = driver_app, driver_app.driver
    first = app.enqueue("t", queue="q", max_attempts=2, priority=0)
    quarantined = app.enqueue("t", queue="q", max_attempts=5, priority=1)
    assert [j.id for j in await claim(app, worker="dead", lease_s=0.05)] == [first]
    assert [j.id for j in await claim(app, worker="dead2", lease_s=0.05)] == [quarantined]
    seen: set[int] = set()
    archived: set[int] = set()

    async def both_rescued() -> bool:
        # each dead worker held one job: the prime suspect of its death
        requeued, failed = await driver.rescue_expired(quarantine_after=1)
        seen.update(requeued + failed)
        archived.update(failed)
        return {first, quarantined} <= seen

    await eventually(both_rescued, what="the expired leases to be rescued")
    assert archived == {first, quarantined}
    failed = app.get_failed(quarantined)
    assert failed.reason == quarantine_reason_for(1) and "died" in failed.reason
    assert _shape(failed.errors) == [(AttemptError, 1, RESCUE_REASON, False, "dead2")]

    # with the default rule, one death is not enough: the job waits again, its error recorded
    again = app.enqueue("t", queue="q", max_attempts=1, priority=0)
    await claim(app, worker="dead3", lease_s=0.05)

    async def requeued() -> bool:
        return again in (await driver.rescue_expired())[0]

    await eventually(requeued, what="the expired lease to be rescued")
    job = app.get_job(again)
    assert job is not None and job.state == JobState.WAITING
    assert _shape(job.errors) == [(AttemptError, 1, RESCUE_REASON, False, "dead3")]


async def test_rescue_reasons_are_parameters_of_the_driver(driver_app: pgqueue.App) -> None:
    needs(driver_app, "rescue", "the backend makes expired jobs claimable by itself")
    """Drivers write the reasons they are given, not a text of their own."""
    app, driver = driver_app, driver_app.driver
    job_id = app.enqueue("t", queue="q", max_attempts=1)
    await claim(app, worker="dead", lease_s=0.05)

    async def archived() -> bool:
        return job_id in (await driver.rescue_expired(
            reason="lease lost (test)", quarantine_after=1,
            quarantine_reason="killed it {n} time(s) (test)"))[1]

    await eventually(archived, what="the expired lease to be rescued")
    failed = app.get_failed(job_id)
    assert failed.reason == "killed it 1 time(s) (test)"
    assert [e.error for e in failed.errors] == ["lease lost (test)"]


# ---- the policy itself (no driver) -------------------------------------------------------------
def test_attempt_error_round_trips_through_its_stored_form() -> None:
    err = AttemptError.now(3, "ValueError: x", "Traceback ...")
    assert AttemptError.from_json(err.to_json()) == err
    assert set(err.to_json()) == {"attempt", "error", "traceback", "at"}
    rescued = AttemptError(1, RESCUE_REASON, None, err.at, "w1")
    assert AttemptError.from_json(rescued.to_json()) == rescued
    # read access of the former dict form
    assert (err["error"], err["attempt"], err.get("missing", 0)) == ("ValueError: x", 3, 0)
    assert err["at"] == err.at.isoformat()  # type: ignore[union-attr]
    with pytest.raises(AttributeError):  # frozen
        err.error = "other"  # type: ignore[misc]


def test_outcome_table_and_rescue_rule() -> None:
    assert {r.where for r in OUTCOMES.values()} == {"jobs", "job_history", "failed_jobs"}
    assert OUTCOMES["quarantined"].state == OUTCOMES["failed"].state == JobState.FAILED
    assert OUTCOMES["rescued"].where == "jobs"
    assert not OUTCOMES["snoozed"].counts_attempt and OUTCOMES["retried"].records_error
    assert rescue_counts(worker_alive=False) and not rescue_counts(worker_alive=True)
    # (count before this rescue, highest count of the co-held jobs, quarantine_after)
    assert rescue_quarantines(2, None, 3)            # alone on its third dead worker
    assert not rescue_quarantines(1, None, 3)        # second death: not yet
    assert rescue_quarantines(2, 1, 3)               # the prime suspect among its neighbours
    assert not rescue_quarantines(2, 2, 3)           # a tie blames nobody...
    assert rescue_quarantines(5, 5, 3)               # ...until twice the limit
    assert not rescue_quarantines(1, 2, 3)           # an innocent neighbour of a killer
    assert quarantine_reason_for(4) == QUARANTINE_REASON.replace("{n}", "4")


def test_the_rescue_reason_is_written_once() -> None:
    """The texts live in pgqueue/job.py only: SQL binds them, Lua receives them in ARGV."""
    for text in (RESCUE_REASON, QUARANTINE_REASON[:40]):
        holders = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*")
                         if p.suffix in (".py", ".lua", ".sql")
                         and text in p.read_text(encoding="utf-8"))
        assert holders == ["job.py"]


def test_redis_scripts_ship_as_package_files() -> None:
    from importlib import resources

    from pgqueue.drivers.redis import driver

    folder = resources.files("pgqueue.drivers.redis").joinpath("scripts")
    for name in (*driver.SCRIPT_NAMES, "prelude"):
        assert folder.joinpath(f"{name}.lua").is_file(), name
