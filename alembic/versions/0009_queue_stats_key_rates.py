"""queue_stats.waiting_for_limit counts the ready keyed jobs that their key's rate holds back

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

Revision 0006's view counted a ready keyed job as held back only when its key had no free
running slot (with ``coalesce(key_concurrency, 1)``). Since revision 0007 a key can also be held
back by its rate (``key_rate_limit`` starts per ``key_rate_period_s``), and with only a per-key
rate a key's running jobs are not capped at all (the claim's rule). The view now counts as the
claim does, per key rather than per job (one pass over the keyed jobs, not a count of running
rows for each of them). Same columns: ``CREATE OR REPLACE`` both ways.

The DDL is written out so this revision stays what it was when it shipped. ``{s}`` is the
target schema, quoted by SQLAlchemy's identifier preparer.
"""

from __future__ import annotations

from alembic import context, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _schema() -> str:
    name: str = context.config.attributes["pgqueue_schema"]
    return str(op.get_context().dialect.identifier_preparer.quote_schema(name))


UPGRADE = """
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
    -- ready keyed jobs that their key holds back: no free slot (key_concurrency; 1 when the
    -- queue sets neither key_concurrency nor key_rate_limit, as the claim counts it) or no
    -- start left in the key's rate window (key_rate_limit per key_rate_period_s)
    (SELECT coalesce(sum(w.n), 0)::bigint FROM (
        SELECT j.concurrency_key AS k, count(*) AS n FROM {s}.jobs j
         WHERE j.queue = n.name AND j.state = 'waiting' AND j.run_at <= now()
           AND j.concurrency_key IS NOT NULL
         GROUP BY j.concurrency_key) w
      LEFT JOIN (
        SELECT r.concurrency_key AS k, count(*) AS n FROM {s}.jobs r
         WHERE r.queue = n.name AND r.state = 'running' AND r.concurrency_key IS NOT NULL
         GROUP BY r.concurrency_key) kr ON kr.k = w.k
      LEFT JOIN (
        SELECT st.concurrency_key AS k, count(*) AS n FROM {s}.queue_starts st
         WHERE st.queue = n.name AND st.concurrency_key IS NOT NULL
           AND st.started_at > now() - make_interval(secs => q.key_rate_period_s)
         GROUP BY st.concurrency_key) ks ON ks.k = w.k
     WHERE coalesce(kr.n, 0) >= coalesce(q.key_concurrency,
                                         CASE WHEN q.key_rate_limit IS NULL THEN 1 END)
        OR coalesce(ks.n, 0) >= q.key_rate_limit) AS key_blocked
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

# revision 0006's view, put back by the downgrade
DOWNGRADE = """
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


def upgrade() -> None:
    op.execute(UPGRADE.format(s=_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.format(s=_schema()))
