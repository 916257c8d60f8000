"""pgqueue's tables, declared once as SQLAlchemy Core metadata.

The tables are declared in the placeholder schema :data:`SCHEMA_PLACEHOLDER`; at run time the real
schema (default ``pgqueue``) is applied with SQLAlchemy's ``schema_translate_map`` or, for the raw
statements in :mod:`pgqueue.drivers.postgres.sql`, with ``psycopg.sql.Identifier``.

This module is the source of truth that the migrations in ``alembic/versions`` must produce; the
test ``tests/test_migrations.py`` compares the migrated database with this metadata.

Shapes and why:

- ``jobs`` holds live jobs only (``waiting`` and ``running``; a waiting job whose ``run_at`` is in
  the future is *scheduled*). Finished jobs leave it at once, so the hot table stays small and the
  partial index that serves the claim query only covers waiting rows. ``fillfactor`` is lowered so
  the state updates of a claim can be HOT updates.
- ``job_history`` is append-only and partitioned by day on ``finished_at``: dropping old history is
  ``DROP TABLE`` of a partition, not a ``DELETE`` that bloats.
- ``failed_jobs`` is the dead-letter archive: everything needed to inspect and re-drive a job.
- ``queues`` is per-queue state shared by every worker (``paused``, and the flow-control limits
  ``concurrency``, ``key_concurrency``, ``rate_limit``/``rate_period_s``,
  ``key_rate_limit``/``key_rate_period_s`` that the limited claim enforces); ``queue_starts``
  logs the starts (with their concurrency key) of rate-limited queues within their period.
- ``workers`` is the registry of live worker processes (heartbeats).
- ``schedules`` is the state of each periodic job (:mod:`pgqueue.periodic`): its last claimed
  tick (the compare-and-set that makes each tick fire once), pause flag, and the job template
  ``pgqueue periodic run-now`` enqueues. Rows are written by the workers that declare them.
- ``job_deps``, ``workflow_jobs`` and ``job_steps`` (revision 0008) hold workflows: dependency
  edges (a ``blocked`` job in ``jobs`` waits for its ``deps_left`` dependencies), which jobs a
  workflow enqueued, and the checkpoints of durable steps. See ``docs/workflows.md``.
- ``leases`` holds named leases with an expiry (the cluster leader's): a row, not a session
  advisory lock, so that it works behind PgBouncer in transaction mode.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pgqueue._defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, FAILED_JOBS_TABLE, JOBS_TABLE
from pgqueue.job import OUTCOMES, JobState

SCHEMA_PLACEHOLDER = "pgqueue"
VERSION_TABLE = "pgqueue_alembic_version"

__all__ = ["SCHEMA_PLACEHOLDER", "VERSION_TABLE", "metadata"]

metadata = sa.MetaData(schema=SCHEMA_PLACEHOLDER)

TS = sa.DateTime(timezone=True)
NOW = sa.func.now()

#: States of a row in ``jobs`` and in ``job_history`` (from :class:`pgqueue.job.JobState` and the
#: outcome table :data:`pgqueue.job.OUTCOMES`).
JOB_STATES = (JobState.WAITING.value, JobState.RUNNING.value, JobState.BLOCKED.value)
HISTORY_STATES = tuple(dict.fromkeys(
    r.state.value for r in OUTCOMES.values() if r.where == "job_history"))


def _state_check(states: tuple[str, ...], name: str) -> sa.CheckConstraint:
    """``CHECK (state IN (...))`` over the given states."""
    return sa.CheckConstraint(sa.column("state").in_(states), name=name)


jobs = sa.Table(
    JOBS_TABLE,
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("queue", sa.Text, nullable=False),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("args", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("priority", sa.SmallInteger, nullable=False,
              server_default=sa.text(str(DEFAULT_PRIORITY))),
    sa.Column("run_at", TS, nullable=False, server_default=NOW),
    sa.Column("state", sa.Text, nullable=False, server_default=JobState.WAITING.value),
    sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("max_attempts", sa.Integer, nullable=False,
              server_default=sa.text(str(DEFAULT_MAX_ATTEMPTS))),
    sa.Column("unique_key", sa.Text, nullable=True),
    sa.Column("timeout_s", sa.Float, nullable=True),
    sa.Column("worker_id", sa.Text, nullable=True),
    sa.Column("lease_expires_at", TS, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("errors", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("meta", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("created_at", TS, nullable=False, server_default=NOW),
    sa.Column("started_at", TS, nullable=True),
    # revision 0002: Snooze outcomes so far (a snooze gives its attempt back; this bounds it)
    sa.Column("snoozes", sa.Integer, nullable=False, server_default=sa.text("0")),
    # how many times the job was rescued from a worker that died while holding it (revision
    # 0005; the quarantine rule of pgqueue.job.rescue_quarantines)
    sa.Column("rescues", sa.Integer, nullable=False, server_default=sa.text("0")),
    # revision 0006: at most ``queues.key_concurrency`` (default 1) running jobs per key
    sa.Column("concurrency_key", sa.Text, nullable=True),
    # revision 0008: dependencies not finished yet (a ``blocked`` job), and whether the job has
    # dependents or result waiters (its completion then takes the workflow path)
    sa.Column("deps_left", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("watched", sa.Boolean, nullable=False, server_default=sa.false()),
    _state_check(JOB_STATES, "jobs_state_check"),
    sa.CheckConstraint("priority BETWEEN 0 AND 1000", name="jobs_priority_check"),
    sa.CheckConstraint("max_attempts >= 1", name="jobs_max_attempts_check"),
    sa.Index(
        "jobs_claim_idx",
        "queue",
        "priority",
        "run_at",
        "id",
        # revision 0006: keyed jobs go through the limited claim and its own index
        postgresql_where=sa.text("state = 'waiting' AND concurrency_key IS NULL"),
    ),
    sa.Index("jobs_key_claim_idx", "queue", "concurrency_key", "priority", "run_at", "id",
             postgresql_where=sa.text("state = 'waiting' AND concurrency_key IS NOT NULL")),
    sa.Index("jobs_unique_key_idx", "unique_key", unique=True,
             postgresql_where=sa.text("unique_key IS NOT NULL")),
    sa.Index(
        "jobs_running_lease_idx",
        "lease_expires_at",
        postgresql_where=sa.text("state = 'running'"),
    ),
    postgresql_with={
        "fillfactor": "70",
        "autovacuum_vacuum_scale_factor": "0.01",
        "autovacuum_vacuum_cost_delay": "0",
        "vacuum_truncate": "false",
    },
)

job_history = sa.Table(
    "job_history",
    metadata,
    sa.Column("id", sa.BigInteger, nullable=False),
    sa.Column("queue", sa.Text, nullable=False),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("args", pg.JSONB, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("errors", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("result", pg.JSONB, nullable=True),
    sa.Column("worker_id", sa.Text, nullable=True),
    sa.Column("enqueued_at", TS, nullable=False),
    sa.Column("started_at", TS, nullable=True),
    sa.Column(
        "finished_at", TS, nullable=False, server_default=NOW
    ),
    sa.PrimaryKeyConstraint("id", "finished_at", name="job_history_pkey"),
    _state_check(HISTORY_STATES, "job_history_state_check"),
    sa.Index("job_history_queue_finished_idx", "queue", "finished_at"),
    postgresql_partition_by="RANGE (finished_at)",
)

failed_jobs = sa.Table(
    FAILED_JOBS_TABLE,
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("queue", sa.Text, nullable=False),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("args", pg.JSONB, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("unique_key", sa.Text, nullable=True),
    sa.Column("timeout_s", sa.Float, nullable=True),
    sa.Column("meta", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("errors", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("enqueued_at", TS, nullable=False),
    sa.Column("started_at", TS, nullable=True),
    sa.Column("failed_at", TS, nullable=False, server_default=NOW),
    sa.Index("failed_jobs_queue_failed_idx", "queue", "failed_at"),
)

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", TS, nullable=False, server_default=NOW),
    # revision 0006: flow control (NULL: no limit); enforced by the limited claim
    sa.Column("concurrency", sa.Integer, nullable=True),
    sa.Column("key_concurrency", sa.Integer, nullable=True),
    sa.Column("rate_limit", sa.Integer, nullable=True),
    sa.Column("rate_period_s", sa.Float, nullable=True),
    sa.CheckConstraint("concurrency > 0", name="queues_concurrency_check"),
    sa.CheckConstraint("key_concurrency > 0", name="queues_key_concurrency_check"),
    sa.CheckConstraint("(rate_limit IS NULL AND rate_period_s IS NULL) "
                       "OR (rate_limit > 0 AND rate_period_s > 0)", name="queues_rate_check"),
    # revision 0007: at most key_rate_limit starts per key in key_rate_period_s seconds
    sa.Column("key_rate_limit", sa.Integer, nullable=True),
    sa.Column("key_rate_period_s", sa.Float, nullable=True),
    sa.CheckConstraint("(key_rate_limit IS NULL AND key_rate_period_s IS NULL) "
                       "OR (key_rate_limit > 0 AND key_rate_period_s > 0)",
                       name="queues_key_rate_check"),
)

#: revision 0006: the starts of rate-limited queues within their period (pruned by the claim)
queue_starts = sa.Table(
    "queue_starts",
    metadata,
    sa.Column("queue", sa.Text, nullable=False),
    sa.Column("started_at", TS, nullable=False),
    sa.Index("queue_starts_queue_idx", "queue", "started_at"),
    # revision 0007: the started job's key (per-key rate limits count a key's starts)
    sa.Column("concurrency_key", sa.Text, nullable=True),
    sa.Index("queue_starts_key_idx", "queue", "concurrency_key", "started_at",
             postgresql_where=sa.text("concurrency_key IS NOT NULL")),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("queues", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("started_at", TS, nullable=False, server_default=NOW),
    sa.Column(
        "heartbeat_at", TS, nullable=False, server_default=NOW
    ),
)

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
    sa.Column("catch_up", sa.Text, nullable=False, server_default="latest"),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("queue", sa.Text, nullable=False),
    sa.Column("args", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("priority", sa.SmallInteger, nullable=False,
              server_default=sa.text(str(DEFAULT_PRIORITY))),
    sa.Column("max_attempts", sa.Integer, nullable=False,
              server_default=sa.text(str(DEFAULT_MAX_ATTEMPTS))),
    sa.Column("timeout_s", sa.Float, nullable=True),
    sa.Column("meta", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("stale", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_tick", TS, nullable=False, server_default=NOW),
    sa.Column("next_tick", TS, nullable=True),
    sa.Column("last_fired_at", TS, nullable=True),
    sa.Column("seen_at", TS, nullable=False, server_default=NOW),
    sa.Column("created_at", TS, nullable=False, server_default=NOW),
    sa.CheckConstraint("catch_up IN ('latest', 'all', 'skip')", name="schedules_catch_up_check"),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("acquired_at", TS, nullable=False, server_default=NOW),
)

#: revision 0008: dependency edges. ``job_id`` waits for ``dep_id``; ``policy`` says what the
#: dependent does when the dependency fails for good or is cancelled; the dependency's result
#: goes into the dependent's argument ``arg`` (at index ``pos`` of a list when set); ``awaited``
#: edges come from :class:`pgqueue.Await`. ``outcome``/``result`` are set when it finishes.
job_deps = sa.Table(
    "job_deps",
    metadata,
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("dep_id", sa.BigInteger, nullable=False),
    sa.Column("policy", sa.Text, nullable=False, server_default="cancel"),
    sa.Column("arg", sa.Text, nullable=True),
    sa.Column("pos", sa.Integer, nullable=True),
    sa.Column("awaited", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("outcome", sa.Text, nullable=True),
    sa.Column("result", pg.JSONB, nullable=True),
    sa.Column("created_at", TS, nullable=False, server_default=NOW),
    sa.PrimaryKeyConstraint("dep_id", "job_id", name="job_deps_pkey"),
    sa.CheckConstraint("policy IN ('cancel', 'run', 'fail')", name="job_deps_policy_check"),
    sa.Index("job_deps_job_idx", "job_id"),
)

#: revision 0008: the jobs each workflow enqueued (``pos``: their order in the workflow)
workflow_jobs = sa.Table(
    "workflow_jobs",
    metadata,
    sa.Column("workflow_id", sa.Text, nullable=False),
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("pos", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("created_at", TS, nullable=False, server_default=NOW),
    sa.PrimaryKeyConstraint("workflow_id", "job_id", name="workflow_jobs_pkey"),
    sa.Index("workflow_jobs_job_idx", "job_id"),
)

#: revision 0008: checkpoints of durable steps (``ctx.step(name, fn)``): one row per job and
#: step name, written when the step's function returned (with ``conn=``, in its transaction)
job_steps = sa.Table(
    "job_steps",
    metadata,
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("fn", sa.Text, nullable=False),
    sa.Column("result", pg.JSONB, nullable=True),
    sa.Column("created_at", TS, nullable=False, server_default=NOW),
    sa.PrimaryKeyConstraint("job_id", "name", name="job_steps_pkey"),
)

#: Views for SQL inspection (created by the migrations; names only, for reference and tests).
#: ``queue_stats`` is revision 0006's, with ``waiting_for_limit`` counting keyed jobs as the
#: limited claim holds them back since revision 0009 (a key at its ``key_concurrency``, or at its
#: ``key_rate_limit`` in the window).
VIEWS = ("queue_stats", "all_jobs", "periodic_schedules", "job_dependencies",
         "workflow_jobs_state", "workflows")
