"""A small shop application for the CLI tests (``--app tests.apps.cli_shop:app``).

Its tasks do nothing; the tests look at the jobs table.
"""

from __future__ import annotations

import pgqueue

app = pgqueue.App()


@app.task(name="send_confirmation", queue="emails")
def send_confirmation(order_id: int) -> None:
    """The README's example task: lives on queue ``emails``, takes one ``order_id``."""


@app.task(name="place_order", queue="orders")
def place_order(customer: str) -> int:
    return 1


def make_app() -> pgqueue.App:
    """A factory without parameters: ``pgqueue worker tests.apps.cli_shop:make_app`` works."""
    return app


def helper(n: int) -> int:
    """A plain function that needs an argument: not an App."""
    return n
