"""digest delivery: when each subscription is next due and on which platform; what each run
covered, the pipeline it showed (the next digest compares with it) and how far its send got

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 16:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('digest_subscriptions') as batch:
        batch.add_column(sa.Column('platform', sa.String(length=16), nullable=False, server_default='slack'))
        batch.add_column(sa.Column('next_due_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_digest_subscriptions_due', 'digest_subscriptions', ['enabled', 'next_due_at'])
    with op.batch_alter_table('digest_runs') as batch:
        batch.add_column(sa.Column('window_start', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('window_end', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('snapshot', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('message_ref', sa.String(length=128), nullable=True))
        batch.add_column(sa.Column('file_ref', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('digest_runs') as batch:
        for column in ('file_ref', 'message_ref', 'snapshot', 'window_end', 'window_start'):
            batch.drop_column(column)
    op.drop_index('ix_digest_subscriptions_due', table_name='digest_subscriptions')
    with op.batch_alter_table('digest_subscriptions') as batch:
        batch.drop_column('next_due_at')
        batch.drop_column('platform')
