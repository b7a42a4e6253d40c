"""digest indexes: a team's open deals by owner and status, a deal's entries by kind and time

Without them SQLite reads every open deal (status) or every decision (kind) in the table for
each digest: half a second for a ten-person team on 100k deals and 1M entries.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 18:00:00
"""
from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_opportunities_owner_status', 'opportunities', ['owner_id', 'status'])
    op.create_index('ix_timeline_entries_opp_kind_time', 'timeline_entries', ['opportunity_id', 'kind', 'occurred_at'])


def downgrade() -> None:
    op.drop_index('ix_timeline_entries_opp_kind_time', table_name='timeline_entries')
    op.drop_index('ix_opportunities_owner_status', table_name='opportunities')
