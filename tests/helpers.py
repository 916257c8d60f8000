"""Helpers shared by tests (import from tests.helpers)."""

from tests.conftest import scalar, truncate, wait_for

__all__ = ["scalar", "truncate", "wait_for"]
