"""The pytest plugin, run by pytester on a small project: fixtures, the marker's driver and
mode, per-test isolation on the memory driver and on PostgreSQL, configuration errors."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

JOBS = '''
import pgqueue

app = pgqueue.App()
INITIAL = (app.database_url, app.schema)
sent = []

@app.task(name="send_email", queue="emails")
def send_email(to: str) -> None:
    sent.append(to)

@app.task(name="flaky", max_attempts=2)
def flaky() -> None:
    raise RuntimeError("boom")
'''

TESTS = '''
import pytest
import pgqueue
from jobs import INITIAL, app, send_email, sent

DRIVERS = [pytest.param(name, marks=pytest.mark.pgqueue(driver=name))
           for name in ("memory", "postgres")]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("attempt", [1, 2])
def test_isolated(pgqueue_app, pgqueue_testing, driver, attempt):
    assert pgqueue_app is app and app.driver.name == driver
    assert pgqueue_testing.enqueued_jobs() == []
    assert app.count("emails") == 0  # the other attempt's job is gone
    send_email.enqueue(to=f"{driver}{attempt}@b.c")
    pgqueue_testing.assert_enqueued(send_email, args={"to": f"{driver}{attempt}@b.c"})


@pytest.mark.pgqueue(driver="postgres")
def test_postgres(pgqueue_app, pgqueue_testing):
    assert pgqueue_app.driver.name == "postgres"
    assert pgqueue_app.schema.startswith("pgqueue_test_")
    send_email.enqueue(to="pg@b.c")
    assert app.count("emails") == 1
    result = pgqueue_testing.drain(with_retries=True)
    assert result.succeeded == 1


@pytest.mark.pgqueue(driver="postgres")
def test_postgres_again_sees_nothing(pgqueue_app, pgqueue_testing):
    assert app.count("emails") == 0
    app.enqueue("flaky")
    result = pgqueue_testing.drain(with_retries=True)
    assert (result.retried, result.failed) == (1, 1)


def test_memory_is_the_default(pgqueue_app, pgqueue_testing):
    assert pgqueue_app.driver.name == "memory"
    assert pgqueue_testing.mode == "manual"


@pytest.mark.pgqueue(mode="inline")
def test_inline(pgqueue_testing):
    sent.clear()
    send_email.enqueue(to="inline@b.c")
    assert sent == ["inline@b.c"]


def test_app_restored_after_the_tests():
    assert (app.database_url, app.schema) == INITIAL
'''


def _project(pytester: pytest.Pytester, dsn: str) -> None:
    pytester.makepyfile(jobs=JOBS, test_jobs=TESTS)
    pytester.makeini(f"""
        [pytest]
        pgqueue_app = jobs:app
        pgqueue_database_url = {dsn}
    """)
    pytester.syspathinsert()


def test_plugin_fixtures_marker_and_isolation(pytester: pytest.Pytester, dsn: str) -> None:
    _project(pytester, dsn)
    # the order matters: test_app_restored_after_the_tests runs last
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9)


def test_plugin_schema_is_dropped_at_the_end(pytester: pytest.Pytester, dsn: str) -> None:
    import psycopg

    _project(pytester, dsn)
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:xdist", "-k", "test_postgres")
    result.assert_outcomes(passed=2)
    with psycopg.connect(dsn) as conn:
        left = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE "
                            "'pgqueue_test_%'").fetchone()
    assert left == (0,)


def test_plugin_configuration_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x='''
        import pytest

        @pytest.mark.pgqueue(driver="oracle")
        def test_bad_driver(pgqueue_app):
            pass
    ''')
    pytester.makeconftest('''
        import pytest
        import pgqueue

        @pytest.fixture
        def pgqueue_base_app():
            return pgqueue.App(driver="memory")
    ''')
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:xdist")
    result.stdout.fnmatch_lines(["*pgqueue driver must be one of memory, postgres*"])


def test_plugin_without_app_configured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_y='''
        def test_needs_app(pgqueue_testing):
            pass
    ''')
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:xdist")
    result.stdout.fnmatch_lines(["*set pgqueue_app = 'module:attribute'*"])
