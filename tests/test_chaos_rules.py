"""The chaos suite's verdict on a good job found in the archive (``benchmarks/chaos.py``).

The rescue rule promises that innocents are never quarantined for a *killer's* deaths; a job
that its worker dies under three times, each time the prime suspect, is quarantined whatever
killed the worker (CONTRIBUTING.md, "Rescue"). The suite's check must fail on the first and may
only excuse the second when its own record shows the deaths.
"""

from __future__ import annotations

import datetime as dt

from benchmarks.chaos import Kill, _deaths_by_job, _quarantined_for_unrelated_kills
from pgqueue.job import QUARANTINE_AFTER, quarantine_reason_for

AT = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
REASON = quarantine_reason_for(QUARANTINE_AFTER)


def _kill(n: int, jobs: list[int], *, poison: bool) -> Kill:
    return Kill(n, 1000 + n, [f"w{n}"], AT, [(j, f"w{n}", None) for j in jobs], poison=poison)


def test_deaths_are_listed_per_job_in_kill_order() -> None:
    kills = [_kill(6, [1159, 1202], poison=True), _kill(14, [1159, 1202], poison=True),
             _kill(18, [1159], poison=False)]
    deaths = _deaths_by_job(kills)
    assert deaths[1159] == [(6, True), (14, True), (18, False)]
    assert deaths[1202] == [(6, True), (14, True)]
    assert 1 not in deaths


def test_a_quarantine_with_a_death_no_job_caused_is_the_rules_documented_limit() -> None:
    # the failing CI run's job 1159: twice beside the killer (ties), then alone on a worker the
    # suite SIGKILLed
    assert _quarantined_for_unrelated_kills(REASON, [(6, True), (14, True), (18, False)])


def test_a_quarantine_for_killers_deaths_alone_is_a_failure() -> None:
    assert not _quarantined_for_unrelated_kills(REASON, [(6, True), (14, True), (18, True)])


def test_a_quarantine_without_enough_recorded_deaths_is_a_failure() -> None:
    assert not _quarantined_for_unrelated_kills(REASON, [(6, True), (18, False)])
    assert not _quarantined_for_unrelated_kills(REASON, [])


def test_another_archive_reason_is_a_failure() -> None:
    assert not _quarantined_for_unrelated_kills("ValueError: boom", [(1, False)] * 3)
