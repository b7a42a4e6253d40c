"""deal room lifecycle: who asked for a room, hand renames, announced entries, absent people

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deal_rooms') as batch:
        batch.add_column(sa.Column('requested_by_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('renamed_by_hand', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('announced_through', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('listed_absent', sa.JSON(), nullable=False, server_default='[]'))
        batch.create_foreign_key('fk_deal_rooms_requested_by_id_users', 'users', ['requested_by_id'], ['id'])
        batch.create_index('ix_deal_rooms_status', ['status'])


def downgrade() -> None:
    with op.batch_alter_table('deal_rooms') as batch:
        batch.drop_index('ix_deal_rooms_status')
        batch.drop_constraint('fk_deal_rooms_requested_by_id_users', type_='foreignkey')
        batch.drop_column('listed_absent')
        batch.drop_column('announced_through')
        batch.drop_column('renamed_by_hand')
        batch.drop_column('requested_by_id')
