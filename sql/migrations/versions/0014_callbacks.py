"""callbacks: client systems' callback endpoints and the outbox of their status events

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 04:30:00.000000

An external system registers a callback URL and the events it wants; every such change of
its communications is written to ``callback_outbox`` in the transaction that changes the
state, and the callbacks daemon POSTs it, signed, at least once, in order per entry.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('callback_endpoints',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('system_id', BIG_ID, nullable=False),
    sa.Column('api_key_id', BIG_ID, nullable=True),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('events', sa.String(length=400), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('consecutive_failures', sa.Integer(), server_default='0', nullable=False),
    sa.Column('disabled_at', sa.DateTime(), nullable=True),
    sa.Column('disabled_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), server_default=sa.text('CURRENT_TIMESTAMP'),
              nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'],
                            name=op.f('fk_callback_endpoints_api_key_id_api_keys')),
    sa.ForeignKeyConstraint(['system_id'], ['external_systems.id'],
                            name=op.f('fk_callback_endpoints_system_id_external_systems')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_callback_endpoints'))
    )
    with op.batch_alter_table('callback_endpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_callback_endpoints_system_id'), ['system_id'],
                              unique=False)
    op.create_table('callback_outbox',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('endpoint_id', sa.BigInteger(), nullable=False),
    sa.Column('entry_kind', sa.String(length=8), nullable=False),
    sa.Column('entry_id', sa.BigInteger(), nullable=False),
    sa.Column('header_id', sa.BigInteger(), nullable=True),
    sa.Column('detail_id', sa.BigInteger(), nullable=True),
    sa.Column('event', sa.String(length=16), nullable=False),
    sa.Column('entry_state', sa.String(length=32), nullable=True),
    sa.Column('code', sa.String(length=64), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_description', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('delivered_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_by', sa.String(length=128), nullable=True),
    sa.Column('lease_until', sa.DateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_callback_outbox')),
    sa.UniqueConstraint('endpoint_id', 'entry_kind', 'entry_id', 'seq',
                        name=op.f('uq_callback_outbox_endpoint_id'))
    )
    with op.batch_alter_table('callback_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_callback_outbox_work', ['state', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('callback_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_callback_outbox_work')
    op.drop_table('callback_outbox')
    with op.batch_alter_table('callback_endpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_callback_endpoints_system_id'))
    op.drop_table('callback_endpoints')
