"""suppressions: the addresses no communication goes to, and the soft bounces counted

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 04:10:00.000000

A hard bounce, a complaint (marketing only), an unregistered push token, an SMSC's word that a
number does not exist, or an operator adds an address; the Comms Monitor rejects targets on
the list ``SUPPRESSED``. Removed rows stay, with who removed them and why.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('suppressions',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('address', sa.Text(), nullable=False),
    sa.Column('media', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('source_detail_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('removed_at', sa.DateTime(), nullable=True),
    sa.Column('removed_by', sa.String(length=128), nullable=True),
    sa.Column('removal_reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suppressions'))
    )
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.create_index('ix_suppressions_lookup', ['address', 'media'], unique=False)
    op.create_table('soft_bounces',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('address', sa.Text(), nullable=False),
    sa.Column('media', sa.String(length=16), nullable=False),
    sa.Column('source_detail_id', sa.BigInteger(), nullable=True),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_soft_bounces'))
    )
    with op.batch_alter_table('soft_bounces', schema=None) as batch_op:
        batch_op.create_index('ix_soft_bounces_lookup', ['address', 'media', 'at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('soft_bounces', schema=None) as batch_op:
        batch_op.drop_index('ix_soft_bounces_lookup')
    op.drop_table('soft_bounces')
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.drop_index('ix_suppressions_lookup')
    op.drop_table('suppressions')
