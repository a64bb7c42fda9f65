"""sms_parts_and_receipts

Every SMS part's message id in full (receipts are matched through it; gateway_ref is cut to
128 characters), and the delivery receipts not matched yet, kept across restarts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('sms_parts',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('detail_id', BIG_ID, nullable=False),
    sa.Column('part_no', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.String(length=128), nullable=False),
    sa.Column('receipt_state', sa.String(length=16), nullable=True),
    sa.Column('receipt_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['detail_id'], ['request_details.id'],
                            name=op.f('fk_sms_parts_detail_id_request_details')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sms_parts'))
    )
    with op.batch_alter_table('sms_parts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sms_parts_detail_id'), ['detail_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sms_parts_message_id'), ['message_id'],
                              unique=False)
    op.create_table('sms_receipts',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('message_id', sa.String(length=128), nullable=False),
    sa.Column('stat', sa.String(length=16), nullable=False),
    sa.Column('err', sa.String(length=32), nullable=True),
    sa.Column('done_date', sa.String(length=32), nullable=True),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sms_receipts'))
    )
    with op.batch_alter_table('sms_receipts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sms_receipts_message_id'), ['message_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sms_receipts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sms_receipts_message_id'))
    op.drop_table('sms_receipts')
    with op.batch_alter_table('sms_parts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sms_parts_message_id'))
        batch_op.drop_index(batch_op.f('ix_sms_parts_detail_id'))
    op.drop_table('sms_parts')
