"""Periodic jobs: a :class:`Schedule` says when a job is enqueued; the database decides who does it.

Declared in code with :meth:`pgqueue.App.periodic` (a decorator) or
:meth:`pgqueue.App.add_periodic`::

    @app.periodic(cron="0 * * * *", name="reports.hourly", queue="reports",
                  timezone="Europe/Berlin")
    def hourly_report() -> None: ...

    app.add_periodic("cleanup", cron="@daily", task="cleanup", args={"days": 30})
    app.add_periodic("ping", every=timedelta(seconds=30), task="ping")

This module holds the schedule definitions and their time arithmetic only (pure functions, no
I/O); the workers' scheduler service (:mod:`pgqueue.worker.maintenance.scheduler`) claims each
tick in the database.

When a schedule ticks:

- ``cron``: a 5-field cron expression (minute hour day-of-month month day-of-week), or one of the
  aliases ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``,
  ``@hourly``. Parsed and evaluated by cronsim (a small, dependency-free cron evaluator tested
  against Debian cron). Evaluated in ``timezone`` (an IANA name, default ``"UTC"``) on wall-clock
  time: on a DST change, **a wall-clock tick that does not exist is skipped** (``30 2 * * *`` on
  the spring-forward night in Europe/Berlin does not fire) and **one that exists twice fires
  once**, at its first occurrence. A schedule that must run at a steady rate across DST changes
  should use ``timezone="UTC"`` or ``every=``.
- ``every``: a fixed period (a :class:`datetime.timedelta` of at least one second), aligned on
  the Unix epoch in UTC: ``every=timedelta(minutes=5)`` ticks at :00, :05, :10... of every hour,
  whatever the time zone and whichever worker started when.

Catch-up after downtime (``catch_up``): a tick is *on time* while it is at most ``grace``
seconds old (default 60) when a scheduler sees it, and *missed* after that.

- ``"latest"`` (default): on-time ticks fire; of the missed ticks, only the newest fires (one job
  for the whole outage), and only when no on-time tick supersedes it;
- ``"all"``: every due tick fires, the newest ``catch_up_limit`` (default 100) at most;
- ``"skip"``: only on-time ticks fire; missed ones never do.

Each fired tick becomes one job of the schedule's task, with the schedule's arguments, and
``meta`` ``{"periodic": <name>, "tick": <ISO time of the tick, UTC>}``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zoneinfo
from dataclasses import dataclass, replace
from typing import Literal, get_args

from cronsim import CronSim, CronSimError

from pgqueue._names import validate_name
from pgqueue.errors import ValidationError
from pgqueue.job import NewJob

__all__ = ["ALIASES", "CatchUp", "Schedule", "make_schedule"]

UTC = dt.UTC

#: How a schedule treats ticks missed while no worker ran (see the module docstring).
CatchUp = Literal["latest", "all", "skip"]

#: The cron aliases and the 5-field expressions they stand for.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: at most this many due ticks are computed at once (older ones cannot fire under any policy:
#: ``catch_up_limit`` is at most this)
MAX_TICKS = 1000

_US = dt.timedelta(microseconds=1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Schedule:
    """One periodic job, validated (build it with :meth:`pgqueue.App.add_periodic`).

    Attributes:
        name: the schedule's stable name (its row in the ``schedules`` table).
        spec: what the user wrote, for display: the cron expression or ``every 30s``.
        cron: the 5-field cron expression (aliases expanded), or None for ``every``.
        every: the fixed period, or None for ``cron``.
        timezone: the IANA time zone the cron expression is read in (default ``"UTC"``).
        catch_up: ``"latest"``, ``"all"`` or ``"skip"``.
        catch_up_limit: the most ticks ``"all"`` backfills at once.
        grace: seconds a tick stays on time (default 60).
        job: the job each tick enqueues (its ``meta`` gets the tick added).
    """

    name: str
    spec: str
    cron: str | None
    every: dt.timedelta | None
    timezone: str
    catch_up: CatchUp
    catch_up_limit: int
    grace: float
    job: NewJob

    @property
    def zone(self) -> dt.tzinfo:
        """The time zone as a :class:`zoneinfo.ZoneInfo`."""
        return zoneinfo.ZoneInfo(self.timezone)

    # ---- tick arithmetic ---------------------------------------------------------------------
    def ticks(self, after: dt.datetime, until: dt.datetime,
              limit: int = MAX_TICKS) -> list[dt.datetime]:
        """The newest ``limit`` ticks ``t`` with ``after < t <= until``, oldest first, in UTC."""
        if until <= after or limit < 1:
            return []
        if self.every is not None:
            period = self.every // _US
            first = (after - _EPOCH) // _US // period + 1
            last = (until - _EPOCH) // _US // period
            first = max(first, last - limit + 1)
            return [_EPOCH + _US * (k * period) for k in range(first, last + 1)]
        assert self.cron is not None
        zone = self.zone
        local = until.astimezone(zone).replace(tzinfo=None, microsecond=0)
        # reverse iteration includes its start when it carries microseconds (cronsim strips them)
        it = CronSim(self.cron, local + _US, reverse=True)
        out: list[dt.datetime] = []
        for naive in it:
            t = _wall_to_utc(naive, zone)
            if t is None:
                continue  # does not exist on that day (DST gap): skipped
            if t <= after:
                break
            if t <= until:  # a repeated wall time maps to its first occurrence
                if out and out[-1] == t:
                    continue
                out.append(t)
                if len(out) >= limit:
                    break
        out.reverse()
        return out

    def next_after(self, t: dt.datetime) -> dt.datetime | None:
        """The first tick strictly after ``t`` (UTC), or None if there is none within 50
        years."""
        if self.every is not None:
            period = self.every // _US
            k = (t - _EPOCH) // _US // period + 1
            return _EPOCH + _US * (k * period)
        assert self.cron is not None
        zone = self.zone
        local = t.astimezone(zone).replace(tzinfo=None)
        # a time in the second pass of a repeated hour reads as an earlier wall time: start an
        # hour back and let the UTC comparison skip what is not after t
        try:
            for naive in CronSim(self.cron, local - dt.timedelta(hours=1)):
                found = _wall_to_utc(naive, zone)
                if found is not None and found > t:
                    return found
        except StopIteration:  # pragma: no cover - cronsim gives up after 50 years
            return None
        return None  # pragma: no cover

    def due(self, last_tick: dt.datetime, now: dt.datetime,
            ) -> tuple[list[dt.datetime], dt.datetime | None]:
        """``(ticks to fire, the new last tick)`` for a schedule whose last claimed tick is
        ``last_tick``, at database time ``now``; ``([], None)`` when no tick is due.

        The catch-up policy decides which of the due ticks fire (see the module docstring); the
        new last tick is always the newest due tick, so nothing due now fires later.
        """
        limit = min(MAX_TICKS, max(self.catch_up_limit, math.ceil(self.grace) + 2))
        due = self.ticks(last_tick, now, limit)
        if not due:
            return [], None
        horizon = now - dt.timedelta(seconds=self.grace)
        on_time = [t for t in due if t >= horizon]
        if self.catch_up == "all":
            fire = due[-self.catch_up_limit:]
        elif self.catch_up == "skip":
            fire = on_time
        else:
            fire = on_time or due[-1:]
        return fire, due[-1]

    def job_for(self, tick: dt.datetime) -> NewJob:
        """The job a tick enqueues: the schedule's job, with the tick in its meta."""
        meta = json.loads(self.job.meta_json)
        meta.update({"periodic": self.name, "tick": tick.astimezone(UTC).isoformat()})
        return replace(self.job, meta_json=json.dumps(meta, separators=(",", ":")))


