"""The dashboard's overview reads bounded figures (``DashboardStatements.overview``): below the
count cap every number equals the ``queue_stats`` view's, the oldest wait comes out right
across priorities, concurrency keys and future jobs, and a count over the cap shows as
``N+`` (a small ``count_cap`` here, so a few rows are enough); the workers page bounds its
running counts the same way."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

import pgqueue
import pgqueue.dashboard
from pgqueue.dashboard._data import KEY_GROUPS
from pgqueue.dashboard._format import duration
from pgqueue.errors import ValidationError

COLUMNS = ("waiting", "scheduled", "running", "failed", "finished_last_hour")
ROW = re.compile(r'<tr data-queue="([^"]+)">(.*?)</tr>', re.S)
CELL = re.compile(r'data-col="(\w+)">(.*?)</td>', re.S)
TAG = re.compile(r"<[^>]+>")


def _overview(app: pgqueue.App, path: str = "/", **options: Any) -> str:
    with TestClient(pgqueue.dashboard.asgi_app(app, auth=None, **options)) as c:
        r = c.get(path)
    assert r.status_code == 200, r.text[:500]
    return str(r.text)


def _cells(page: str) -> dict[str, dict[str, str]]:
    """Each queue's cells as the page shows them (text, tags removed)."""
    return {queue: {col: html.unescape(TAG.sub("", text)).split()[0] if col == "paused"
                    else html.unescape(TAG.sub("", text)).strip()
                    for col, text in CELL.findall(row)}
            for queue, row in ROW.findall(page)}


def _total(page: str, name: str) -> str:
    found = re.search(rf'data-total="{name}"[^>]*>([^<]*)<', page)
    assert found, name
    return found[1]


