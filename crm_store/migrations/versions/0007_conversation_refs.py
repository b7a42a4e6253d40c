"""conversation references: how to reach a Teams user's 1:1 chat or a team later (proactive messages)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 20:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'conversation_refs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('platform', sa.String(length=16), nullable=False),
        sa.Column('scope', sa.String(length=16), nullable=False),
        sa.Column('key', sa.String(length=128), nullable=False),
        sa.Column('reference', sa.JSON(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_conversation_refs')),
        sa.UniqueConstraint('platform', 'scope', 'key', name=op.f('uq_conversation_refs_platform_scope_key')),
    )


def downgrade() -> None:
    op.drop_table('conversation_refs')
