"""The dashboard over plain HTTP (Starlette's TestClient, no browser): bad input gives a clear
page and never a 500, authentication and CSRF refuse what they must and change nothing,
mounting at a prefix with an ``auth`` callable, security headers, no password on any page, and
the ``pgqueue dashboard`` command."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient

import pgqueue
import pgqueue.dashboard
from tests.dashboard_support import TOKEN
from tests.helpers import run_cli_main, scalar, wait_for

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _client(app: pgqueue.App, **options: Any) -> TestClient:
    options.setdefault("auth", None)
    return TestClient(pgqueue.dashboard.asgi_app(app, **options), base_url="http://testserver",
                      follow_redirects=False)


@pytest.fixture
def seeded(app: pgqueue.App) -> pgqueue.App:
    app.enqueue("mail.send", {"to": "a@example.com"}, queue="emails")
    return app


@pytest.fixture
def client(seeded: pgqueue.App) -> Iterator[TestClient]:
    with _client(seeded) as c:
        yield c


def _csrf(c: TestClient, path: str = "/") -> str:
    found = CSRF.search(c.get(path).text)
    assert found, "no form with a CSRF token on " + path
    return found[1]


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/jobs/abc", 400, "job id must be a positive whole number"),
    ("/jobs/-3", 400, "job id must be a positive whole number"),
    ("/jobs/99999999999999999999999", 400, "job id must be a positive whole number"),
    ("/jobs/424242", 404, "no job with id 424242"),
    ("/jobs?args={oops", 400, "the args filter is not valid JSON"),
    ("/jobs?args=42", 400, "must be a JSON object or array"),
    ("/failed?args=[[[[", 400, "the args filter is not valid JSON"),
    ("/jobs?queue=nosuchqueue", 404, "no queue named &#39;nosuchqueue&#39;"),
    ("/history?queue=bad%20name!", 400, "invalid queue name"),
    ("/jobs?state=exploded", 400, "unknown state"),
    ("/history?since=yesterday", 400, "is not a date/time"),
    ("/failed?since=2026-02-01&until=2026-01-01", 400, "the time range is empty"),
    ("/jobs?after=abc", 400, "the page cursor must be a positive whole number"),
    ("/history?after=2026-01-01", 400, "the page cursor must be a positive whole number"),
    ("/failed?after=notatime~5", 400, "is not a date/time"),
    ("/jobs?queue=" + "q" * 10_000, 400, "the queue filter is too long"),
    ("/jobs?args=" + "x" * 10_000, 400, "the args filter is too long"),
    ("/failed?task=" + "<script>" * 1300, 400, "the task filter is too long"),
])
def test_bad_input_gives_a_clear_page(client: TestClient, path: str, status: int,
                                      message: str) -> None:
    r = client.get(path)
    assert r.status_code == status, r.text[:500]
    assert message in r.text
    assert "Traceback" not in r.text and "<script>" not in r.text
    assert r.headers["content-type"].startswith("text/html")


def test_bad_action_input_gives_a_clear_page(client: TestClient) -> None:
    csrf = _csrf(client)
    for path, form, message in (
            ("/failed/retry", {}, "select at least one job first"),
            ("/failed/retry", {"id": "x1"}, "job id must be a positive whole number"),
            ("/failed/purge-older", {"before": "soon"}, "is not a date/time"),
            ("/failed/purge-older", {}, "say how old"),
            ("/queues/pause", {"queue": "bad name"}, "invalid queue name"),
            ("/queues/explode", {"queue": "emails"}, "no queue action"),
            ("/schedules/pause", {"name": "nope"}, "no periodic schedule named"),
            ("/jobs/abc/cancel", {}, "job id must be a positive whole number")):
        r = client.post(path, data={"csrf": csrf, **form})
        assert r.status_code in (400, 404), (path, r.status_code, r.text[:300])
        assert message in r.text, (path, r.text[:500])


def test_pages_render_with_security_headers(client: TestClient) -> None:
    for path in ("/", "/live/overview", "/jobs", "/jobs?queue=emails&state=waiting",
                 "/failed", "/history", "/workers", "/schedules", "/limits", "/jobs/1"):
        r = client.get(path)
        assert r.status_code in (200, 404), (path, r.text[:300])
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
    assert "a@example.com" in client.get("/jobs?queue=emails").text


def test_token_auth(seeded: pgqueue.App, clean: str) -> None:
    with _client(seeded, auth=TOKEN) as c:
        r = c.get("/")
        assert r.status_code == 401 and "Sign in" in r.text
        assert "schema" not in r.text and 'href="/failed"' not in r.text  # nothing before it
        assert c.get("/?token=wrong-token-wrong-token").status_code == 401
        assert c.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        # a POST without the access token is refused and changes nothing
        r = c.post("/queues/pause", data={"queue": "emails", "csrf": "x"})
        assert r.status_code == 401
        r = c.get(f"/jobs?token={TOKEN}&queue=emails")
        assert r.status_code == 303 and r.headers["location"] == "/jobs?queue=emails"
        assert "httponly" in r.headers["set-cookie"].lower()
        assert TOKEN not in r.headers["set-cookie"]  # the cookie proves it, it is not it
        assert c.get("/jobs?queue=emails").status_code == 200
        # signed in, but without the CSRF token
        assert c.post("/queues/pause", data={"queue": "emails"}).status_code == 403
        assert c.post("/queues/pause", data={"queue": "emails", "csrf": "forged"}
                      ).status_code == 403
        csrf = _csrf(c)
        assert c.post("/queues/pause", data={"queue": "emails", "csrf": csrf},
                      headers={"Origin": "http://evil.example"}).status_code == 403
        with psycopg.connect(clean, autocommit=True) as conn:
            assert scalar(conn, "SELECT count(*) FROM pgqueue.queues WHERE paused") == 0
        r = c.post("/queues/pause", data={"queue": "emails", "csrf": csrf})
        assert r.status_code == 303
        with psycopg.connect(clean, autocommit=True) as conn:
            assert scalar(conn, "SELECT paused FROM pgqueue.queues WHERE name = 'emails'")
    # the sign-in form
    with _client(seeded, auth=TOKEN) as c:
        r = c.post("/login", data={"token": TOKEN, "next": "/failed"})
        assert r.status_code == 303 and r.headers["location"] == "/failed"
        assert c.get("/failed").status_code == 200
        r = c.post("/login", data={"token": TOKEN, "next": "//evil.example/"})
        assert r.headers["location"] == "/"


def test_short_tokens_are_refused(seeded: pgqueue.App) -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        pgqueue.dashboard.asgi_app(seeded, auth="short")


def test_mounted_under_a_prefix_with_an_auth_callable(seeded: pgqueue.App, clean: str) -> None:
    async def staff_only(request: Request) -> bool:
        return request.headers.get("x-role") == "staff"

    web = Starlette(routes=[Mount("/jobs", pgqueue.dashboard.asgi_app(seeded, auth=staff_only))])
    staff = {"x-role": "staff"}
    with TestClient(web, follow_redirects=False) as c:
        assert c.get("/jobs/").status_code == 401
        r = c.get("/jobs/", headers=staff)
        assert r.status_code == 200
        assert 'href="/jobs/static/dashboard.css"' in r.text
        assert 'href="/jobs/failed"' in r.text
        assert c.get("/jobs/static/dashboard.js").status_code == 200
        r = c.get("/jobs/jobs?queue=emails", headers=staff)
        assert "a@example.com" in r.text
        r = c.get("/jobs/", headers=staff)
        assert 'action="/jobs/queues/pause"' in r.text
        csrf = CSRF.search(r.text)
        assert csrf
        assert c.post("/jobs/queues/pause", data={"queue": "emails", "csrf": csrf[1]}
                      ).status_code == 401
        r = c.post("/jobs/queues/pause", data={"queue": "emails", "csrf": csrf[1]},
                   headers=staff)
        assert r.status_code == 303 and r.headers["location"].startswith("/jobs/?done=paused")
    with psycopg.connect(clean, autocommit=True) as conn:
        assert scalar(conn, "SELECT paused FROM pgqueue.queues WHERE name = 'emails'")


def test_read_only_refuses_actions(seeded: pgqueue.App, clean: str) -> None:
    with _client(seeded, read_only=True) as c:
        assert "<form method=\"post\"" not in c.get("/").text
        assert c.post("/queues/pause", data={"queue": "emails"}).status_code == 403
    with psycopg.connect(clean, autocommit=True) as conn:
        assert scalar(conn, "SELECT count(*) FROM pgqueue.queues WHERE paused") == 0


def test_no_password_on_any_page(clean: str) -> None:
    # trust authentication ignores the password; the pages must not show it anyway
    with_password = clean.replace("user=postgres", "user=postgres password=s3cr3t-pw")
    app = pgqueue.App(database_url=with_password)
    try:
        with _client(app) as c:
            for path in ("/", "/jobs", "/failed", "/workers", "/nope"):
                assert "s3cr3t-pw" not in c.get(path).text
        down = pgqueue.App(database_url="postgresql://u:s3cr3t-pw@127.0.0.1:1/db")
        with _client(down) as c:
            r = c.get("/")
            assert r.status_code == 503
            assert "s3cr3t-pw" not in r.text and "Traceback" not in r.text
    finally:
        app.close()


def test_needs_the_postgres_driver() -> None:
    with pytest.raises(pgqueue.CapabilityError, match="needs the postgres driver"):
        pgqueue.dashboard.asgi_app(pgqueue.App(driver="memory"), auth=None)


def test_the_command_refuses_bad_flags(clean: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli_main(capsys, "dashboard", "--database-url", clean, "--port", "0")
    assert status == 2 and "--port must be a TCP port" in err
    os.environ[pgqueue.dashboard.TOKEN_ENV] = "short"
    try:
        status, _, err = run_cli_main(capsys, "dashboard", "--database-url", clean)
    finally:
        del os.environ[pgqueue.dashboard.TOKEN_ENV]
    assert status == 2 and "at least 16 characters" in err
    status, _, err = run_cli_main(capsys, "dashboard", "--database-url", clean,
                                  "--count-cap", "0")
    assert status == 2 and "--count-cap must be at least 1" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.processes
def test_the_command_serves_with_a_printed_token(clean: str) -> None:
    port = _free_port()
    filler = pgqueue.App(database_url=clean)
    filler.enqueue_many("mail.send", [{"n": i} for i in range(5)], queue="emails")
    filler.close()
    env = {k: v for k, v in os.environ.items() if k != pgqueue.dashboard.TOKEN_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgqueue.cli", "dashboard", "--database-url", clean,
         "--port", str(port), "--read-only", "--count-cap", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+/)\?token=(\S+)", line)
        assert found, line
        url, token = found[1], found[2]

        def up() -> httpx.Response | None:
            try:
                return httpx.get(url, headers={"Authorization": f"Bearer {token}"})
            except httpx.TransportError:
                return None

        r = wait_for(up, 60, "the dashboard to answer")
        assert r is not None and r.status_code == 200 and "read-only" in r.text
        assert ">3+<" in r.text  # 5 waiting jobs, counted up to --count-cap 3
        assert httpx.get(url).status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_keyset_pages_follow_each_other(app: pgqueue.App) -> None:
    ids = app.enqueue_many("mail.send", [{"n": i} for i in range(60)], queue="emails")
    with _client(app) as c:
        first = c.get("/jobs?queue=emails")
        assert first.status_code == 200
        shown = [int(i) for i in re.findall(r'data-job="(\d+)"', first.text)]
        assert shown == sorted(ids, reverse=True)[:50]
        found = re.search(r'rel="next" href="([^"]+)"', first.text)
        assert found and "queue=emails" in found[1]
        second = c.get(found[1].replace("&amp;", "&"))
        shown2 = [int(i) for i in re.findall(r'data-job="(\d+)"', second.text)]
        assert shown2 == sorted(ids, reverse=True)[50:]
        assert 'rel="next"' not in second.text and "First page" in second.text


def test_schedule_actions_and_limits(seeded: pgqueue.App, clean: str) -> None:
    seeded.set_queue_limits("emails", concurrency=3, rate_limit=50, rate_period=1.0)
    with psycopg.connect(clean, autocommit=True) as conn:
        conn.execute("INSERT INTO pgqueue.schedules (name, spec, task, queue, next_tick) "
                     "VALUES ('nightly', '0 3 * * *', 'mail.send', 'emails', now())")
    with _client(seeded) as c:
        limits = c.get("/limits").text
        assert 'data-queue="emails"' in limits and "3" in limits
        page = c.get("/schedules").text
        assert 'data-schedule="nightly"' in page and "0 3 * * *" in page
        csrf = _csrf(c, "/schedules")
        assert c.post("/schedules/pause", data={"name": "nightly", "csrf": csrf}
                      ).status_code == 303
        with psycopg.connect(clean, autocommit=True) as conn:
            assert scalar(conn, "SELECT paused FROM pgqueue.schedules WHERE name = 'nightly'")
        assert c.post("/schedules/resume", data={"name": "nightly", "csrf": csrf}
                      ).status_code == 303
        r = c.post("/schedules/run-now", data={"name": "nightly", "csrf": csrf})
        assert r.status_code == 303 and "done=schedule-ran" in r.headers["location"]
        with psycopg.connect(clean, autocommit=True) as conn:
            assert scalar(conn, "SELECT paused FROM pgqueue.schedules WHERE name = 'nightly'"
                          ) is False
            assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs "
                                "WHERE meta ->> 'periodic' = 'nightly'") == 1


def test_workers_show_their_jobs_and_stale_ones(seeded: pgqueue.App, clean: str) -> None:
    with psycopg.connect(clean, autocommit=True) as conn:
        conn.execute("INSERT INTO pgqueue.workers (id, host, pid, queues, concurrency, "
                     "heartbeat_at) VALUES ('w-live', 'h1', 1, '{emails}', 4, now()), "
                     "('w-gone', 'h2', 2, '{emails}', 4, now() - interval '10 minutes')")
        job_id = scalar(conn, "UPDATE pgqueue.jobs SET state = 'running', worker_id = 'w-live',"
                              " started_at = now() RETURNING id")
    with _client(seeded) as c:
        page = c.get("/workers").text
    live = page[page.index('data-worker="w-live"'):page.index('data-worker="w-gone"')]
    assert f'href="/jobs/{job_id}"' in live and "1/4" in live and "stale" not in live
    gone = page[page.index('data-worker="w-gone"'):]
    assert 'class="stale"' in page and "stale</span>" in gone
