"""per-key rate limits: queues.key_rate_limit / key_rate_period_s, starts logged with their key

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

The DDL is written out (not generated from the live metadata) so this revision stays what it was
when it shipped. ``{s}`` is the target schema, quoted by SQLAlchemy's identifier preparer.
"""

from __future__ import annotations

from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _schema() -> str:
    name: str = context.config.attributes["pgqueue_schema"]
    return str(op.get_context().dialect.identifier_preparer.quote_schema(name))


UPGRADE = """
-- At most key_rate_limit starts of each concurrency key per key_rate_period_s seconds
-- (NULL: none), enforced by the limited claim like key_concurrency.
ALTER TABLE {s}.queues
    ADD COLUMN key_rate_limit integer,
    ADD COLUMN key_rate_period_s double precision,
    ADD CONSTRAINT queues_key_rate_check CHECK (
        (key_rate_limit IS NULL AND key_rate_period_s IS NULL)
        OR (key_rate_limit > 0 AND key_rate_period_s > 0));

-- Each logged start carries its job's key; a key's starts are counted through this index.
ALTER TABLE {s}.queue_starts ADD COLUMN concurrency_key text;
CREATE INDEX queue_starts_key_idx ON {s}.queue_starts (queue, concurrency_key, started_at)
    WHERE concurrency_key IS NOT NULL;
"""

DOWNGRADE = """
DROP INDEX IF EXISTS {s}.queue_starts_key_idx;
ALTER TABLE {s}.queue_starts DROP COLUMN IF EXISTS concurrency_key;
ALTER TABLE {s}.queues
    DROP CONSTRAINT IF EXISTS queues_key_rate_check,
    DROP COLUMN IF EXISTS key_rate_period_s,
    DROP COLUMN IF EXISTS key_rate_limit;
"""


def upgrade() -> None:
    op.execute(UPGRADE.format(s=_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.format(s=_schema()))
