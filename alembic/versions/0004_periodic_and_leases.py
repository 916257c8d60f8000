"""periodic jobs and the cluster leader: schedules, leases, the periodic_schedules view

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-29

The DDL is written out (not generated from the live metadata) so this revision stays what it was
when it shipped. ``{s}`` is the target schema, quoted by SQLAlchemy's identifier preparer.
"""

from __future__ import annotations

from alembic import context, op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def _schema() -> str:
    name: str = context.config.attributes["pgqueue_schema"]
    return str(op.get_context().dialect.identifier_preparer.quote_schema(name))


UPGRADE = """
-- One row per periodic job declared in code. last_tick is the newest tick claimed: a worker
-- fires a tick by moving it forward with a compare-and-set (UPDATE ... WHERE last_tick = the
-- value it read) in the same statement that inserts the tick's job, so each tick fires once.
CREATE TABLE {s}.schedules (
    name text PRIMARY KEY,
    spec text NOT NULL,
    timezone text NOT NULL DEFAULT 'UTC',
    catch_up text NOT NULL DEFAULT 'latest',
    task text NOT NULL,
    queue text NOT NULL,
    args jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    priority smallint NOT NULL DEFAULT 20,
    max_attempts integer NOT NULL DEFAULT 5,
    timeout_s double precision,
    meta jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    paused boolean NOT NULL DEFAULT false,
    stale boolean NOT NULL DEFAULT false,
    last_tick timestamptz NOT NULL DEFAULT now(),
    next_tick timestamptz,
    last_fired_at timestamptz,
    seen_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_catch_up_check CHECK (catch_up IN ('latest', 'all', 'skip'))
);

-- Named leases with an expiry (the cluster leader's is 'leader'). A row rather than a session
-- advisory lock: it survives PgBouncer in transaction mode and a dead holder simply expires.
CREATE TABLE {s}.leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);

-- Periodic jobs for dashboards and `pgqueue periodic list`: last and next tick, paused, stale
-- (no longer declared by the code of the workers that synced last).
CREATE VIEW {s}.periodic_schedules AS
SELECT name, spec, timezone, catch_up, task, queue, args, paused, stale, last_tick, next_tick,
       last_fired_at, seen_at,
       CASE WHEN paused OR stale THEN NULL ELSE next_tick END AS next_run
  FROM {s}.schedules;
"""

DOWNGRADE = """
DROP VIEW IF EXISTS {s}.periodic_schedules;
DROP TABLE IF EXISTS {s}.leases;
DROP TABLE IF EXISTS {s}.schedules;
"""


def upgrade() -> None:
    op.execute(UPGRADE.format(s=_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.format(s=_schema()))
