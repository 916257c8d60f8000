"""jobs.snoozes: how many times a job was snoozed (bounded by its task's max_snoozes)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

A ``Snooze`` gives its attempt back, so without a count a handler that always snoozes would keep
its job alive forever. The column is NOT NULL with a constant default: PostgreSQL 11+ adds it
without rewriting the table (existing rows read 0). The DDL is written out, as in 0001.
"""

from __future__ import annotations

from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _schema() -> str:
    name: str = context.config.attributes["pgqueue_schema"]
    return str(op.get_context().dialect.identifier_preparer.quote_schema(name))


UPGRADE = """
ALTER TABLE {s}.jobs ADD COLUMN snoozes integer NOT NULL DEFAULT 0;
"""

DOWNGRADE = """
ALTER TABLE {s}.jobs DROP COLUMN IF EXISTS snoozes;
"""


def upgrade() -> None:
    op.execute(UPGRADE.format(s=_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.format(s=_schema()))
