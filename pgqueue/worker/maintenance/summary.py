"""Summary: one INFO line now and then with what the worker did.

Jobs and attempts are counted apart: a job is *done* when it ends for good (succeeded, failed,
cancelled); every outcome, retries and snoozes included, ends one *attempt*. A job retried
twice before it succeeds is 1 job and 3 attempts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from pgqueue._service import Clock, PeriodicService

__all__ = ["DONE_OUTCOMES", "Summary", "describe_counts"]

#: the outcomes that end a job for good (the others -- retried, snoozed -- end an attempt only)
DONE_OUTCOMES = ("succeeded", "failed", "cancelled")


def describe_counts(counts: Mapping[str, int]) -> str:
    """``7 jobs done (succeeded 6, failed 1), 15 attempts (retried 8)`` from outcome counts."""
    done = {k: v for k, v in counts.items() if k in DONE_OUTCOMES and v}
    other = {k: v for k, v in counts.items() if k not in DONE_OUTCOMES and v}
    jobs, attempts = sum(done.values()), sum(done.values()) + sum(other.values())

    def detail(d: Mapping[str, int]) -> str:
        return f" ({', '.join(f'{k} {v}' for k, v in d.items())})" if d else ""

    return (f"{jobs} job{'' if jobs == 1 else 's'} done{detail(done)}, {attempts} "
            f"attempt{'' if attempts == 1 else 's'}{detail(other)}")


class Summary(PeriodicService):
    """Every ``interval`` seconds, log the jobs done and attempts made since the last line and
    the number of running jobs (``worker <id>: last 60 s 7 jobs done (succeeded 7), 9 attempts
    (retried 2), running 3``; ``idle`` when nothing happened). The outcome counts are the
    line's extra fields, with ``jobs`` and ``attempts``."""

    name = "summary"

    def __init__(self, *, worker_id: str, interval: float, counts: Callable[[], Mapping[str, int]],
                 running: Callable[[], int], clock: Clock | None = None) -> None:
        super().__init__(interval=interval, first_delay=interval, clock=clock,
                         logger=logging.getLogger("pgqueue.worker"))
        self.worker_id = worker_id
        self.counts = counts
        self.running = running
        self._last = dict(counts())
        self._since = self.clock.monotonic()

    async def tick(self) -> None:
        now, counts = self.clock.monotonic(), dict(self.counts())
        delta = {k: v - self._last.get(k, 0) for k, v in counts.items()
                 if v - self._last.get(k, 0)}
        jobs = sum(v for k, v in delta.items() if k in DONE_OUTCOMES)
        self.log.info("worker %s: last %.0f s %s, running %d", self.worker_id, now - self._since,
                      describe_counts(delta) if delta else "idle", self.running(),
                      extra={"event": "summary", "worker": self.worker_id, **delta,
                             "jobs": jobs, "attempts": sum(delta.values())})
        self._last, self._since = counts, now
