"""The dashboard's reads: the App's own (queue statistics, schedules) and the PostgreSQL
driver's inspection statements (:meth:`PostgresDriver.inspect_async`), shaped for the pages."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pgqueue.app import App
from pgqueue.backend import ScheduleInfo
from pgqueue.dashboard._format import Figure, errors_of
from pgqueue.dashboard._input import Cursor, Filters
from pgqueue.drivers.postgres.driver import PostgresDriver
from pgqueue.errors import CapabilityError

__all__ = ["COUNT_CAP", "KEY_GROUPS", "MEAN_SAMPLE", "PAGE_SIZE", "Page", "QueueRow", "Reader",
           "postgres_driver"]

#: rows per listing page
PAGE_SIZE = 50
#: the overview counts up to this many rows per figure (a bigger one shows as "10,000+")
COUNT_CAP = 10_000
#: the most (concurrency key, priority) groups of a queue probed for its oldest keyed job
KEY_GROUPS = 1_000
#: the mean run time is that of each queue's newest jobs finished in the last hour, this many
MEAN_SAMPLE = 1_000
#: the most archived jobs one "retry all matching" re-drives (the page says when more remain)
RETRY_BATCH = 10_000


def postgres_driver(app: App) -> PostgresDriver:
    """The app's PostgreSQL driver; :class:`pgqueue.CapabilityError` for any other driver."""
    driver = app.driver
    if not isinstance(driver, PostgresDriver):
        raise CapabilityError(f"the dashboard needs the postgres driver (it reads pgqueue's "
                              f"tables), not {driver.name}")
    return driver


@dataclass(frozen=True)
class QueueRow:
    """One queue on the overview, with the ``queue_stats`` columns it shows; each count is a
    :class:`Figure`, exact below the cap (and then equal to the view's)."""

    queue: str
    paused: bool
    waiting: Figure
    scheduled: Figure
    running: Figure
    failed: Figure
    finished_last_hour: Figure
    failed_last_hour: Figure
    #: seconds the oldest ready job has waited (None: none is ready)
    oldest_wait_s: float | None
    #: the oldest wait is a lower bound (more keyed groups than :data:`KEY_GROUPS`)
    oldest_more: bool
    #: mean run time of the newest :data:`MEAN_SAMPLE` jobs finished in the last hour
    mean_run_time_s: float | None


