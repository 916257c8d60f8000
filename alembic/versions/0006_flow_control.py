"""flow control: queue limits (concurrency, per-key, rate), concurrency keys, queue_stats columns

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

The DDL is written out (not generated from the live metadata) so this revision stays what it was
when it shipped. ``{s}`` is the target schema, quoted by SQLAlchemy's identifier preparer.
"""

from __future__ import annotations

from alembic import context, op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _schema() -> str:
    name: str = context.config.attributes["pgqueue_schema"]
    return str(op.get_context().dialect.identifier_preparer.quote_schema(name))


# The queue_stats view of revision 0001, recreated by the downgrade.
_STATS_0001 = """
CREATE VIEW {s}.queue_stats AS
WITH names AS (
    SELECT DISTINCT queue AS name FROM {s}.jobs
    UNION SELECT name FROM {s}.queues
    UNION SELECT DISTINCT queue FROM {s}.failed_jobs
    UNION SELECT DISTINCT queue FROM {s}.job_history WHERE finished_at > now() - interval '1 hour'
)
SELECT
    n.name AS queue,
    coalesce(q.paused, false) AS paused,
    (SELECT count(*) FROM {s}.jobs j
      WHERE j.queue = n.name AND j.state = 'waiting' AND j.run_at <= now()) AS waiting,
    (SELECT count(*) FROM {s}.jobs j
      WHERE j.queue = n.name AND j.state = 'waiting' AND j.run_at > now()) AS scheduled,
    (SELECT count(*) FROM {s}.jobs j WHERE j.queue = n.name AND j.state = 'running') AS running,
    (SELECT count(*) FROM {s}.failed_jobs f WHERE f.queue = n.name) AS failed,
    (SELECT count(*) FROM {s}.failed_jobs f
      WHERE f.queue = n.name AND f.failed_at > now() - interval '1 minute') AS failed_last_minute,
    (SELECT count(*) FROM {s}.failed_jobs f
      WHERE f.queue = n.name AND f.failed_at > now() - interval '1 hour') AS failed_last_hour,
    (SELECT count(*) FROM {s}.job_history h
      WHERE h.queue = n.name AND h.finished_at > now() - interval '1 minute') AS finished_last_minute,
    (SELECT count(*) FROM {s}.job_history h
      WHERE h.queue = n.name AND h.finished_at > now() - interval '1 hour') AS finished_last_hour,
    (SELECT extract(epoch FROM now() - min(j.run_at))::double precision FROM {s}.jobs j
      WHERE j.queue = n.name AND j.state = 'waiting' AND j.run_at <= now()) AS oldest_wait_s,
    (SELECT avg(extract(epoch FROM h.finished_at - h.started_at))::double precision
       FROM {s}.job_history h
      WHERE h.queue = n.name AND h.finished_at > now() - interval '1 hour'
        AND h.started_at IS NOT NULL) AS mean_run_time_s"""

