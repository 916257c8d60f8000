"""The dashboard in a real browser (Debian's chromium through Playwright), served by uvicorn
on 127.0.0.1 from the test database with real jobs: the overview equals SQL and refreshes
live, the actions change the database, user data never runs as script, forged POSTs are
refused, and read-only mode has no action. Each test saves a screenshot in its tmp_path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.dashboard_support import CHROMIUM, CHROMIUM_ARGS, TOKEN, Served, need_chromium, served
from tests.helpers import run_async, scalar

need_chromium()
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

# one browser and one xdist worker for the module (its servers share the worker's database)
pytestmark = pytest.mark.xdist_group("dashboard-browser")

TIMEOUT_MS = 30_000
XSS_ARGS = {"payload": "<script>alert('args')</script>", "img": "<img src=x onerror=alert(1)>"}
XSS_ERROR = "<img src=y onerror=alert(2)><script>alert('error')</script>"


def _make_app(dsn: str) -> pgqueue.App:
    app = pgqueue.App(database_url=dsn, strict=False)

    @app.task(name="ok_task", queue="dash-ok", max_attempts=1)
    def ok_task(n: int) -> int:
        return n

    @app.task(name="bad_task", queue="dash-bad", max_attempts=1)
    def bad_task(note: str, **_: Any) -> None:
        raise ValueError(note)

    return app


@pytest.fixture(scope="module")
def dash_app(dsn: str) -> Iterator[pgqueue.App]:
    app = _make_app(dsn)
    yield app
    app.close()


@pytest.fixture(scope="module")
def server(dash_app: pgqueue.App) -> Iterator[Served]:
    with served(dash_app, auth=TOKEN, refresh_s=0.5) as s:
        yield s


@pytest.fixture(scope="module")
def ro_server(dash_app: pgqueue.App) -> Iterator[Served]:
    with served(dash_app, auth=TOKEN, read_only=True, refresh_s=0.5) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context's page; a screenshot of where it ends goes to tmp_path."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    yield pg
    pg.screenshot(path=str(tmp_path / f"{request.node.name}-end.png"), full_page=True)
    context.close()


def _sign_in(page: Any, server: Served, path: str = "/") -> None:
    page.goto(f"{server.url}{path}{'&' if '?' in path else '?'}token={TOKEN}")
    expect(page.locator("main")).to_be_visible()
    assert "token=" not in page.url  # exchanged for a cookie, and gone from the address bar


def _shot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def _in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in another thread (Playwright's sync API owns this thread's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=180)


def _run_worker(app: pgqueue.App, queues: list[str]) -> None:
    _in_thread(lambda: run_async(app, app.worker(queues, burst=True, poll_interval=0.05).run()))


def _sql(dsn: str, query: str, *params: Any) -> Any:
    with psycopg.connect(dsn, autocommit=True) as c:
        return scalar(c, query, *params)


def test_overview_equals_sql_and_refreshes_live(page: Any, server: Served, dash_app: pgqueue.App,
                                                clean: str, tmp_path: Path) -> None:
    dash_app.enqueue_many("ok_task", [{"n": i} for i in range(7)])
    dash_app.enqueue("ok_task", {"n": 99}, queue="dash-later", delay=3600)
    dash_app.enqueue("bad_task", {"note": "boom"})
    _run_worker(dash_app, ["dash-bad"])
    _sign_in(page, server)
    with psycopg.connect(clean, autocommit=True) as c:
        rows = c.execute("SELECT queue, waiting, scheduled, running, failed, finished_last_hour "
                         "FROM pgqueue.queue_stats").fetchall()
    assert {r[0] for r in rows} == {"dash-ok", "dash-later", "dash-bad"}
    for queue, waiting, scheduled, running, failed, finished in rows:
        row = page.locator(f"tr[data-queue='{queue}']")
        for col, value in (("waiting", waiting), ("scheduled", scheduled),
                           ("running", running), ("failed", failed),
                           ("finished_last_hour", finished)):
            expect(row.locator(f"[data-col='{col}']")).to_have_text(f"{value:,}")
    expect(page.locator("[data-total='waiting']")).to_have_text("7")
    expect(page.locator("[data-total='failed']")).to_have_text("1")
    _shot(page, tmp_path, "overview-before")

    page.evaluate("window.__notReloaded = true")
    _run_worker(dash_app, ["dash-ok"])
    assert _sql(clean, "SELECT count(*) FROM pgqueue.jobs WHERE queue = 'dash-ok'") == 0
    row = page.locator("tr[data-queue='dash-ok']")
    expect(row.locator("[data-col='waiting']")).to_have_text("0", timeout=TIMEOUT_MS)
    expect(row.locator("[data-col='finished_last_hour']")).to_have_text("7")
    expect(page.locator("[data-hour='finished']")).to_have_text("7")
    assert page.evaluate("window.__notReloaded") is True  # refreshed in place, no reload
    _shot(page, tmp_path, "overview-after")


def test_retry_and_purge_from_the_failed_archive(page: Any, server: Served,
                                                 dash_app: pgqueue.App, clean: str,
                                                 tmp_path: Path) -> None:
    ids = [dash_app.enqueue("bad_task", {"note": f"failure {i}", "batch": "a" if i < 4 else "b"})
           for i in range(6)]
    _run_worker(dash_app, ["dash-bad"])
    assert _sql(clean, "SELECT count(*) FROM pgqueue.failed_jobs") == 6
    _sign_in(page, server, "/failed")
    expect(page.locator("tbody tr")).to_have_count(6)
    _shot(page, tmp_path, "failed")

    # retry one: its row's button, then the confirmation
    page.get_by_role("button", name=f"Retry job {ids[0]}").click()
    expect(page.get_by_role("heading", name="Retry 1 failed job(s)")).to_be_visible()
    _shot(page, tmp_path, "confirm-retry")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator(".flash")).to_contain_text("1 job(s) moved back to waiting")
    assert _sql(clean, "SELECT state FROM pgqueue.jobs WHERE id = %s", ids[0]) == "waiting"
    assert _sql(clean, "SELECT count(*) FROM pgqueue.failed_jobs WHERE id = %s", ids[0]) == 0

    # purge selected
    for i in ids[1:3]:
        page.get_by_label(f"Select job {i}").check()
    page.get_by_role("button", name="Purge selected…").click()
    expect(page.get_by_role("heading", name="Purge 2 failed job(s)")).to_be_visible()
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator(".flash")).to_contain_text("2 archived job(s) purged")
    assert _sql(clean, "SELECT count(*) FROM pgqueue.failed_jobs WHERE id = ANY(%s)",
                ids[1:3]) == 0

    # retry all matching a filter (args containment)
    page.get_by_label("Args contain (JSON)").fill('{"batch": "b"}')
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(2)
    page.get_by_role("button", name="Retry all matching…").click()
    expect(page.locator("form.confirm")).to_contain_text("Retry 2 archived job(s)")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator(".flash")).to_contain_text("2 job(s) moved back to waiting")
    assert _sql(clean, "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s)", ids[4:]) == 2

    # purge older than: everything archived before a minute from now
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    page.goto(f"{server.url}/failed")
    page.get_by_label("Purge failed before").fill(later)
    page.get_by_role("button", name="Purge older…").click()
    expect(page.locator("form.confirm")).to_contain_text("Delete 1 archived job(s)")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator(".flash")).to_contain_text("1 archived job(s) purged")
    assert _sql(clean, "SELECT count(*) FROM pgqueue.failed_jobs") == 0


def test_pause_resume_and_cancel(page: Any, server: Served, dash_app: pgqueue.App, clean: str,
                                 tmp_path: Path) -> None:
    job_id = dash_app.enqueue("ok_task", {"n": 1})
    _sign_in(page, server)
    page.get_by_role("button", name="Pause queue dash-ok").click()
    expect(page.locator(".flash")).to_contain_text("Queue paused")
    assert _sql(clean, "SELECT paused FROM pgqueue.queues WHERE name = 'dash-ok'") is True
    expect(page.locator("tr[data-queue='dash-ok'] [data-col='paused']")).to_contain_text("paused")
    _shot(page, tmp_path, "paused")
    page.get_by_role("button", name="Resume queue dash-ok").click()
    expect(page.locator(".flash")).to_contain_text("Queue resumed")
    assert _sql(clean, "SELECT paused FROM pgqueue.queues WHERE name = 'dash-ok'") is False

    page.goto(f"{server.url}/jobs/{job_id}")
    page.get_by_role("button", name="Cancel job…").click()
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator(".flash")).to_contain_text("Cancelled")
    assert _sql(clean, "SELECT count(*) FROM pgqueue.jobs WHERE id = %s", job_id) == 0
    assert _sql(clean, "SELECT state FROM pgqueue.job_history WHERE id = %s",
                job_id) == "cancelled"
    expect(page.locator("h1 .badge")).to_have_text("cancelled")


def test_user_data_renders_as_text_and_never_runs(page: Any, server: Served,
                                                  dash_app: pgqueue.App, clean: str,
                                                  tmp_path: Path) -> None:
    events: list[str] = []

    def on_dialog(dialog: Any) -> None:
        events.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda m: events.append(f"console {m.type}: {m.text}"))
    page.on("pageerror", lambda e: events.append(f"pageerror: {e}"))
    live_id = dash_app.enqueue("bad_task", {"note": "later", **XSS_ARGS}, queue="dash-later",
                               delay=3600)
    failed_id = dash_app.enqueue("bad_task", {"note": XSS_ERROR, **XSS_ARGS})
    _run_worker(dash_app, ["dash-bad"])
    _sign_in(page, server, "/jobs")
    expect(page.locator(f"tr[data-job='{live_id}'] td.args")).to_contain_text("<script>")
    page.goto(f"{server.url}/jobs/{live_id}")
    expect(page.locator("pre.code").first).to_contain_text(XSS_ARGS["img"])
    page.goto(f"{server.url}/failed")
    expect(page.locator(f"tr[data-job='{failed_id}']")).to_contain_text("onerror=alert(2)")
    page.goto(f"{server.url}/jobs/{failed_id}")
    expect(page.locator("pre.traceback")).to_contain_text("ValueError: " + XSS_ERROR)
    expect(page.locator("pre.traceback")).to_contain_text("Traceback (most recent call last)")
    expect(page.locator("p.error-text").first).to_contain_text(XSS_ERROR)
    _shot(page, tmp_path, "xss-job")
    assert page.locator("main img, main script").count() == 0
    page.goto(f"{server.url}/")  # the overview, and one live refresh of it
    page.wait_for_function("document.querySelector('[data-live-status]').textContent === 'live'")
    assert events == []


def test_forged_posts_are_refused_and_change_nothing(page: Any, browser: Any, server: Served,
                                                    dash_app: pgqueue.App, clean: str,
                                                    tmp_path: Path) -> None:
    job_id = dash_app.enqueue("ok_task", {"n": 1})
    _sign_in(page, server)
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    # signed in, without the CSRF token
    r = page.request.post(f"{server.url}/queues/pause", form={"queue": "dash-ok"})
    assert r.status == 403
    r = page.request.post(f"{server.url}/jobs/{job_id}/cancel",
                          form={"confirmed": "yes", "csrf": "forged"})
    assert r.status == 403
    # the CSRF token, but from another origin
    r = page.request.post(f"{server.url}/queues/pause", form={"queue": "dash-ok", "csrf": csrf},
                          headers={"Origin": "http://evil.example"})
    assert r.status == 403
    # not signed in (a fresh context: no cookie), with a CSRF token copied from elsewhere
    stranger = browser.new_context()
    r = stranger.request.post(f"{server.url}/queues/pause",
                              form={"queue": "dash-ok", "csrf": csrf})
    assert r.status == 401
    r = stranger.request.post(f"{server.url}/jobs/{job_id}/cancel",
                              form={"confirmed": "yes", "csrf": csrf})
    assert r.status == 401
    stranger_page = stranger.new_page()
    stranger_page.goto(f"{server.url}/")
    expect(stranger_page.get_by_role("heading", name="Sign in")).to_be_visible()
    _shot(stranger_page, tmp_path, "sign-in")
    stranger.close()
    assert _sql(clean, "SELECT count(*) FROM pgqueue.queues WHERE paused") == 0
    assert _sql(clean, "SELECT state FROM pgqueue.jobs WHERE id = %s", job_id) == "waiting"
    # and the real form still works
    page.get_by_role("button", name="Pause queue dash-ok").click()
    expect(page.locator(".flash")).to_contain_text("Queue paused")


def test_read_only_has_no_actions_and_refuses_them(page: Any, ro_server: Served,
                                                   dash_app: pgqueue.App, clean: str,
                                                   tmp_path: Path) -> None:
    job_id = dash_app.enqueue("ok_task", {"n": 1})
    failed_id = dash_app.enqueue("bad_task", {"note": "x"})
    _run_worker(dash_app, ["dash-bad"])
    _sign_in(page, ro_server)
    expect(page.locator(".badge", has_text="read-only")).to_be_visible()
    for path in ("/", "/failed", f"/jobs/{job_id}", f"/jobs/{failed_id}", "/schedules",
                 "/jobs", "/history", "/workers", "/limits"):
        page.goto(f"{ro_server.url}{path}")
        expect(page.locator("main")).to_be_visible()
        assert page.locator("form[method=post], button:not([type=submit]):visible").count() == 0
        assert page.locator("main button").count() == page.locator(
            "form.filters button").count()
    _shot(page, tmp_path, "read-only-failed")
    for action, form in (("/queues/pause", {"queue": "dash-ok"}),
                         (f"/jobs/{job_id}/cancel", {"confirmed": "yes"}),
                         ("/failed/retry", {"id": str(failed_id), "confirmed": "yes"}),
                         ("/failed/purge", {"id": str(failed_id), "confirmed": "yes"}),
                         ("/failed/purge-older", {"before": "0s", "confirmed": "yes"}),
                         ("/schedules/run-now", {"name": "x"})):
        assert page.request.post(f"{ro_server.url}{action}", form=form).status == 403
    assert _sql(clean, "SELECT state FROM pgqueue.jobs WHERE id = %s", job_id) == "waiting"
    assert _sql(clean, "SELECT count(*) FROM pgqueue.failed_jobs WHERE id = %s", failed_id) == 1
    assert _sql(clean, "SELECT count(*) FROM pgqueue.queues WHERE paused") == 0
