"""The public surface: what ``import pgqueue`` offers, and that it is documented."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import pgqueue
import pgqueue._embedded
import pgqueue._logging
import pgqueue.cli
import pgqueue.cli._format
import pgqueue.cli.demo
import pgqueue.errors
import pgqueue.migrations


def test_all_names_exist_once() -> None:
    assert len(pgqueue.__all__) == len(set(pgqueue.__all__))
    for name in pgqueue.__all__:
        assert hasattr(pgqueue, name), name


def test_every_error_is_exported_and_one_hierarchy() -> None:
    for name in pgqueue.errors.__all__:
        error = getattr(pgqueue.errors, name)
        assert name in pgqueue.__all__ and getattr(pgqueue, name) is error
        assert issubclass(error, pgqueue.PgQueueError)


def test_no_exported_error_that_is_never_raised() -> None:
    assert not hasattr(pgqueue, "JobTimeoutError")
    assert not hasattr(pgqueue.errors, "JobTimeoutError")


def test_exports_are_documented() -> None:
    for name in pgqueue.__all__:
        obj = getattr(pgqueue, name)
        if callable(obj):
            assert inspect.getdoc(obj), name


def _public_callables(module: ModuleType) -> list[tuple[str, object]]:
    """``module.__all__``'s callables, and the public methods of its classes."""
    found: list[tuple[str, object]] = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if not callable(obj):
            continue
        found.append((f"{module.__name__}.{name}", obj))
        if inspect.isclass(obj) and obj.__module__.startswith(module.__name__):
            for attr, value in vars(obj).items():
                if not attr.startswith("_") and (callable(value) or isinstance(value, property)):
                    found.append((f"{module.__name__}.{name}.{attr}", value))
    return found


@pytest.mark.parametrize("module", [pgqueue.migrations, pgqueue.errors, pgqueue._logging,
                                    pgqueue.cli, pgqueue.cli._format, pgqueue.cli.demo,
                                    pgqueue._embedded], ids=lambda m: m.__name__)
def test_public_callables_have_docstrings(module: ModuleType) -> None:
    assert inspect.getdoc(module)
    missing = [name for name, obj in _public_callables(module) if not inspect.getdoc(obj)]
    assert not missing
