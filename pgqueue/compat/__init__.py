"""Seed-shaped APIs over :class:`pgqueue.App` and :class:`pgqueue.Worker`.

- :mod:`pgqueue.compat.backstage` -- ``get_queue(name, store=..., dlq_handler=...)`` with
  ``add`` / ``process`` / ``pause`` / ``resume`` / ``get_job_count`` / ``disconnect``;
- :mod:`pgqueue.compat.velocity` -- ``push`` / ``later`` / ``work`` / ``register`` / ``size`` /
  ``clear`` / ``pop``, job objects with ``handle()`` and ``failed(err)``, a memory queue for tests.

Both are thin: a queue is a pgqueue queue name, jobs are ordinary rows of ``jobs`` (inspectable
with SQL), retries, delays, priorities and the ``failed_jobs`` archive are pgqueue's own. They
run on any driver (``postgres``, ``memory``, ``redis``) chosen by configuration
(:func:`load_settings`).

This module holds what both share: :func:`load_settings` (the generic loader of
:mod:`pgqueue.config` with the seeds' configuration vocabularies, :data:`SEEDS`, see
:mod:`pgqueue.compat._vocabulary`), :func:`default_settings` (the settings a compat API uses
when none are given) and :class:`BackgroundWorker` (a worker run in a thread for sync code, or as
a task on the running event loop for async code).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pgqueue import config
from pgqueue.app import App
from pgqueue.compat._vocabulary import SEEDS
from pgqueue.config import Settings
from pgqueue.drivers.base import Driver
from pgqueue.drivers.postgres.driver import PostgresDriver
from pgqueue.worker import Worker

__all__ = ["ENV_VARS", "SEEDS", "BackgroundWorker", "default_settings", "load_settings",
           "worker_app"]

log = logging.getLogger("pgqueue.compat")

#: files :func:`default_settings` reads from the current directory when they exist
YAML_FILE = config.YAML_FILE
ENV_FILE = config.ENV_FILE

# the one resolution of settings (pgqueue.App(), the CLI, default_settings) reads the seeds'
# names too: registered here because pgqueue.config (below pgqueue.app) may not import compat
config.register_vocabulary(*SEEDS)

#: every variable :func:`load_settings` reads (pgqueue's own and the seeds')
ENV_VARS = tuple(dict.fromkeys(
    (*config.ENV_VARS, *(var for vocabulary in SEEDS for var in vocabulary.variables))))

#: how long ``process()``/``work()`` wait for the worker to report that it started
STARTUP_TIMEOUT = 10.0


def load_settings(*, environ: Mapping[str, str] | None = None,
                  yaml_file: str | Path | None = None, env_file: str | Path | None = None,
                  **overrides: Any) -> Settings:
    """:func:`pgqueue.config.load_settings` reading the seeds' names as well: Vela's
    ``QUEUE_*``/``VELA_QUEUE_*`` variables, Velocity's ``.env`` (``QUEUE_DRIVER``,
    ``QUEUE_REDIS_*``, ``QUEUE_TABLE``, ``QUEUE_FAILED_TABLE``) and Backstage's
    ``backend.queue`` YAML (:data:`SEEDS`). This is :func:`pgqueue.load_settings`.

    Layers, later wins: defaults, ``yaml_file``, ``env_file``, ``environ`` (default
    ``os.environ``, only read), ``overrides`` (keyword arguments named like the fields of
    :class:`pgqueue.Settings`; ``None`` = not set). Raises :class:`pgqueue.ConfigurationError`
    for any invalid value, naming the setting, its source and what is allowed.
    """
    return config.load_settings(environ=environ, yaml_file=yaml_file, env_file=env_file,
                                vocabularies=SEEDS, **overrides)


def default_settings(directory: str | Path | None = None) -> Settings:
    """Settings as the seeds find them: ``app-config.yaml`` (backstage) and ``.env`` (velocity)
    of ``directory`` (default: the current directory) when they exist, then the environment.
    This is :func:`pgqueue.config.find_settings` -- the same resolution ``pgqueue.App()`` and
    the ``pgqueue`` command use -- with the seeds' vocabularies, which this module registers
    when imported.

    Nothing is written to ``os.environ``. Raises :class:`pgqueue.ConfigurationError` for any
    invalid value.
    """
    return config.find_settings(directory)


def _fresh_driver(driver: Driver) -> Driver | None:
    """A new driver on the same backend for a worker that runs on its own event loop, or None
    when the driver can be shared across loops.

    The postgres driver's async connection pool belongs to the loop that opened it, so a
    thread-run worker gets its own driver (closed with the worker). The memory driver (one lock,
    thread-safe wake-ups) and the redis driver (a blocking client run in threads; listeners made
    per worker on its loop) are shared.
    """
    if isinstance(driver, PostgresDriver):
        return PostgresDriver(driver.dsn, schema=driver.schema)
    return None


def worker_app(app: App, *, threaded: bool) -> tuple[App, bool]:
    """An App for a compat worker: ``(app, owns_driver)``.

    The worker gets its own :class:`pgqueue.App` (its own task registry) on the same backend;
    see :func:`_fresh_driver` for when it also gets its own driver. A worker on the caller's
    loop (``threaded=False``) always shares the caller's driver.
    """
    driver = app.driver
    fresh = _fresh_driver(driver) if threaded else None
    return App(driver=fresh or driver, schema=app.schema), fresh is not None


class BackgroundWorker:
    """Runs a :class:`pgqueue.Worker` in the background, in a daemon thread (:meth:`start`) or
    as a task on the running event loop (:meth:`start_async`), until :meth:`stop`.

    ``owns_app``: close the worker's App (its connection pools) when the worker ends.
    """

    def __init__(self, worker: Worker, *, owns_app: bool = False) -> None:
        self.worker = worker
        self.owns_app = owns_app
        self._task: asyncio.Task[None] | None = None

    @property
    def error(self) -> BaseException | None:
        """Why the worker ended, if it ended on an error."""
        return self.worker.error

    @property
    def running(self) -> bool:
        """True from start until the worker has stopped."""
        started = self.worker._thread is not None or self._task is not None
        return started and not self.worker.stopped.is_set()

    async def _close_app(self) -> None:
        if self.owns_app:
            driver = self.worker.app.driver
            with contextlib.suppress(Exception):
                await driver.aclose()
            with contextlib.suppress(Exception):
                driver.close()

    async def _main(self) -> None:
        try:
            await self.worker.run()
        except BaseException as exc:
            self.worker.error = exc
            if self.worker.started.is_set() and isinstance(exc, Exception):
                log.error("worker %s stopped on an error: %s", self.worker.id, exc,
                          exc_info=exc)
            raise
        finally:
            await self._close_app()
            self.worker.stopped.set()

    def start(self) -> None:
        """Start in a daemon thread; return once the worker runs (or raise why it could not)."""
        self.worker.start_in_thread()

    async def start_async(self) -> None:
        """Start as a task on the running loop; return once the worker runs (or raise)."""
        self.worker._retry_startup = False
        self._task = asyncio.get_running_loop().create_task(
            self._main(), name=f"pgqueue-compat-{self.worker.id}")
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.worker.started.is_set():
            await asyncio.wait({self._task}, timeout=0.01)
            if self._task.done():
                self._raise_startup_error()
            if time.monotonic() > deadline:
                log.warning("worker %s has not started after %.0f s (database down?); it keeps "
                            "trying in the background", self.worker.id, STARTUP_TIMEOUT)
                return

    def _raise_startup_error(self) -> None:
        error = self.error
        if error is None and self._task is not None and not self._task.cancelled():
            error = self._task.exception()
        if isinstance(error, Exception):
            raise error
        raise RuntimeError(f"worker {self.worker.id} stopped while starting")

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully (running jobs finish; see ``Worker.shutdown_timeout``).

        A thread-run worker is waited for (up to ``timeout``); a loop-run worker is only asked
        to stop (it finishes on its loop): await :meth:`stop_async` to wait for it.
        """
        self.worker.stop()
        if self.worker._thread is not None:
            self.worker.join(timeout)
            if self.owns_app:
                with contextlib.suppress(Exception):
                    self.worker.app.driver.close()

    async def stop_async(self, timeout: float | None = None) -> None:
        """Stop gracefully and wait, without blocking the event loop."""
        self.worker.stop()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
        elif self.worker._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.worker.join, timeout)
