"""workflows: job dependencies, workflow membership, awaited jobs, durable steps

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

- ``jobs.state`` gains ``blocked``: a job waiting for its dependencies (or for the jobs it
  awaits). Blocked rows are outside every claim index (their predicates say
  ``state = 'waiting'``), so claims never read them.
- ``jobs.deps_left`` counts the dependencies not finished yet; the completion of a dependency
  decrements it under the dependent's row lock, and the one that reaches 0 unblocks it.
- ``jobs.watched``: a job has dependents or someone waits for its result. Its completion then
  takes the workflow path (release its dependents, notify waiters) in the same transaction; the
  batched completion of unwatched jobs stays one statement.
- ``job_deps``: the edges (dependent ``job_id`` waits for ``dep_id``), with the failure policy,
  where the dependency's result goes (``arg``, ``pos``), and once known its outcome and result.
- ``workflow_jobs``: which jobs a workflow (``chain``/``group``) enqueued.
- ``job_steps``: checkpoints of durable steps (``ctx.step``).
- views ``job_dependencies``, ``workflow_jobs_state`` and ``workflows``.

The DDL is written out so this revision stays what it was when it shipped. ``{s}`` is the
target schema, quoted by SQLAlchemy's identifier preparer.
"""

from __future__ import annotations

from alembic import context, op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _schema() -> str:
    name: str = context.config.attributes["pgqueue_schema"]
    return str(op.get_context().dialect.identifier_preparer.quote_schema(name))


UPGRADE = """
ALTER TABLE {s}.jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE {s}.jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('waiting', 'running', 'blocked'));
ALTER TABLE {s}.jobs
    ADD COLUMN deps_left integer NOT NULL DEFAULT 0,
    ADD COLUMN watched boolean NOT NULL DEFAULT false;

CREATE TABLE {s}.job_deps (
    job_id bigint NOT NULL,
    dep_id bigint NOT NULL,
    policy text NOT NULL DEFAULT 'cancel',
    arg text,
    pos integer,
    awaited boolean NOT NULL DEFAULT false,
    outcome text,
    result jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_deps_pkey PRIMARY KEY (dep_id, job_id),
    CONSTRAINT job_deps_policy_check CHECK (policy IN ('cancel', 'run', 'fail'))
);
CREATE INDEX job_deps_job_idx ON {s}.job_deps (job_id);

CREATE TABLE {s}.workflow_jobs (
    workflow_id text NOT NULL,
    job_id bigint NOT NULL,
    pos integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflow_jobs_pkey PRIMARY KEY (workflow_id, job_id)
);
CREATE INDEX workflow_jobs_job_idx ON {s}.workflow_jobs (job_id);

CREATE TABLE {s}.job_steps (
    job_id bigint NOT NULL,
    name text NOT NULL,
    fn text NOT NULL,
    result jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_steps_pkey PRIMARY KEY (job_id, name)
);

CREATE VIEW {s}.job_dependencies AS
SELECT e.job_id, e.dep_id, e.policy, e.arg, e.pos, e.awaited,
       coalesce(e.outcome, 'pending') AS dep_state, e.created_at
  FROM {s}.job_deps e;

-- every job of every workflow with its current state (live, finished or failed)
CREATE VIEW {s}.workflow_jobs_state AS
SELECT w.workflow_id, w.job_id, w.pos, x.task, x.state, x.started_at, x.finished_at,
       x.last_error, w.created_at
  FROM {s}.workflow_jobs w
  CROSS JOIN LATERAL (
      SELECT j.task, j.state, j.started_at, NULL::timestamptz AS finished_at, j.last_error
        FROM {s}.jobs j WHERE j.id = w.job_id
      UNION ALL
      SELECT h.task, h.state, h.started_at, h.finished_at, h.errors -> -1 ->> 'error'
        FROM {s}.job_history h WHERE h.id = w.job_id
      UNION ALL
      SELECT f.task, 'failed', f.started_at, f.failed_at, f.reason
        FROM {s}.failed_jobs f WHERE f.id = w.job_id
      LIMIT 1) x;

CREATE VIEW {s}.workflows AS
SELECT workflow_id,
       count(*) AS jobs,
       count(*) FILTER (WHERE state = 'blocked') AS blocked,
       count(*) FILTER (WHERE state = 'waiting') AS waiting,
       count(*) FILTER (WHERE state = 'running') AS running,
       count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       min(created_at) AS created_at,
       min(started_at) AS started_at,
       CASE WHEN bool_and(state IN ('succeeded', 'cancelled', 'failed'))
            THEN max(finished_at) END AS finished_at,
       min(job_id) FILTER (WHERE state = 'failed') AS failed_job
  FROM {s}.workflow_jobs_state
 GROUP BY workflow_id;
"""

DOWNGRADE = """
DROP VIEW IF EXISTS {s}.workflows;
DROP VIEW IF EXISTS {s}.workflow_jobs_state;
DROP VIEW IF EXISTS {s}.job_dependencies;
DROP TABLE IF EXISTS {s}.job_steps;
DROP TABLE IF EXISTS {s}.workflow_jobs;
DROP TABLE IF EXISTS {s}.job_deps;
DELETE FROM {s}.jobs WHERE state = 'blocked';
ALTER TABLE {s}.jobs DROP COLUMN IF EXISTS watched, DROP COLUMN IF EXISTS deps_left;
ALTER TABLE {s}.jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE {s}.jobs ADD CONSTRAINT jobs_state_check CHECK (state IN ('waiting', 'running'));
"""


def upgrade() -> None:
    op.execute(UPGRADE.format(s=_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.format(s=_schema()))
