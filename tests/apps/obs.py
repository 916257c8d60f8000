"""An application for the observability tests (``pgqueue worker tests.apps.obs:app``).

Queue ``obs``: ``ok`` succeeds, ``flaky`` fails its first attempt and then succeeds, ``bad``
always fails (2 attempts), ``skip`` cancels itself. Retries come at once (constant(0)).
"""

from __future__ import annotations

import pgqueue
from pgqueue.retry import constant

app = pgqueue.App()


@app.task(name="ok", queue="obs")
def ok() -> None:
    return None


@app.task(name="flaky", queue="obs", retry=constant(0))
def flaky() -> None:
    if pgqueue.current_job().attempt == 1:
        raise RuntimeError("first attempt fails")


@app.task(name="bad", queue="obs", max_attempts=2, retry=constant(0))
def bad() -> None:
    raise RuntimeError("always fails")


@app.task(name="skip", queue="obs")
def skip() -> pgqueue.Cancel:
    return pgqueue.Cancel()