@dataclass
class Page:
    """One page of a listing: its rows and the cursor of the next page (None: the last)."""

    rows: list[dict[str, Any]]
    next_cursor: str | None = None
    estimate: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _dicts(names: str, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    keys = names.split()
    return [dict(zip(keys, r, strict=True)) for r in rows]


_LIVE = "id queue task args state attempt max_attempts created_at run_at started_at worker_id " \
        "last_error priority"
_HISTORY = "id queue task args state attempt max_attempts enqueued_at started_at finished_at " \
           "worker_id run_s wait_s"
_FAILED = "id queue task args attempt max_attempts reason enqueued_at started_at failed_at " \
          "last_error"
_DETAIL = "where id queue task args state attempt max_attempts errors result worker_id " \
          "enqueued_at run_at started_at finished_at reason options"
_LIMITS = "queue concurrency key_concurrency rate_limit rate_period_s slots_in_use rate_used " \
          "waiting_for_limit"
_WORKERS = "id host pid queues concurrency started_at heartbeat_at age_s running running_ids " \
           "running_read"


class Reader:
    """Reads for the pages, through one App and its PostgreSQL driver."""

    def __init__(self, app: App, count_cap: int = COUNT_CAP) -> None:
        self.app = app
        self.driver = postgres_driver(app)
        self.count_cap = count_cap
        #: the chart's bound per minute (a quarter of the count cap: 60 minutes are read)
        self.minute_cap = max(1, count_cap // 4)

    async def _rows(self, name: str, **params: Any) -> list[tuple[Any, ...]]:
        return await self.driver.inspect_async(name, params)

    async def stats(self) -> list[QueueRow]:
        """The overview's per-queue figures (``DashboardStatements.overview``)."""
        cap = self.count_cap
        rows = await self._rows("overview", cap=cap, groups=KEY_GROUPS, sample=MEAN_SAMPLE)
        return [QueueRow(
            queue=str(queue), paused=bool(paused),
            waiting=Figure.capped(int(waiting), cap) + _bounded(k_waiting, k_read, cap),
            scheduled=Figure.capped(int(scheduled), cap) + _bounded(k_scheduled, k_read, cap),
            running=_bounded(running, running_read, cap),
            failed=Figure.capped(int(failed), cap),
            finished_last_hour=Figure.capped(int(finished), cap),
            failed_last_hour=Figure.capped(int(failed_hour), cap),
            oldest_wait_s=oldest, oldest_more=groups > KEY_GROUPS, mean_run_time_s=mean_run)
            for (queue, paused, waiting, scheduled, k_waiting, k_scheduled, k_read, running,
                 running_read, failed, failed_hour, finished, oldest, groups, mean_run)
            in rows]

    async def limited(self) -> list[dict[str, Any]]:
        """The flow-control figures of the queues that have a limit."""
        return _dicts(_LIMITS, await self._rows("limited_stats"))

    async def throughput(self) -> list[tuple[dt.datetime, Figure, Figure]]:
        """Finished and failed jobs per minute over the last hour, oldest minute first."""
        cap = self.minute_cap
        return [(r[0], Figure.capped(int(r[1]), cap), Figure.capped(int(r[2]), cap))
                for r in await self._rows("throughput", cap=cap)]

    async def estimates(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in await self._rows("estimates")}

    async def queue_known(self, queue: str) -> bool:
        return bool((await self._rows("queue_known", queue=queue))[0][0])

    async def live_jobs(self, filters: Filters, cursor: Cursor | None) -> Page:
        rows = _dicts(_LIVE, await self._rows(
            "live_jobs", **filters.params(), before_id=cursor.id if cursor else None,
            limit=PAGE_SIZE + 1))
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        nxt = Cursor(None, rows[-1]["id"]).text() if more else None
        return Page(rows, nxt, (await self.estimates()).get("jobs"))

    async def history(self, filters: Filters, cursor: Cursor | None) -> Page:
        rows = _dicts(_HISTORY, await self._rows(
            "history_jobs", **filters.params(), before_id=cursor.id if cursor else None,
            limit=PAGE_SIZE + 1))
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        nxt = Cursor(None, rows[-1]["id"]).text() if more else None
        return Page(rows, nxt, (await self.estimates()).get("job_history"))

    async def failed(self, filters: Filters, cursor: Cursor | None) -> Page:
        rows = _dicts(_FAILED, await self._rows(
            "failed_jobs", **filters.params(), before_at=cursor.at if cursor else None,
            before_id=cursor.id if cursor else None, limit=PAGE_SIZE + 1))
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        nxt = Cursor(rows[-1]["failed_at"], rows[-1]["id"]).text() if more else None
        return Page(rows, nxt, (await self.estimates()).get("failed_jobs"))

    async def failed_ids(self, filters: Filters, limit: int = RETRY_BATCH) -> list[int]:
        return [int(r[0]) for r in await self._rows("failed_ids", **filters.params(),
                                                     limit=limit)]

    async def job(self, job_id: int) -> dict[str, Any] | None:
        rows = _dicts(_DETAIL, await self._rows("job_detail", id=job_id))
        if not rows:
            return None
        job = rows[0]
        job["errors"] = errors_of(job["errors"])
        job["timeline"] = _timeline(job)
        return job

    async def workers(self, stale_after_s: float) -> list[dict[str, Any]]:
        """The registered workers; ``running`` is a :class:`Figure` (bounded as the
        overview's running counts are)."""
        rows = _dicts(_WORKERS, await self._rows("workers", cap=self.count_cap))
        for w in rows:
            w["stale"] = w["age_s"] is not None and w["age_s"] > stale_after_s
            w["running_ids"] = w["running_ids"] or []
            w["running"] = _bounded(w["running"], w.pop("running_read"), self.count_cap)
        return rows

    async def schedules(self) -> list[ScheduleInfo]:
        return await self.app.periodic_schedules_async()


def _bounded(n: int, read: int, cap: int) -> Figure:
    """``n`` rows among ``read`` read with ``LIMIT cap + 1``: exact unless the read was cut."""
    return Figure(min(int(n), cap), int(read) > cap)


def _timeline(job: dict[str, Any]) -> list[tuple[str, dt.datetime, str]]:
    """A job's events, oldest first: (label, when, css class)."""
    end = "Failed" if job["where"] == "failed" else str(job["state"]).capitalize()
    events = [("Enqueued", job["enqueued_at"], ""), ("Runs at", job["run_at"], ""),
              ("Started" + (" (last attempt)" if job["errors"] else ""), job["started_at"], ""),
              *[(f"Attempt {e['attempt']} failed", e["at"], "bad") for e in job["errors"]],
              (end, job["finished_at"], "bad" if job["where"] == "failed" else "ok")]
    if job["where"] == "live" and job["run_at"] == job["enqueued_at"]:
        events.pop(1)
    return sorted(((label, at, css) for label, at, css in events if at is not None),
                  key=lambda e: e[1])