UPGRADE = """
-- Limits of a queue, enforced by the claim (NULL: none). key_concurrency caps the running jobs
-- of each concurrency key (jobs without a key are not capped by it; a keyed job in a queue
-- without key_concurrency is capped at 1 per key). rate_limit starts per rate_period_s seconds.
ALTER TABLE {s}.queues
    ADD COLUMN concurrency integer,
    ADD COLUMN key_concurrency integer,
    ADD COLUMN rate_limit integer,
    ADD COLUMN rate_period_s double precision,
    ADD CONSTRAINT queues_concurrency_check CHECK (concurrency > 0),
    ADD CONSTRAINT queues_key_concurrency_check CHECK (key_concurrency > 0),
    ADD CONSTRAINT queues_rate_check CHECK (
        (rate_limit IS NULL AND rate_period_s IS NULL)
        OR (rate_limit > 0 AND rate_period_s > 0));

-- A job's concurrency key (a tenant, a customer): at most key_concurrency running per key.
ALTER TABLE {s}.jobs ADD COLUMN concurrency_key text;

-- The unlimited claim path serves only jobs without a key; keyed jobs have their own index,
-- ordered per key (the limited claim ranks each key's jobs).
DROP INDEX {s}.jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON {s}.jobs (queue, priority, run_at, id)
    WHERE state = 'waiting' AND concurrency_key IS NULL;
CREATE INDEX jobs_key_claim_idx ON {s}.jobs (queue, concurrency_key, priority, run_at, id)
    WHERE state = 'waiting' AND concurrency_key IS NOT NULL;
-- Slots in use are counted from the running rows (few by design: bounded by the workers'
-- concurrency) through the partial index jobs_running_lease_idx: no index of their own.

-- Starts of rate-limited queues within their period (older rows are pruned by the claim).
CREATE TABLE {s}.queue_starts (
    queue text NOT NULL,
    started_at timestamptz NOT NULL
);
CREATE INDEX queue_starts_queue_idx ON {s}.queue_starts (queue, started_at);

-- queue_stats gains the limits, the slots in use and the ready jobs held back by a limit
-- (distinct from jobs waiting for a worker). Columns are appended: CREATE OR REPLACE keeps the
-- old ones in place.
CREATE OR REPLACE VIEW {s}.queue_stats AS
WITH names AS (
    SELECT DISTINCT queue AS name FROM {s}.jobs
    UNION SELECT name FROM {s}.queues
    UNION SELECT DISTINCT queue FROM {s}.failed_jobs
    UNION SELECT DISTINCT queue FROM {s}.job_history WHERE finished_at > now() - interval '1 hour'
), base AS (
SELECT
    n.name AS queue,
    coalesce(q.paused, false) AS paused,
    (SELECT count(*) FROM {s}.jobs j
      WHERE j.queue = n.name AND j.state = 'waiting' AND j.run_at <= now()) AS waiting,
    (SELECT count(*) FROM {s}.jobs j
      WHERE j.queue = n.name AND j.state = 'waiting' AND j.run_at > now()) AS scheduled,
    (SELECT count(*) FROM {s}.jobs j WHERE j.queue = n.name AND j.state = 'running') AS running,
    (SELECT count(*) FROM {s}.failed_jobs f WHERE f.queue = n.name) AS failed,
    (SELECT count(*) FROM {s}.failed_jobs f
      WHERE f.queue = n.name AND f.failed_at > now() - interval '1 minute') AS failed_last_minute,
    (SELECT count(*) FROM {s}.failed_jobs f
      WHERE f.queue = n.name AND f.failed_at > now() - interval '1 hour') AS failed_last_hour,
    (SELECT count(*) FROM {s}.job_history h
      WHERE h.queue = n.name AND h.finished_at > now() - interval '1 minute') AS finished_last_minute,
    (SELECT count(*) FROM {s}.job_history h
      WHERE h.queue = n.name AND h.finished_at > now() - interval '1 hour') AS finished_last_hour,
    (SELECT extract(epoch FROM now() - min(j.run_at))::double precision FROM {s}.jobs j
      WHERE j.queue = n.name AND j.state = 'waiting' AND j.run_at <= now()) AS oldest_wait_s,
    (SELECT avg(extract(epoch FROM h.finished_at - h.started_at))::double precision
       FROM {s}.job_history h
      WHERE h.queue = n.name AND h.finished_at > now() - interval '1 hour'
        AND h.started_at IS NOT NULL) AS mean_run_time_s,
    q.concurrency, q.key_concurrency, q.rate_limit, q.rate_period_s,
    (SELECT count(*) FROM {s}.queue_starts st
      WHERE st.queue = n.name
        AND st.started_at > now() - make_interval(secs => q.rate_period_s)) AS rate_used,
    -- ready keyed jobs whose key has no free slot
    (SELECT count(*) FROM {s}.jobs j
      WHERE j.queue = n.name AND j.state = 'waiting' AND j.run_at <= now()
        AND j.concurrency_key IS NOT NULL
        AND (SELECT count(*) FROM {s}.jobs r
              WHERE r.queue = n.name AND r.state = 'running'
                AND r.concurrency_key = j.concurrency_key)
            >= coalesce(q.key_concurrency, 1)) AS key_blocked
FROM names n LEFT JOIN {s}.queues q ON q.name = n.name
)
SELECT queue, paused, waiting, scheduled, running, failed, failed_last_minute, failed_last_hour,
       finished_last_minute, finished_last_hour, oldest_wait_s, mean_run_time_s,
       concurrency, key_concurrency, rate_limit, rate_period_s,
       CASE WHEN concurrency IS NOT NULL THEN running END AS slots_in_use,
       rate_used,
       -- ready jobs that a limit holds back (not waiting for a worker): all of them while the
       -- queue's slots or its rate are used up, else those whose key is at its limit
       CASE WHEN (concurrency IS NOT NULL AND running >= concurrency)
                 OR (rate_limit IS NOT NULL AND rate_used >= rate_limit) THEN waiting
            ELSE key_blocked END AS waiting_for_limit
  FROM base;
"""

DOWNGRADE = """
DROP VIEW IF EXISTS {s}.queue_stats;
""" + _STATS_0001 + """
FROM names n LEFT JOIN {s}.queues q ON q.name = n.name;
DROP TABLE IF EXISTS {s}.queue_starts;
DROP INDEX IF EXISTS {s}.jobs_key_claim_idx;
DROP INDEX IF EXISTS {s}.jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON {s}.jobs (queue, priority, run_at, id) WHERE state = 'waiting';
ALTER TABLE {s}.jobs DROP COLUMN IF EXISTS concurrency_key;
ALTER TABLE {s}.queues
    DROP CONSTRAINT IF EXISTS queues_rate_check,
    DROP CONSTRAINT IF EXISTS queues_key_concurrency_check,
    DROP CONSTRAINT IF EXISTS queues_concurrency_check,
    DROP COLUMN IF EXISTS rate_period_s,
    DROP COLUMN IF EXISTS rate_limit,
    DROP COLUMN IF EXISTS key_concurrency,
    DROP COLUMN IF EXISTS concurrency;
"""


def upgrade() -> None:
    op.execute(UPGRADE.format(s=_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.format(s=_schema()))