def _wall_to_utc(naive: dt.datetime, zone: dt.tzinfo) -> dt.datetime | None:
    """A wall-clock time in ``zone`` as UTC: None if it does not exist (DST gap); its first
    occurrence if it exists twice (``fold=0``)."""
    aware = naive.replace(tzinfo=zone, fold=0)
    t = aware.astimezone(UTC)
    if t.astimezone(zone).replace(tzinfo=None) != naive:
        return None
    return t


def make_schedule(name: object, job: NewJob, *, cron: object = None, every: object = None,
                  timezone: object = "UTC", catch_up: object = "latest",
                  catch_up_limit: object = 100, grace: object = 60.0) -> Schedule:
    """Validate a schedule's options; a :class:`ValidationError` naming the schedule otherwise.

    Exactly one of ``cron`` (5-field expression or alias) and ``every`` (timedelta of at least
    one second) is required; ``timezone`` is an IANA name; ``catch_up`` is ``"latest"``,
    ``"all"`` or ``"skip"``; ``catch_up_limit`` an integer 1-1000; ``grace`` seconds >= 0.
    """
    name = validate_name(name, "schedule")
    where = f"schedule {name!r}"
    if (cron is None) == (every is None):
        raise ValidationError(f"{where}: pass exactly one of cron= (e.g. '*/5 * * * *' or "
                              "'@hourly') and every= (e.g. timedelta(minutes=5))")
    if not isinstance(timezone, str) or not timezone:
        raise ValidationError(f"{where}: timezone must be an IANA name such as 'Europe/Berlin', "
                              f"not {timezone!r}")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"{where}: unknown time zone {timezone!r}; use an IANA name such "
                              "as 'UTC' or 'Europe/Berlin'") from exc
    if catch_up not in get_args(CatchUp):
        raise ValidationError(f"{where}: catch_up must be 'latest', 'all' or 'skip', "
                              f"not {catch_up!r}")
    if (isinstance(catch_up_limit, bool) or not isinstance(catch_up_limit, int)
            or not 1 <= catch_up_limit <= MAX_TICKS):
        raise ValidationError(f"{where}: catch_up_limit must be an integer from 1 to "
                              f"{MAX_TICKS}, not {catch_up_limit!r}")
    if isinstance(grace, dt.timedelta):
        grace = grace.total_seconds()
    if (isinstance(grace, bool) or not isinstance(grace, int | float) or not math.isfinite(grace)
            or grace < 0):
        raise ValidationError(f"{where}: grace must be a number of seconds >= 0, not {grace!r}")
    expr: str | None = None
    period: dt.timedelta | None = None
    if cron is not None:
        expr = _check_cron(cron, where)
        spec = str(cron).strip()
    else:
        if isinstance(every, int | float) and not isinstance(every, bool):
            every = dt.timedelta(seconds=every) if math.isfinite(every) else every
        if not isinstance(every, dt.timedelta) or every < dt.timedelta(seconds=1):
            raise ValidationError(f"{where}: every must be a timedelta of at least one second "
                                  f"(e.g. timedelta(minutes=5)), not {every!r}")
        period = every
        spec = f"every {_show_period(every)}"
    schedule = Schedule(name=name, spec=spec, cron=expr, every=period, timezone=timezone,
                        catch_up=catch_up,  # type: ignore[arg-type]  # checked above
                        catch_up_limit=catch_up_limit, grace=float(grace), job=job)
    if schedule.next_after(dt.datetime.now(UTC)) is None:  # pragma: no cover - cronsim raises
        raise ValidationError(f"{where}: the cron expression {spec!r} never fires")
    return schedule


def _check_cron(cron: object, where: str) -> str:
    if not isinstance(cron, str) or not cron.strip():
        raise ValidationError(f"{where}: cron must be a string such as '*/5 * * * *' or "
                              f"'@hourly', not {cron!r}")
    text = cron.strip()
    if text.startswith("@"):
        expr = ALIASES.get(text.lower())
        if expr is None:
            raise ValidationError(f"{where}: unknown cron alias {text!r}; use one of "
                                  f"{', '.join(ALIASES)}")
        return expr
    if len(text.split()) != 5:
        raise ValidationError(f"{where}: invalid cron expression {text!r}: use 5 fields "
                              "(minute hour day-of-month month day-of-week), e.g. '0 3 * * *'")
    try:
        CronSim(text, dt.datetime(2000, 1, 1))
    except (CronSimError, ValueError) as exc:
        raise ValidationError(f"{where}: invalid cron expression {text!r}: {exc}") from exc
    return text


def _show_period(every: dt.timedelta) -> str:
    seconds = every.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
