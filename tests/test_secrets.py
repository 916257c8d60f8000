"""Passwords never appear in error messages, log lines or reprs (issue 11 point 18).

Every connection-string shape pgqueue accepts -- libpq keyword strings, URLs with a password in
the user info or in ``?password=``, SQLAlchemy URLs, ``.env`` values, Redis URLs including
``unix://:pw@/path`` -- is fed through every path that can quote it: settings (``repr``,
``describe``, ``pgqueue config``), invalid values, unreachable and refusing servers (the Python
API, ``app.migrate()``, the CLI, a worker's retry warnings), and the reprs of the App and its
drivers. The password must never come out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pgqueue
from pgqueue._dsn import redact

ROOT = Path(__file__).resolve().parent.parent
PW = "Sup3r-S3cret-pw"

#: PostgreSQL shapes of a URL with a password, all pointing at a closed port
POSTGRES_SHAPES = {
    "url": f"postgresql://app:{PW}@127.0.0.1:1/shop",
    "sqlalchemy url": f"postgresql+psycopg://app:{PW}@127.0.0.1:1/shop",
    "query password": f"postgresql://app@127.0.0.1:1/shop?password={PW}",
    "keyword": f"host=127.0.0.1 port=1 user=app password={PW} dbname=shop",
    "quoted keyword": f"host=127.0.0.1 port=1 user=app password='{PW} x' dbname=shop",
    "multi-host": f"postgresql://app:{PW}@127.0.0.1:1,127.0.0.1:2/shop",
}
#: the same, broken so that parsing fails (an invalid port)
BROKEN_POSTGRES = {
    "url": f"postgresql://app:{PW}@127.0.0.1:99999/shop",
    "query password": f"postgresql://app@127.0.0.1:99999/shop?password={PW}",
    "keyword": f"host=127.0.0.1 port=99999 user=app password={PW} dbname=shop",
    "bad scheme": f"mysql://app:{PW}@127.0.0.1/shop",
    "unterminated quote": f"host=127.0.0.1 password='{PW} dbname=shop",
}
REDIS_SHAPES = {
    "redis": f"redis://:{PW}@127.0.0.1:1/0",
    "redis user": f"redis://app:{PW}@127.0.0.1:1/0",
    "rediss": f"rediss://app:{PW}@127.0.0.1:1/0",
    "unix": f"unix://:{PW}@/nonexistent/redis.sock",
    "query password": f"redis://127.0.0.1:1/0?password={PW}",
}
BROKEN_REDIS = {
    "bad port": f"redis://:{PW}@127.0.0.1:99999/0",
    "bad db": f"redis://:{PW}@127.0.0.1:6379/x",
    "bad scheme": f"http://:{PW}@127.0.0.1:6379/0",
    "unix without path": f"unix://:{PW}@",
}


def assert_clean(*texts: object) -> None:
    for text in texts:
        assert PW not in str(text), f"password leaked in: {text}"


def error_texts(exc: BaseException) -> list[str]:
    """What a user may see of a pgqueue error: its message and repr."""
    return [str(exc), repr(exc)]


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every line logged (any logger, any level) while the test runs, formatted."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    pg = logging.getLogger("pgqueue")
    pg.addHandler(handler)  # the CLI's configure() may have stopped propagation
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        pg.removeHandler(handler)
        root.setLevel(old)


def test_redact_every_shape() -> None:
    for shape in (*POSTGRES_SHAPES.values(), *BROKEN_POSTGRES.values(), *REDIS_SHAPES.values(),
                  *BROKEN_REDIS.values()):
        assert_clean(redact(shape))


@pytest.mark.parametrize("shape", sorted(POSTGRES_SHAPES))
def test_settings_repr_and_describe(shape: str) -> None:
    url = POSTGRES_SHAPES[shape]
    settings = pgqueue.load_settings(environ={"PGQUEUE_DATABASE_URL": url})
    assert_clean(repr(settings), str(settings), settings.describe())
    by_hand = pgqueue.Settings(driver="postgres", database_url=url)
    assert_clean(repr(by_hand), str(by_hand))


@pytest.mark.parametrize("shape", sorted(REDIS_SHAPES))
def test_redis_settings_and_driver_reprs(shape: str) -> None:
    pytest.importorskip("redis")
    from pgqueue.drivers.redis import RedisDriver

    url = REDIS_SHAPES[shape]
    settings = pgqueue.load_settings(environ={"PGQUEUE_QUEUE_DRIVER": "redis",
                                              "PGQUEUE_REDIS_URL": url})
    assert_clean(repr(settings), settings.describe())
    driver = RedisDriver(url, socket_timeout=1, connect_timeout=1)
    app = pgqueue.App(driver=driver)
    assert_clean(repr(driver), repr(app))
    with pytest.raises(pgqueue.PgQueueError) as info:
        app.enqueue("t")
    assert_clean(*error_texts(info.value))
    app.close()


@pytest.mark.parametrize("shape", sorted(BROKEN_POSTGRES))
def test_invalid_postgres_values_everywhere(shape: str, tmp_path: Path) -> None:
    url = BROKEN_POSTGRES[shape]
    attempts: list[Callable[[], Any]] = [
        lambda: pgqueue.load_settings(environ={"PGQUEUE_DATABASE_URL": url}),
        lambda: pgqueue.load_settings(environ={}, database_url=url),
        lambda: pgqueue.Settings(driver="postgres", database_url=url),
        lambda: pgqueue.App(database_url=url).enqueue("t"),
    ]
    env_file = tmp_path / ".env"
    env_file.write_text(f"PGQUEUE_DATABASE_URL={url}\n")
    attempts.append(lambda: pgqueue.load_settings(environ={}, env_file=env_file))
    for attempt in attempts:
        with pytest.raises(pgqueue.PgQueueError) as info:
            attempt()
        assert_clean(*error_texts(info.value))


@pytest.mark.parametrize("shape", sorted(BROKEN_REDIS))
def test_invalid_redis_values_everywhere(shape: str, tmp_path: Path) -> None:
    url = BROKEN_REDIS[shape]
    env_file = tmp_path / ".env"
    env_file.write_text(f"PGQUEUE_QUEUE_DRIVER=redis\nPGQUEUE_REDIS_URL={url}\n")
    attempts: list[Callable[[], Any]] = [
        lambda: pgqueue.load_settings(environ={"PGQUEUE_QUEUE_DRIVER": "redis",
                                               "PGQUEUE_REDIS_URL": url}),
        lambda: pgqueue.load_settings(environ={}, env_file=env_file),
        lambda: pgqueue.Settings(driver="redis", redis_url=url),
    ]
    if pytest.importorskip("redis"):
        from pgqueue.drivers.redis import RedisDriver

        attempts.append(lambda: RedisDriver(url))
    for attempt in attempts:
        with pytest.raises(pgqueue.PgQueueError) as info:
            attempt()
        assert_clean(*error_texts(info.value))


@pytest.mark.parametrize("shape", sorted(POSTGRES_SHAPES))
def test_unreachable_database_messages_and_logs(shape: str, log_lines: list[str]) -> None:
    url = POSTGRES_SHAPES[shape]
    app = pgqueue.App(database_url=url)
    assert_clean(repr(app), repr(app.driver))
    for call in (lambda: app.enqueue("t"), app.stats, app.migrate,
                 lambda: pgqueue.migrations.current(url)):
        with pytest.raises(pgqueue.PgQueueError) as info:
            call()
        assert_clean(*error_texts(info.value))

    async def worker_retries() -> None:  # logs "database unavailable: ..., retrying"
        w = app.worker(queues=["q"])
        run = asyncio.create_task(w.run())
        while not any("retrying" in line for line in log_lines):
            await asyncio.sleep(0.01)
        w.stop()
        with contextlib.suppress(pgqueue.PgQueueError):  # stopped while still unavailable
            await asyncio.wait_for(run, 30)

    asyncio.run(asyncio.wait_for(worker_retries(), 60))
    app.close()
    assert_clean(*log_lines)


@pytest.mark.parametrize("shape", ("url", "keyword", "query password"))
def test_cli_output_never_shows_the_password(shape: str, tmp_path: Path) -> None:
    url = POSTGRES_SHAPES[shape]
    broken = BROKEN_POSTGRES[shape]
    env = {**os.environ, "PGQUEUE_DATABASE_URL": "", "DATABASE_URL": ""}
    runs = [
        (["config"], {"PGQUEUE_DATABASE_URL": url}),
        (["config"], {"PGQUEUE_DATABASE_URL": broken}),
        (["status"], {"PGQUEUE_DATABASE_URL": url}),
        (["status", "--json"], {"PGQUEUE_DATABASE_URL": url}),
        (["enqueue", "t", "--database-url", url], {}),
        (["migrate", "--database-url", url], {}),
        (["status", "--database-url", broken], {}),
    ]
    (tmp_path / ".env").write_text(f"PGQUEUE_DATABASE_URL={broken}\n")
    runs.append((["config"], {}))  # the .env of the working directory
    for args, extra in runs:
        proc = subprocess.run([sys.executable, "-m", "pgqueue.cli", *args], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path,
                              env={**env, **extra, "PYTHONPATH": str(ROOT)})
        assert_clean(proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
