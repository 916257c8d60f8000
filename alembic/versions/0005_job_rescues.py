"""jobs.rescues: how many times a job was rescued from a worker that died while holding it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

The rescue rule (``pgqueue.job.rescue_quarantines``) counts a rescue against a job only when its
worker died while holding it, separately from ``attempt``, and quarantines the job that kills
its worker again and again instead of archiving every job that happened to be claimed with it.
Adding a NOT NULL column with a constant default is a catalogue change (no table rewrite).
"""

from __future__ import annotations

from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _schema() -> str:
    name: str = context.config.attributes["pgqueue_schema"]
    return str(op.get_context().dialect.identifier_preparer.quote_schema(name))


def upgrade() -> None:
    op.execute(f"ALTER TABLE {_schema()}.jobs ADD COLUMN rescues integer NOT NULL DEFAULT 0")


def downgrade() -> None:
    op.execute(f"ALTER TABLE {_schema()}.jobs DROP COLUMN IF EXISTS rescues")
