"""Every example under examples/ runs unchanged on memory and on postgres, changing only
configuration (environment variables, ``.env``, ``app-config.yaml``); and the Vela acceptance:
a worker configured only by ``VELA_QUEUE_*`` consumes exactly its routes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pgqueue
from pgqueue.compat import ENV_VARS, load_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.processes

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: set by our configuration files or variables only
_CONFIG_VARS = {*ENV_VARS, "PGQUEUE_TEST_DSN"}


def base_env() -> dict[str, str]:
    """The test process's environment without any queue configuration."""
    return {k: v for k, v in os.environ.items() if k not in _CONFIG_VARS}


def run_both(example: str, memory: tuple[Path, dict[str, str]],
             postgres: tuple[Path, dict[str, str]]) -> dict[str, str]:
    """Run ``example`` on memory and on postgres at the same time; return each one's stdout
    after checking it exited 0."""
    procs = {}
    for name, (cwd, extra) in (("memory", memory), ("postgres", postgres)):
        procs[name] = subprocess.Popen(
            [sys.executable, str(EXAMPLES / example)], cwd=cwd, env={**base_env(), **extra},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{example} on {name} failed:\n{stdout}\n{stderr}"
        out[name] = stdout
    return out


def dirs(tmp_path: Path) -> tuple[Path, Path]:
    mem, pg = tmp_path / "memory", tmp_path / "postgres"
    mem.mkdir()
    pg.mkdir()
    return mem, pg


def test_velocity_email_example(tmp_path: Path, clean: str) -> None:
    mem, pg = dirs(tmp_path)
    (mem / ".env").write_text("QUEUE_DRIVER=memory  # Options: memory, redis, database\n")
    (pg / ".env").write_text(f"QUEUE_DRIVER=database\nDATABASE_URL='{clean}'\n"
                             "QUEUE_TABLE=jobs\nQUEUE_FAILED_TABLE=failed_jobs\n")
    out = run_both("velocity_email.py", (mem, {}), (pg, {}))
    for driver, text in out.items():
        lines = text.splitlines()
        assert f"driver: {driver}" in lines
        assert "Cleared 1 jobs from 'scheduled'" in lines
        assert lines.count("Sending email to: user@example.com") == 3
        for i in range(10):
            assert f"Sending email to: user{i}@example.com" in lines
        assert "Processing: report" in lines
        assert "Email queue size: 0" in lines
        assert "emails worker processed 11 jobs; default worker processed 3 jobs" in lines
        assert lines[-1] == "done"


def test_velocity_testing_example(tmp_path: Path, clean: str) -> None:
    mem, pg = dirs(tmp_path)
    out = run_both("velocity_testing.py", (mem, {}),
                   (pg, {"QUEUE_DRIVER": "database", "DATABASE_URL": clean}))
    for driver, text in out.items():
        assert "test_email_job: ok (memory)" in text
        assert f"test_email_job_on_configured_queue: ok ({driver})" in text


def test_backstage_plugin_example(tmp_path: Path, clean: str) -> None:
    mem, pg = dirs(tmp_path)
    (mem / "app-config.yaml").write_text(
        "backend:\n  queue:\n    defaultStore: memory\n    maxAttempts: 3\n")
    (pg / "app-config.yaml").write_text(
        "backend:\n  queue:\n    defaultStore: postgres\n    maxAttempts: 3\n"
        f"    postgres:\n      connection: '{clean}'\n")
    out = run_both("backstage_plugin.py", (mem, {}), (pg, {}))
    for driver, text in out.items():
        lines = text.splitlines()
        assert f"my-work-queue uses the {driver} store, max 3 attempts" in lines
        assert "Queue has 8 jobs (waiting + active); no handler yet, so nothing runs" in lines
        order = next(x for x in lines if x.startswith("Processed in this order: "))
        tasks = order.split(": ", 1)[1].split(", ")
        assert tasks[0] == "critical_job"
        assert tasks.index("send_email") < tasks.index("normal_job") < tasks.index(
            "background_job")
        assert set(tasks) == {"critical_job", "send_email", "normal_job", "background_job",
                              "scheduled_important_task", "risky_operation", "cleanup"}
        assert any("failed permanently after 3 attempts" in x for x in lines)
        assert "Queue paused" in lines and "Queue resumed" in lines
        assert "Queue has 1 jobs after disconnect" in lines
        assert "Processed after reconnecting: added_after_disconnect" in lines
        assert "Dead-lettered: ['always_fails']" in lines
        assert lines[-1] == "done"


def test_vela_worker_example(tmp_path: Path, clean: str) -> None:
    mem, pg = dirs(tmp_path)
    routes = {"VELA_QUEUE_ROUTES": "vela,linux"}
    out = run_both("vela_worker.py", (mem, routes),
                   (pg, {**routes, "VELA_QUEUE_DRIVER": "postgres",
                         "VELA_QUEUE_CONFIG": clean}))
    for driver, text in out.items():
        lines = text.splitlines()
        assert any(x.split()[:2] == ["driver", driver] for x in lines), text
        assert "worker consumes: vela, linux" in lines
        assert ("built: octocat/linux#1, octocat/linux#2, octocat/vela#1, octocat/vela#2"
                in lines)
        assert "left in vela: 0" in lines and "left in linux: 0" in lines
        assert "left in windows: 2" in lines
    assert "env VELA_QUEUE_CONFIG" in out["postgres"]


def test_vela_example_reports_bad_configuration(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "vela_worker.py")], cwd=tmp_path,
        env={**base_env(), "VELA_QUEUE_DRIVER": "postgres",
             "VELA_QUEUE_CONFIG": "postgresql://u@h:port/db"},
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(
        "error: database_url (from env VELA_QUEUE_CONFIG):"), proc.stderr


def test_vela_env_worker_consumes_exactly_its_routes(clean: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _CONFIG_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VELA_QUEUE_DRIVER", "postgres")
    monkeypatch.setenv("VELA_QUEUE_CONFIG", clean)
    monkeypatch.setenv("VELA_QUEUE_ROUTES", "a,b")
    settings = load_settings()
    app = pgqueue.App.from_settings(settings)
    ran: list[str] = []

    @app.task(name="vela.build")
    def build(channel: str) -> None:
        ran.append(channel)

    for channel in ("a", "b", "c"):
        build.options(queue=channel).enqueue(channel=channel)
    worker: pgqueue.Worker = app.worker(**settings.worker_options())
    assert worker.queues == ["a", "b"]
    worker.start_in_thread()
    try:
        wait_for(lambda: app.count("a") == 0 and app.count("b") == 0, what="a and b to drain")
    finally:
        worker.stop()
        worker.join(10)
    assert sorted(ran) == ["a", "b"]
    assert app.count("c") == 1
    app.close()
