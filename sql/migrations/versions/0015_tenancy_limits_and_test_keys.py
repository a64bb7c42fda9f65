"""tenancy_limits_and_test_keys: per-system and per-key limits, their counters, test traffic

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 04:20:00.000000

External systems and API keys may carry a requests-per-second limit and daily limits per
media (NULL: unlimited, as before); ``usage_counters`` holds the counts, one row per scope,
metric and period, incremented atomically by ``INSERT … ON CONFLICT DO UPDATE``. An API key
is of kind ``live`` (default) or ``test``; the headers and details a test key causes say
``is_test`` and are sent only to the simulator.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'usage_counters',
        sa.Column('scope', sa.String(length=40), nullable=False),
        sa.Column('metric', sa.String(length=32), nullable=False),
        sa.Column('period', sa.String(length=16), nullable=False),
        sa.Column('window_start', sa.DateTime(), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('scope', 'metric', 'period', name=op.f('pk_usage_counters')),
    )
    for table in ('external_systems', 'api_keys'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('rate_limit_per_second', sa.Integer(), nullable=True))
            batch_op.add_column(sa.Column('daily_limits', sa.JSON(), nullable=True))
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=8), server_default='live',
                                      nullable=False))
    for table in ('request_headers', 'request_details'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('is_test', sa.Boolean(),
                                          server_default=sa.text('false'), nullable=False))


def downgrade() -> None:
    for table in ('request_details', 'request_headers'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('is_test')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('kind')
    for table in ('api_keys', 'external_systems'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('daily_limits')
            batch_op.drop_column('rate_limit_per_second')
    op.drop_table('usage_counters')
