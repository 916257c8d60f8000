"""The App's surface: capability checks made once, in the App; sync and async twins that agree;
a docstring on every public callable of the client-facing modules. No database needed."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import pgqueue
from pgqueue import app as app_module
from pgqueue import retry as retry_module
from pgqueue import task as task_module
from pgqueue.compat import backstage, velocity
from pgqueue.drivers import get_driver
from pgqueue.errors import CapabilityError


class _SpyDriver:
    """A memory driver that records the calls the App makes into it."""

    def __init__(self) -> None:
        self.inner = get_driver("memory")
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if callable(value):
            def spy(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return value(*args, **kwargs)
            return spy
        return value


@pytest.fixture
def spied() -> tuple[pgqueue.App, _SpyDriver]:
    driver = _SpyDriver()
    return pgqueue.App(driver=driver), driver


def test_conn_refused_by_the_app_before_any_driver_call(
        spied: tuple[pgqueue.App, _SpyDriver]) -> None:
    app, driver = spied
    conn: Any = object()
    calls: list[Callable[[], object]] = [
        lambda: app.enqueue("t", conn=conn),
        lambda: app.enqueue_many("t", [{}, {}], conn=conn),
        lambda: app.insert([app.build("t")], conn=conn),
        lambda: asyncio.run(app.enqueue_async("t", conn=conn)),
        lambda: asyncio.run(app.enqueue_many_async("t", [{}], conn=conn)),
        lambda: asyncio.run(app.insert_async([app.build("t")], conn=conn)),
    ]
    for call in calls:
        with pytest.raises(CapabilityError, match="memory driver cannot enqueue inside your "
                                                  "transaction; drop conn="):
            call()
    assert driver.calls == []
    assert app.count("default") == 0


def test_complete_refused_by_the_app_on_drivers_without_it() -> None:
    app = pgqueue.App(driver="memory")
    seen: list[BaseException] = []

    @app.task(name="t")
    def t() -> None:
        wrong: Any = object()
        calls: list[Callable[[], object]] = [
            lambda: app.complete(wrong), lambda: asyncio.run(app.complete_async(wrong))]
        for call in calls:
            try:
                call()
            except CapabilityError as exc:
                seen.append(exc)

    app.enqueue("t")
    asyncio.run(asyncio.wait_for(app.worker(burst=True, poll_interval=0.05).run(), 30))
    assert [str(e) for e in seen] == [
        "the memory driver cannot complete a job in your transaction; return from the handler "
        "instead, or use the postgres driver"] * 2


def test_enqueue_options_unknown_to_the_type_are_refused_at_run_time() -> None:
    app = pgqueue.App(driver="memory")
    with pytest.raises(pgqueue.ValidationError, match=r"unknown enqueue option.*colour.*allowed: "
                                                      "queue, priority, delay, run_at, "
                                                      "max_attempts, unique_key, timeout, meta"):
        app.enqueue("t", colour="red")  # type: ignore[call-arg]


def test_task_options_and_task_enqueue_share_one_path() -> None:
    app = pgqueue.App(driver="memory")

    @app.task(name="greet", queue="q", priority=7)
    def greet(name: str) -> None: ...

    plain = app.get_job(greet.enqueue(name="a"))
    tuned = app.get_job(greet.options(priority=1, queue="r").enqueue(name="b"))
    later = app.get_job(asyncio.run(greet.options(delay=60).enqueue_async(name="c")))
    assert plain is not None and (plain.queue, plain.priority) == ("q", 7)
    assert tuned is not None and (tuned.queue, tuned.priority) == ("r", 1)
    assert later is not None and later.queue == "q" and later.args == {"name": "c"}


TWIN_OWNERS = [pgqueue.App, pgqueue.Task, task_module.ConfiguredTask, backstage.Queue,
               velocity.Queue, velocity.VelocityWorker, backstage, velocity]


@pytest.mark.parametrize("owner", TWIN_OWNERS, ids=lambda o: getattr(o, "__name__", str(o)))
def test_every_async_twin_has_the_sync_signature(owner: Any) -> None:
    for name, fn in vars(owner).items():
        if not name.endswith("_async") or name.startswith("_") or not callable(fn):
            continue
        sync = getattr(owner, name.removesuffix("_async"), None)
        if sync is None:  # e.g. backstage.reset_async pairs with reset: present; others none
            continue
        assert inspect.iscoroutinefunction(fn), name
        params = [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
        want = [(p.name, p.kind, p.default)
                for p in inspect.signature(sync).parameters.values()]
        assert params == want, f"{owner}.{name} differs from its sync twin"


def _public_callables(module: ModuleType) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            found.append((name, obj))
        elif inspect.isclass(obj):
            found.append((name, obj))
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__call__":
                    continue
                if isinstance(member, property):
                    member = member.fget
                if inspect.isfunction(member):
                    found.append((f"{name}.{attr}", member))
    return found


@pytest.mark.parametrize("module", [app_module, task_module, retry_module, backstage, velocity],
                         ids=lambda m: m.__name__)
def test_every_public_callable_has_a_docstring(module: ModuleType) -> None:
    missing = [name for name, obj in _public_callables(module)
               if not (inspect.getdoc(obj) or "").strip()]
    assert missing == []
