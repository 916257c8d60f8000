"""Prometheus metrics and health probes over real HTTP, against real PostgreSQL: a worker
process with ``--metrics-port``, the ``pgqueue metrics`` exporter, ``/readyz`` across a
database outage, and the bad inputs of the flags."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgqueue
from pgqueue import migrations
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET; an HTTP error status is a result, a refused connection 0."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())
    except OSError:
        return 0, b""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return {}
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def cli(dsn: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "pgqueue.cli", *args], cwd=ROOT,
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture
def obs_app(clean: str) -> Iterator[pgqueue.App]:
    app = pgqueue.App(database_url=clean)
    yield app
    app.close()


#: 100 jobs: (task, count, {outcome: attempts}) -- flaky fails once, bad twice (2 attempts)
MIX = [("ok", 60, {"succeeded": 60}),
       ("flaky", 20, {"retried": 20, "succeeded": 20}),
       ("bad", 10, {"retried": 10, "failed": 10}),
       ("skip", 10, {"cancelled": 10})]


def test_worker_metrics_count_every_outcome_exactly_and_queue_gauges_match_sql(
        obs_app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    for task, n, _ in MIX:  # (a producer's App: it passes the worker app's max_attempts)
        obs_app.enqueue_many(task, [{} for _ in range(n)], queue="obs",
                             max_attempts=2 if task == "bad" else 5)
    obs_app.enqueue_many("other_task", [{} for _ in range(5)], queue="elsewhere")
    obs_app.enqueue_many("other_task", [{} for _ in range(3)], queue="elsewhere", delay=3600)
    port = free_port()
    proc = cli(clean, "worker", "tests.apps.obs:app", "--queues", "obs", "--concurrency", "10",
               "--metrics-port", str(port), "--queue-metrics", "--poll-interval", "0.2")
    try:
        def done() -> bool:
            finished = conn.execute("SELECT (SELECT count(*) FROM pgqueue.job_history) + "
                                    "(SELECT count(*) FROM pgqueue.failed_jobs)").fetchone()
            return finished is not None and finished[0] == 100
        wait_for(done, 60, "the 100 jobs done")

        expected = {(task, outcome): n for task, _, outcomes in MIX
                    for outcome, n in outcomes.items()}

        def counters_match() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            m = scrape(port)
            ok = all(sample(m, "pgqueue_jobs_total", queue="obs", task=t, outcome=o) == n
                     for (t, o), n in expected.items())
            return m if ok else None
        m = wait_for(counters_match, 30, "counters equal to the outcomes")
        assert m is not None
        counted = {k: v for k, v in m.items() if k[0] == "pgqueue_jobs_total"}
        assert len(counted) == len(expected)  # no other outcome, queue or task

        for task, n, outcomes in MIX:
            attempts = sum(v for o, v in outcomes.items())
            assert sample(m, "pgqueue_job_run_seconds_count", queue="obs", task=task) == attempts
            assert sample(m, "pgqueue_job_pickup_latency_seconds_count", queue="obs",
                          task=task) == attempts
            assert sample(m, "pgqueue_job_end_to_end_seconds_count", queue="obs",
                          task=task) == n
        assert sample(m, "pgqueue_worker_busy_slots") == 0
        assert sample(m, "pgqueue_worker_free_slots") == 10
        assert sample(m, "pgqueue_worker_listener_connected") == 1
        last_claim = sample(m, "pgqueue_worker_last_claim_timestamp_seconds")
        assert last_claim is not None and last_claim > 0

        rows = conn.execute("SELECT queue, waiting, scheduled, running, failed "
                            "FROM pgqueue.queue_stats").fetchall()
        assert {r[0] for r in rows} == {"obs", "elsewhere"}

        def gauges_match() -> bool:
            g = scrape(port)
            return all(sample(g, "pgqueue_queue_jobs", queue=q, state=state) == value
                       for q, *values in rows
                       for state, value in zip(("waiting", "scheduled", "running", "failed"),
                                               values, strict=True))
        wait_for(gauges_match, 30, "queue gauges equal to queue_stats")
        assert dict((r[0], r[1:]) for r in rows)["elsewhere"] == (5, 3, 0, 0)
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
        assert json.loads(body)["database"] == "ok"
        status, body = get(f"http://127.0.0.1:{port}/livez")
        assert status == 200 and json.loads(body)["status"] == "ok"
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_exporter_serves_queue_gauges_from_one_cached_query(
        obs_app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    obs_app.enqueue_many("ok", [{} for _ in range(7)], queue="obs")
    port = free_port()
    proc = cli(clean, "metrics", "--port", str(port), "--ttl", "3600")
    try:
        m = wait_for(lambda: scrape(port), 30, "the exporter answering")
        assert sample(m, "pgqueue_queue_jobs", queue="obs", state="waiting") == 7
        assert sample(m, "pgqueue_queue_paused", queue="obs") == 0
        assert not any(k[0].startswith("pgqueue_jobs_total") for k in m)
        obs_app.enqueue_many("ok", [{} for _ in range(3)], queue="obs")
        # within the ttl the cached result answers: the new jobs are not counted yet
        assert sample(scrape(port), "pgqueue_queue_jobs", queue="obs", state="waiting") == 7
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and json.loads(body)["database"] == "ok"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def one_line_exit_2(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("pgqueue: ")
    return lines[0]


def test_metrics_port_in_use_is_one_line_and_exit_2(clean: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_exit_2(cli(clean, "worker", "tests.apps.obs:app", "--metrics-port",
                                   str(port)))
    assert f"cannot serve metrics on 127.0.0.1:{port}" in line
    assert "choose another port" in line
    with psycopg.connect(clean) as c:  # it stopped before registering
        assert c.execute("SELECT count(*) FROM pgqueue.workers").fetchone() == (0,)


@pytest.mark.parametrize("port", ["70000", "0", "-1"])
def test_metrics_port_out_of_range_is_one_line_and_exit_2(clean: str, port: str) -> None:
    line = one_line_exit_2(cli(clean, "worker", "tests.apps.obs:app", "--metrics-port", port))
    assert "--metrics-port must be a TCP port between 1 and 65535" in line


def test_metrics_without_the_extra_names_the_extra(clean: str, tmp_path: Path) -> None:
    fake = tmp_path / "prometheus_client"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('not installed (test)')\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    line = one_line_exit_2(cli(clean, "worker", "tests.apps.obs:app", "--metrics-port", "9464",
                               env=env))
    assert "pip install 'pgqueue-tx[metrics]'" in line
    line = one_line_exit_2(cli(clean, "metrics", env=env))
    assert "pip install 'pgqueue-tx[metrics]'" in line


@pytest.fixture
def own_server() -> Iterator[Any]:
    from pgqueue._embedded import EmbeddedPostgres, find_bindir

    if find_bindir() is None:
        pytest.skip("no PostgreSQL binaries for a restartable server")
    server = EmbeddedPostgres()
    server.start()
    yield server
    server.stop()


@pytest.mark.embedded
@pytest.mark.xdist_group("embedded")  # with the other tests that start servers
def test_readyz_follows_the_database_and_livez_stays_live(own_server: Any) -> None:
    dsn = own_server.dsn()
    migrations.upgrade(dsn)
    app = pgqueue.App(database_url=dsn)

    @app.task(name="noop", queue="q")
    def noop() -> None:
        pass

    w = app.worker(queues=["q"], poll_interval=0.2, metrics_port=free_port()).start_in_thread()
    try:
        assert w.metrics_service is not None
        base = f"http://127.0.0.1:{w.metrics_service.endpoint.port}"
        wait_for(lambda: get(base + "/readyz")[0] == 200, 30, "ready once the listener is up")
        own_server.stop(False)
        def unready() -> bool:
            status, body = get(base + "/readyz")
            return status == 503 and json.loads(body)["database"] == "unreachable"
        wait_for(unready, 30, "/readyz unready (database unreachable) while it is down")
        assert get(base + "/livez")[0] == 200
        own_server.start()
        wait_for(lambda: get(base + "/readyz")[0] == 200, 60, "/readyz ready again")
        assert get(base + "/livez")[0] == 200
    finally:
        w.stop()
        w.join(30)
        app.close()


def run_cli(dsn: str, *args: str) -> tuple[int, str]:
    proc = cli(dsn, *args)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out + err


def test_status_check_fails_on_an_old_wait_or_an_unserved_queue(
        obs_app: pgqueue.App, clean: str, conn: psycopg.Connection[Any]) -> None:
    assert run_cli(clean, "status", "--check")[0] == 0  # nothing queued: all is well
    import datetime as dt
    obs_app.enqueue("ok", queue="obs",
                    run_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    code, out = run_cli(clean, "status", "--check", "--max-age", "60")
    assert code == 1, out
    assert "queue obs: oldest waiting job is" in out
    assert "no live worker serves it" in out
    conn.execute("INSERT INTO pgqueue.workers (id, host, pid, queues, concurrency) "
                 "VALUES ('w1', 'h', 1, ARRAY['obs'], 1)")
    conn.commit()
    code, out = run_cli(clean, "status", "--check", "--max-age", "60", "--json")
    assert code == 1 and json.loads(out)["problems"] == [
        next(line for line in json.loads(out)["problems"] if "oldest waiting" in line)]
    code, out = run_cli(clean, "status", "--check", "--max-age", "7200")
    assert code == 0, out
    conn.execute("UPDATE pgqueue.workers SET heartbeat_at = now() - interval '1 hour'")
    conn.commit()
    code, out = run_cli(clean, "status", "--check", "--max-age", "7200")
    assert code == 1 and "no live worker serves it" in out


def test_an_outcome_without_a_start_is_counted_without_a_run_time() -> None:
    """A job that never ran (arguments that cannot be decoded: failed at once) is counted and
    its end-to-end time observed; its run time is not (it had none)."""
    import datetime as dt

    from pgqueue.job import Job
    from pgqueue.worker._metrics import WorkerMetrics

    metrics = WorkerMetrics()
    now = dt.datetime.now(dt.UTC)
    ran = Job(id=1, queue="q", task="t", args={}, attempt=1, run_at=now, created_at=now)
    never_ran = Job(id=2, queue="q", task="t", args={}, attempt=1, run_at=now, created_at=now)
    metrics.on_event("started", ran)
    metrics.on_event("retried", ran)
    metrics.on_event("started", ran)
    metrics.on_event("succeeded", ran)
    metrics.on_event("failed", never_ran)
    metrics.on_event("deferred", never_ran)  # not an outcome: ignored
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for family in metrics.registry.collect() for s in family.samples}
    labels = (("queue", "q"), ("task", "t"))
    for outcome in ("retried", "succeeded", "failed"):
        assert got[("pgqueue_jobs_total", (("outcome", outcome), *labels))] == 1
    assert got[("pgqueue_job_run_seconds_count", labels)] == 2        # two attempts ran
    assert got[("pgqueue_job_pickup_latency_seconds_count", labels)] == 2
    assert got[("pgqueue_job_end_to_end_seconds_count", labels)] == 2  # succeeded + failed
    assert not metrics._starts


def test_the_endpoint_stops_at_once() -> None:
    """Stopping the endpoint does not wait for a poll (``serve_forever`` polled every 0.5 s, so
    each worker stop with metrics on took up to half a second more); it still serves until
    then, and the port is free again after."""
    import time

    from pgqueue.worker._metrics import HttpEndpoint, WorkerMetrics

    registry = WorkerMetrics().registry
    t0 = time.monotonic()
    for _ in range(5):  # right after start: serve_forever would sit in its 0.5 s select
        endpoint = HttpEndpoint(registry, port=0)
        endpoint.start()
        assert get(f"http://127.0.0.1:{endpoint.port}/livez")[0] == 200
        endpoint.stop()
        endpoint.stop()  # idempotent
        assert get(f"http://127.0.0.1:{endpoint.port}/livez")[0] == 0  # refused: closed
    assert time.monotonic() - t0 < 1.5  # five polls would be 2.5 s
