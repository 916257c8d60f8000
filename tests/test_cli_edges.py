"""The rough edges of the ``pgqueue`` command (issue 10, point 8), and the one mapping of exit
statuses: 2 for a command that cannot be done as asked, 1 when the database fails."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.cli import EXIT_CODES, build_parser, main
from pgqueue.cli._context import load_app
from pgqueue.errors import ConfigurationError
from tests.helpers import run_cli_main as run
from tests.helpers import scalar

ROOT = Path(__file__).resolve().parent.parent


def pgqueue_cli(*args: str, env: dict[str, str] | None = None,
                **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgqueue.cli", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          cwd=ROOT, timeout=120, **kw)


def test_bare_command_prints_help_and_version_exists(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys)
    assert status == 0 and "usage: pgqueue" in out and "demo" in out and err == ""
    assert "exit status" in out  # the exit codes are documented in the help
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"pgqueue {pgqueue.__version__}"


def test_every_subcommand_has_a_description() -> None:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sp in sub.choices.items():
        assert sp.description and len(sp.description) > 20, name
        assert any(h.dest == name for h in sub._choices_actions), name  # a summary in --help


def test_log_level_is_accepted_after_the_subcommand(clean: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "status", "--database-url", clean, "--log-level", "DEBUG")
    assert status == 0, err
    assert logging.getLogger("pgqueue").level == logging.DEBUG
    status, _, _ = run(capsys, "--log-level", "WARNING", "status", "--database-url", clean)
    assert logging.getLogger("pgqueue").level == logging.WARNING
    status, _, _ = run(capsys, "failed", "list", "--log-level", "ERROR", "--database-url", clean)
    assert status == 0 and logging.getLogger("pgqueue").level == logging.ERROR


def test_worker_refuses_a_function_or_task_with_one_line(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    for spec, says in (("tests.apps.cli_shop:place_order", "is the task 'place_order'"),
                       ("tests.apps.cli_shop:helper", "takes arguments"),
                       ("tests.apps.cli_shop:nothing", "has no attribute 'nothing'")):
        status, _, err = run(capsys, "worker", spec)
        assert status == 2, spec
        assert says in err and "tests.apps.cli_shop:app" in err  # names the App to use
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    from tests.apps import cli_shop

    assert load_app("tests.apps.cli_shop:make_app") is cli_shop.app  # a factory is fine
    with pytest.raises(ConfigurationError):
        load_app("tests.apps.cli_shop")


def test_json_into_a_closed_pipe_ends_quietly() -> None:
    """``pgqueue config | head -0``: the reader goes away before pgqueue writes."""
    proc = subprocess.Popen([sys.executable, "-m", "pgqueue.cli", "config"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like head: gone before the child writes (it is still importing)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == EXIT_CODES["broken pipe"], err
    assert "BrokenPipeError" not in err and "Traceback" not in err


def test_pause_refuses_unknown_queues_unless_create_and_forget_undoes(
        app: pgqueue.App, clean: str, conn: psycopg.Connection[Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    app.enqueue("t", queue="mail")
    status, _, err = run(capsys, "pause", "mial", "--database-url", clean)
    assert status == 2 and "unknown queue 'mial'" in err and "--create" in err
    assert scalar(conn, "SELECT count(*) FROM pgqueue.queues") == 0  # nothing stored
    status, _, err = run(capsys, "resume", "mial", "--database-url", clean)
    assert status == 2
    assert run(capsys, "pause", "mail", "--database-url", clean)[0] == 0  # has a job: known
    # a queue of --app's tasks is known before its first job
    assert run(capsys, "pause", "orders", "--app", "tests.apps.cli_shop:app",
               "--database-url", clean)[0] == 0
    status, out, _ = run(capsys, "pause", "later", "--create", "--database-url", clean)
    assert status == 0 and "paused" in out
    assert {r[0] for r in conn.execute("SELECT name FROM pgqueue.queues")} == {
        "mail", "orders", "later"}
    status, out, _ = run(capsys, "forget", "later", "--database-url", clean)
    assert status == 0 and "forgot queue 'later'" in out
    status, out, _ = run(capsys, "forget", "mail", "--database-url", clean)
    assert "its 1 jobs stay" in out
    assert scalar(conn, "SELECT count(*) FROM pgqueue.jobs WHERE queue = 'mail'") == 1
    assert run(capsys, "forget", "later", "--database-url", clean)[0] == 2  # nothing to forget
    assert {r[0] for r in conn.execute("SELECT name FROM pgqueue.queues")} == {"orders"}


def test_burst_worker_on_its_own_schema_says_what_is_left(make_database: Any) -> None:
    """``worker --schema``; and ``--burst`` says why jobs are left: a paused queue, a job under
    a dead worker's lease."""
    url = make_database()
    side = pgqueue.App(database_url=url, schema="alt", strict=False)
    try:
        side.migrate()
        side.enqueue("noop", queue="x")
        side.enqueue("noop", queue="y")
        side.pause("y")
        held = side.enqueue("noop", queue="x", priority=1000)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("UPDATE alt.jobs SET state = 'running', worker_id = 'dead', attempt = 1, "
                      "lease_expires_at = now() + interval '1 hour' WHERE id = %s", (held,))
    finally:
        side.close()
    r = pgqueue_cli("worker", "tests.apps.x:app", "--schema", "alt", "--queues", "x,y",
                    "--burst", "--database-url", url)
    assert r.returncode == 0, r.stderr
    assert "queues empty" not in r.stderr
    assert "1 job(s) wait in paused queue 'y'" in r.stderr
    assert "1 job(s) of queue 'x' are held by another worker" in r.stderr
    with psycopg.connect(url) as c:
        assert scalar(c, "SELECT count(*) FROM alt.job_history WHERE queue = 'x'") == 1


