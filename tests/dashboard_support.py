"""Helpers of the dashboard tests: the dashboard served by uvicorn in a thread on a free
127.0.0.1 port, and Debian's chromium driven by Playwright."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

import pgqueue
import pgqueue.dashboard
from tests.helpers import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: the access token of the test servers
TOKEN = "test-token-0123456789abcdef"


def need_chromium() -> None:
    """Skip the calling test module when Debian's Chromium is missing (called at import)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's, never a "
                    "downloaded browser)", allow_module_level=True)


class Served:
    """A dashboard served on 127.0.0.1 (``url`` has no trailing slash)."""

    def __init__(self, app: pgqueue.App, **options: Any) -> None:
        self.app = app
        asgi = pgqueue.dashboard.asgi_app(app, **options)
        self.server = uvicorn.Server(uvicorn.Config(
            asgi, host="127.0.0.1", port=0, log_level="warning", access_log=False,
            lifespan="on"))
        self.thread = threading.Thread(target=self._run, name="dashboard", daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> Served:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 60,
                 "the dashboard's server to start")
        assert self.server.started, "the dashboard's server did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@contextmanager
def served(app: pgqueue.App, **options: Any) -> Iterator[Served]:
    """The dashboard of ``app`` served until the block ends."""
    server = Served(app, **options).start()
    try:
        yield server
    finally:
        server.stop()
