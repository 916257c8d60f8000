"""Retry policies: how long to wait before the next attempt of a failed job.

The default follows the backstage seed: about 1 s, 2 s, 4 s, 8 s between attempts (exponential,
base 1 s, factor 2) with +/-10 % jitter so that a burst of failures does not retry in lockstep.
Any callable ``(attempt) -> seconds`` works as a policy, and :meth:`RetryPolicy.from_tenacity`
adapts one of tenacity's wait strategies (``wait_exponential``, ``wait_random_exponential``...).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Backoff", "RetryPolicy", "constant", "exponential"]


class Backoff(Protocol):
    """A retry policy: any callable ``(attempt) -> seconds``, such as :class:`RetryPolicy`,
    ``lambda attempt: 30.0`` or :meth:`RetryPolicy.from_tenacity`."""

    def __call__(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first run)."""
        ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``base * factor ** (attempt - 1)``, capped at ``max_delay``, with
    a relative ``jitter`` (0.1 = +/-10 %).

    Defaults: ``base`` 1 s, ``factor`` 2, ``max_delay`` 3600 s, ``jitter`` 0.1, so about 1, 2,
    4, 8 s between attempts. Raises ValueError for a negative base or delay, a factor below 1 or
    a jitter outside 0-1::

        @app.task(retry=RetryPolicy(base=5, max_delay=600))
        def sync_account(account_id: int) -> None: ...
    """

    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.max_delay < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("RetryPolicy needs base >= 0, factor >= 1, max_delay >= 0 and "
                             "0 <= jitter <= 1")

    def __call__(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1 for the first run), >= 0."""
        raw = min(self.max_delay, self.base * self.factor ** max(0, attempt - 1))
        if self.jitter:
            raw *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, raw)

    @staticmethod
    def from_tenacity(wait: Callable[[Any], float]) -> Backoff:
        """Use a tenacity wait strategy as a policy: it is asked for the wait after attempt
        number ``attempt``::

            RetryPolicy.from_tenacity(tenacity.wait_random_exponential(multiplier=1, max=60))
        """
        from tenacity import RetryCallState

        def policy(attempt: int) -> float:
            state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
            state.attempt_number = attempt
            return float(wait(state))

        return policy


def exponential(base: float = 1.0, factor: float = 2.0, max_delay: float = 3600.0,
                jitter: float = 0.1) -> RetryPolicy:
    """``RetryPolicy(base, factor, max_delay, jitter)``: exponential backoff (defaults: 1 s,
    doubling, capped at an hour, +/-10 % jitter)."""
    return RetryPolicy(base=base, factor=factor, max_delay=max_delay, jitter=jitter)


def constant(seconds: float) -> RetryPolicy:
    """Wait the same ``seconds`` before every retry (no growth, no jitter)."""
    return RetryPolicy(base=seconds, factor=1.0, max_delay=seconds, jitter=0.0)