def test_exit_status_2_for_bad_input_1_for_a_failing_database(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "enqueue", "x", "--args", "[1", "--database-url",
               "postgresql://nobody@127.0.0.1:1/x")[0] == EXIT_CODES["usage"]
    status, _, err = run(capsys, "failed", "list", "--database-url",
                         "postgresql://nobody@127.0.0.1:1/x")
    assert status == EXIT_CODES["failure"], err


def _one_job_in_alt(url: str, task: str) -> None:
    """Migrate schema ``alt`` of ``url`` and enqueue one ``task`` job on queue ``x``."""
    side = pgqueue.App(database_url=url, schema="alt", strict=False)
    try:
        side.migrate()
        side.enqueue(task, queue="x")
    finally:
        side.close()


@pytest.mark.parametrize("choice", ["auto", "uvloop"])
def test_worker_event_loop_flag(make_database: Any, choice: str) -> None:
    """``worker --event-loop``: auto runs the jobs (on uvloop when installed); uvloop runs them
    when installed, and without it is one line that says what to install, exit status 2."""
    url = make_database()
    _one_job_in_alt(url, "noop")
    r = pgqueue_cli("worker", "tests.apps.x:app", "--schema", "alt", "--queues", "x",
                    "--burst", "--database-url", url, "--event-loop", choice)
    try:
        import uvloop  # noqa: F401
        have_uvloop = True
    except ImportError:
        have_uvloop = False
    if choice == "uvloop" and not have_uvloop:
        assert r.returncode == EXIT_CODES["usage"], r.stderr
        assert "pip install 'pgqueue-tx[uvloop]'" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        return
    assert r.returncode == 0, r.stderr
    with psycopg.connect(url) as c:
        assert scalar(c, "SELECT count(*) FROM alt.job_history WHERE queue = 'x'") == 1


def _loop_of_a_burst_worker(url: str, env: dict[str, str], *flags: str) -> str:
    """Run ``pgqueue worker --burst`` (with ``env`` and ``flags``) on one ``which_loop`` job in
    a fresh schema of ``url``; the class of the event loop the job ran on."""
    _one_job_in_alt(url, "which_loop")
    r = pgqueue_cli("worker", "tests.apps.x:app", "--schema", "alt", "--queues", "x",
                    "--burst", "--database-url", url, *flags, env=env)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT result #>> '{}' FROM alt.job_history "
                         "WHERE task = 'which_loop'").fetchall()
        c.execute("DROP SCHEMA alt CASCADE")
        c.commit()
    assert len(rows) == 1, rows
    return str(rows[0][0])


def test_worker_event_loop_setting_and_the_flag_over_it(make_database: Any) -> None:
    """``PGQUEUE_EVENT_LOOP`` chooses the loop of ``pgqueue worker`` without ``--event-loop``;
    the flag wins over it."""
    pytest.importorskip("uvloop", reason="auto and asyncio are the same loop without uvloop")
    url = make_database()
    assert _loop_of_a_burst_worker(url, {"PGQUEUE_EVENT_LOOP": "auto"}) == "uvloop.Loop"
    chosen = _loop_of_a_burst_worker(url, {"PGQUEUE_EVENT_LOOP": "uvloop"},
                                     "--event-loop", "asyncio")
    assert chosen.startswith("asyncio.") and "uvloop" not in chosen, chosen


def test_bad_event_loop_setting_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DATABASE_URL",
                                                            "DATABASE_URL")}
    env.update({"PYTHONPATH": str(ROOT), "PGQUEUE_EVENT_LOOP": "trio"})
    r = subprocess.run([sys.executable, "-m", "pgqueue.cli", "worker", "tests.apps.x:app",
                        "--burst"], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=120)
    assert r.returncode == EXIT_CODES["usage"], r.stderr
    assert r.stderr.strip() == ("pgqueue: event_loop (from env PGQUEUE_EVENT_LOOP): 'trio' is "
                                "not valid; allowed: asyncio, uvloop, auto"), r.stderr
    monkeypatch.setenv("PGQUEUE_EVENT_LOOP", "trio")
    status, _, err = run(capsys, "config")
    assert status == EXIT_CODES["usage"]
    assert len(err.strip().splitlines()) == 1 and "event_loop" in err and "'trio'" in err


def test_config_lists_the_event_loop_and_its_source(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_EVENT_LOOP", "auto")
    status, out, err = run(capsys, "config")
    assert status == 0, err
    [row] = [line.split() for line in out.splitlines() if line.startswith("event_loop ")]
    assert row == ["event_loop", "auto", "env", "PGQUEUE_EVENT_LOOP"]
    monkeypatch.delenv("PGQUEUE_EVENT_LOOP")
    status, out, _ = run(capsys, "config")
    [row] = [line.split() for line in out.splitlines() if line.startswith("event_loop ")]
    assert row == ["event_loop", "asyncio", "default"]
