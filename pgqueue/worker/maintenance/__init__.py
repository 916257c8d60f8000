"""Maintenance duties: one service per duty, one file per service, registered here.

Each duty is a :class:`pgqueue._service.PeriodicService`: it ticks on its own task, and a
failing duty logs and backs off on its own without delaying the others. To add a duty, write
one file with one ``PeriodicService`` subclass and add it to :func:`default_duties`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pgqueue._service import Clock, PeriodicService
from pgqueue.drivers.base import Driver
from pgqueue.periodic import Schedule
from pgqueue.worker.maintenance.cancel_poll import CancelPoll
from pgqueue.worker.maintenance.heartbeat import Heartbeat
from pgqueue.worker.maintenance.leader import Leader
from pgqueue.worker.maintenance.partitions import Partitions
from pgqueue.worker.maintenance.rescuer import Rescuer
from pgqueue.worker.maintenance.retention import DEFAULT_HISTORY_RETENTION, Retention
from pgqueue.worker.maintenance.scheduler import Scheduler
from pgqueue.worker.maintenance.stale_workers import StaleWorkers
from pgqueue.worker.maintenance.summary import Summary
from pgqueue.worker.maintenance.vacuum import Vacuum

__all__ = ["CancelPoll", "DutyInputs", "Heartbeat", "Leader", "Partitions", "Rescuer",
           "Retention", "Scheduler", "StaleWorkers", "Summary", "Vacuum", "default_duties"]


@dataclass(frozen=True, slots=True)
class DutyInputs:
    """What the duties of one worker are built from (the worker fills it in)."""

    driver: Driver
    worker_id: str
    lease_s: float
    rescue_interval: float
    summary_interval: float
    #: job ids whose leases must stay alive
    held: Callable[[], list[int]]
    #: cancel a job this worker runs
    cancel: Callable[[int], None]
    #: outcome counters and the running count, for the summary line
    counts: Callable[[], Mapping[str, int]]
    running: Callable[[], int]
    clock: Clock | None = None
    #: the periodic jobs this worker fires (empty, or ``periodic`` false: no scheduler)
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    periodic: bool = True
    #: the cluster leader's lease period (None: ``lease_s``)
    leader_lease_s: float | None = None
    #: seconds of history kept (None: kept for ever); failed jobs kept (None: until purged)
    history_retention_s: float | None = DEFAULT_HISTORY_RETENTION.total_seconds()
    failed_retention_s: float | None = None
    retention_interval: float = 3600.0


def default_duties(i: DutyInputs) -> list[PeriodicService]:
    """The duties every worker runs: the one place a new duty is registered.

    Cluster-wide duties (retention, pruning the worker registry) run only on the leader
    (:class:`Leader`, the first duty); the scheduler runs on every worker that declares
    schedules, the database making each tick fire once.
    """
    # cancel polling and the vacuum check run about as often as the heartbeat
    often = max(0.1, min(i.lease_s / 3, i.rescue_interval, 2.0))
    leader = Leader(i.driver, worker_id=i.worker_id, period_s=i.leader_lease_s or i.lease_s,
                    clock=i.clock)
    periodic: list[PeriodicService] = (
        [Scheduler(i.driver, schedules=i.schedules, clock=i.clock)]
        if i.periodic and i.schedules else [])
    return [
        leader,
        *periodic,
        Heartbeat(i.driver, worker_id=i.worker_id, lease_s=i.lease_s, held=i.held,
                  clock=i.clock),
        CancelPoll(i.driver, worker_id=i.worker_id, interval=often, cancel=i.cancel,
                   held=i.held, clock=i.clock),
        Rescuer(i.driver, interval=i.rescue_interval, clock=i.clock),
        StaleWorkers(i.driver, interval=i.rescue_interval, older_than_s=i.lease_s * 3,
                     leader=leader.is_leader, clock=i.clock),
        Retention(i.driver, leader=leader.is_leader, history_s=i.history_retention_s,
                  failed_s=i.failed_retention_s, every=i.retention_interval,
                  interval=leader.interval, clock=i.clock),
        Vacuum(i.driver, interval=often, clock=i.clock),
        Partitions(i.driver, clock=i.clock),
        Summary(worker_id=i.worker_id, interval=i.summary_interval, counts=i.counts,
                running=i.running, clock=i.clock),
    ]
