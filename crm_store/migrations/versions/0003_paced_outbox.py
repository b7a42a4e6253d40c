"""paced outbox: booked slots on outbox rows, and one pace per rate-limited platform call

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 14:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('slot_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'rate_buckets',
        sa.Column('platform', sa.String(length=16), nullable=False),
        sa.Column('bucket', sa.String(length=64), nullable=False),
        sa.Column('next_free_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('paused_until', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('platform', 'bucket', name='pk_rate_buckets'),
    )


def downgrade() -> None:
    op.drop_table('rate_buckets')
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('slot_at')
