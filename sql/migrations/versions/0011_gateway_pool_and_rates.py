"""gateway_pool_and_rates: the gateway that sent an entry, and shared gateway rates

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 04:30:00.000000

``request_details.gateway`` names the gateway of a failover list that took (or refused) the
message; ``gateway_rates`` holds one token bucket per gateway with a maximum rate, shared by
every copy of its daemon on PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('request_details', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gateway', sa.String(length=64), nullable=True))
    op.create_table(
        'gateway_rates',
        sa.Column('gateway', sa.String(length=80), nullable=False),
        sa.Column('tokens', sa.Double(), nullable=False),
        sa.Column('refilled_at', sa.Double(), nullable=False),
        sa.Column('granted', sa.Integer(), server_default='0', nullable=False),
        sa.Column('slow_rate', sa.Double(), nullable=True),
        sa.Column('slow_until', sa.Double(), server_default='0', nullable=False),
        sa.Column('slowed_at', sa.Double(), server_default='0', nullable=False),
        sa.PrimaryKeyConstraint('gateway', name=op.f('pk_gateway_rates')),
    )


def downgrade() -> None:
    op.drop_table('gateway_rates')
    with op.batch_alter_table('request_details', schema=None) as batch_op:
        batch_op.drop_column('gateway')