def _ago(**delta: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(**delta)


def _finish(conn: psycopg.Connection[Any], queue: str, n: int, minutes_ago: float,
            run_s: float = 2.0) -> None:
    """``n`` finished jobs of ``queue`` in the history, ``minutes_ago`` (ran ``run_s``)."""
    conn.execute(
        "INSERT INTO pgqueue.job_history (id, queue, task, args, priority, state, attempt, "
        "max_attempts, enqueued_at, started_at, finished_at) "
        "SELECT (SELECT coalesce(max(id), 0) FROM pgqueue.job_history) + i, %s, 't', '{}', 20, "
        "'succeeded', 1, 1, "
        "f - make_interval(secs => %s + 1), f - make_interval(secs => %s), f "
        "FROM generate_series(1, %s) i, "
        "LATERAL (SELECT now() - make_interval(mins => %s) AS f) t",
        (queue, run_s, run_s, n, minutes_ago))


def _fail(conn: psycopg.Connection[Any], queue: str, n: int, minutes_ago: float) -> None:
    conn.execute(
        "INSERT INTO pgqueue.failed_jobs (id, queue, task, args, priority, attempt, "
        "max_attempts, reason, enqueued_at, failed_at) "
        "SELECT (SELECT coalesce(max(id), 0) FROM pgqueue.failed_jobs) + i, %s, 't', '{}', 20, "
        "1, 1, 'boom', "
        "now() - interval '1 day', now() - make_interval(mins => %s) "
        "FROM generate_series(1, %s) i", (queue, minutes_ago, n))


def _run(conn: psycopg.Connection[Any], ids: list[int]) -> None:
    conn.execute("UPDATE pgqueue.jobs SET state = 'running', worker_id = 'w1', attempt = 1, "
                 "started_at = now(), lease_expires_at = now() + interval '5 minutes' "
                 "WHERE id = ANY(%s)", (ids,))


def test_below_the_cap_every_figure_equals_queue_stats(app: pgqueue.App,
                                                       conn: psycopg.Connection[Any]) -> None:
    e = app.enqueue
    # "mix": unkeyed jobs at three priorities (the first only in the future), keyed jobs of
    # two keys; the oldest ready job is a keyed one, 2 h 05 min 30 s old
    e("t", queue="mix", priority=0, run_at=_ago(hours=-2))
    e("t", queue="mix", priority=10, run_at=_ago(hours=1))
    e("t", queue="mix", priority=10, run_at=_ago(minutes=5))
    e("t", queue="mix", priority=50, run_at=_ago(minutes=90))
    e("t", queue="mix", priority=20, concurrency_key="k1", run_at=_ago(hours=2, minutes=5,
                                                                       seconds=30))
    e("t", queue="mix", priority=20, concurrency_key="k2", run_at=_ago(hours=-1))
    e("t", queue="mix", priority=5, concurrency_key="k2", run_at=_ago(minutes=1))
    running = [e("t", queue="mix", priority=10), e("t", queue="mix", concurrency_key="k3")]
    _run(conn, running)
    # "plain": unkeyed only; the highest priority holds only a future job, the oldest ready
    # job is at a low priority, 3 h 10 min 30 s old
    e("t", queue="plain", priority=0, run_at=_ago(hours=-5))
    e("t", queue="plain", priority=100, run_at=_ago(hours=3, minutes=10, seconds=30))
    e("t", queue="plain", priority=20)
    # "later": scheduled only, keyed and not
    e("t", queue="later", delay=3600)
    e("t", queue="later", delay=60, concurrency_key="k1")
    # finished and failed, in and out of the last hour; a queue known only from its history
    _finish(conn, "mix", 4, minutes_ago=10, run_s=2.0)
    _finish(conn, "mix", 3, minutes_ago=20, run_s=4.0)
    _finish(conn, "mix", 5, minutes_ago=120)
    _finish(conn, "done", 2, minutes_ago=5)
    _finish(conn, "long-ago", 2, minutes_ago=180)
    _fail(conn, "mix", 2, minutes_ago=10)
    _fail(conn, "mix", 3, minutes_ago=300)
    _fail(conn, "gone", 1, minutes_ago=600)
    app.pause("quiet")

    page = _overview(app)
    cells = _cells(page)
    stats = {r[0]: r for r in conn.execute(
        "SELECT queue, waiting, scheduled, running, failed, finished_last_hour, paused, "
        "oldest_wait_s, mean_run_time_s, failed_last_hour FROM pgqueue.queue_stats")}
    assert set(cells) == set(stats) == {"mix", "plain", "later", "done", "gone", "quiet"}
    for queue, row in stats.items():
        shown = cells[queue]
        assert [shown[c] for c in COLUMNS] == [f"{v:,}" for v in row[1:6]], queue
        assert shown["paused"] == ("paused" if row[6] else "active"), queue
        assert shown["oldest_wait"] == duration(row[7]), queue
        assert shown["mean_run"] == duration(row[8]), queue
    assert cells["mix"]["oldest_wait"] == "2 h 05 min"
    assert cells["plain"]["oldest_wait"] == "3 h 10 min"
    assert cells["later"]["oldest_wait"] == "—"
    assert [cells["mix"][c] for c in COLUMNS] == ["5", "2", "2", "5", "7"]
    assert cells["mix"]["mean_run"] == "2.9 s"  # (4 x 2 s + 3 x 4 s) / 7
    for name, column in (("waiting", 1), ("scheduled", 2), ("running", 3), ("failed", 4),
                         ("finished_last_hour", 5), ("failed_last_hour", 9)):
        assert _total(page, name) == f"{sum(r[column] for r in stats.values()):,}", name
    assert "Some counts here are capped" not in page


def test_a_count_over_the_cap_shows_a_plus(app: pgqueue.App,
                                          conn: psycopg.Connection[Any]) -> None:
    app.enqueue_many("t", [{}] * 5, queue="big")
    app.enqueue_many("t", [{}] * 4, queue="big", delay=600)
    keyed = [app.enqueue("t", queue="keyed", concurrency_key=f"k{i}") for i in range(5)]
    _run(conn, keyed[:4])  # four running: over the cap of 3, in all queues together
    app.enqueue_many("t", [{}] * 2, queue="small")
    _finish(conn, "big", 5, minutes_ago=10)
    _fail(conn, "big", 4, minutes_ago=10)

    page = _overview(app, count_cap=3)
    cells = _cells(page)
    assert [cells["big"][c] for c in COLUMNS] == ["3+", "3+", "0+", "3+", "3+"]
    assert cells["keyed"]["waiting"] == "1"  # the only keyed job left waiting
    assert cells["keyed"]["running"] == "3+"
    assert [cells["small"][c] for c in COLUMNS] == ["2", "0", "0+", "0", "0"]
    assert _total(page, "waiting") == "6+"  # 3+ and 1 and 2
    assert _total(page, "running") == "3+"
    assert _total(page, "failed_last_hour") == "3+"
    assert "Some counts here are capped" in page
    assert 'title="at least 3: the overview stops counting at 3 rows' in page
    assert "Each count stops at 3" in page
    # the chart counts a minute up to a quarter of the cap (here 1)
    assert re.search(r'data-hour="finished">1\+<', page)

    # the same data under the default cap: exact again
    cells = _cells(_overview(app))
    assert [cells["big"][c] for c in COLUMNS] == ["5", "4", "0", "4", "5"]
    assert cells["keyed"]["running"] == "4"


def test_the_oldest_keyed_wait_past_the_probed_groups_is_a_lower_bound(
        app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    # one key more than the overview probes; the last key (in index order) waits longest
    conn.execute(
        "INSERT INTO pgqueue.jobs (queue, task, concurrency_key, run_at) "
        "SELECT 'tenants', 't', 'key-' || lpad(i::text, 5, '0'), "
        "now() - CASE WHEN i = %s THEN interval '5 hours' ELSE interval '1 hour' END "
        "FROM generate_series(0, %s) i", (KEY_GROUPS, KEY_GROUPS))
    cells = _cells(_overview(app))
    assert cells["tenants"]["waiting"] == f"{KEY_GROUPS + 1:,}"  # under the count cap: exact
    assert cells["tenants"]["oldest_wait"] == "1 h 00 min+"
    conn.execute("DELETE FROM pgqueue.jobs WHERE concurrency_key = 'key-00000'")
    assert _cells(_overview(app))["tenants"]["oldest_wait"] == "5 h 00 min"


def test_the_workers_running_counts_are_bounded_too(app: pgqueue.App,
                                                   conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO pgqueue.workers (id, host, pid, queues, concurrency) "
                 "VALUES ('w1', 'h', 1, '{q}', 4), ('w2', 'h', 2, '{q}', 4)")
    _run(conn, [app.enqueue("t", queue="q") for _ in range(3)])  # all on w1
    for cap, w1, w2 in ((2, "2+/4", "0+/4"), (3, "3/4", "0/4")):
        page = _overview(app, "/workers", count_cap=cap)
        rows = dict(re.findall(r'data-worker="(w\d)".*?<td class="num">\d+</td>\s*<td>[^<]*</td>'
                               r'\s*<td class="num">([^<]+)</td>', page, re.S))
        assert rows == {"w1": w1, "w2": w2}, cap


@pytest.mark.parametrize("cap", [0, -1, 2.5, True, "10"])
def test_a_bad_count_cap_is_refused(app: pgqueue.App, cap: Any) -> None:
    with pytest.raises(ValidationError, match="count_cap must be a whole number"):
        pgqueue.dashboard.asgi_app(app, auth=None, count_cap=cap)
