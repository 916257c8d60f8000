"""The behavioural suite's PostgreSQL scenarios, through a real PgBouncer in transaction mode.

Every scenario of ``tests/drivers/`` that takes ``driver_app`` runs here once more, on an App
whose database URL is a PgBouncer (``pool_mode = transaction``, ``default_pool_size = 4``, see
:mod:`tests.pgbouncer`) with ``pooler="transaction"``, and whose workers LISTEN on a direct
``listen_url``: enqueue (single, bulk through COPY, in the caller's transaction -- the caller's
connection goes through PgBouncer too), claims (plain and limited), completions batched and in
a transaction, retries, snoozes, pause/resume, cancel, rescue, unique keys, periodic schedules,
leases and queue limits. ``tests/test_pgbouncer.py`` has what is particular to the pooler.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

import pgqueue
from tests.drivers import test_behaviour, test_outcome, test_rescue_rule, test_snooze
from tests.pgbouncer import PgBouncer

# one xdist worker runs the PgBouncer tests, beside the other tests that start servers
pytestmark = pytest.mark.xdist_group("embedded")


def _scenarios() -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    # (test_bad_neighbours' poison jobs test the executor, not the connections: not repeated)
    for module in (test_behaviour, test_outcome, test_snooze, test_rescue_rule):
        for name, fn in vars(module).items():
            if (name.startswith("test_") and callable(fn)
                    and "driver_app" in inspect.signature(fn).parameters):
                found[name] = fn
    return found


globals().update(_scenarios())


@pytest.fixture
def driver_kind_app(request: pytest.FixtureRequest, pgbouncer: PgBouncer,
                    clean: str) -> pgqueue.App:
    """Overrides the suite's driver parameter: postgres through PgBouncer only."""
    return pgqueue.App(database_url=pgbouncer.url(clean), pooler="transaction",
                       listen_url=clean)
