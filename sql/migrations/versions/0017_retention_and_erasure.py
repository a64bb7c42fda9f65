"""retention_and_erasure: what the retention sweep and an erasure removed, and when

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 05:00:00.000000

``purged_at`` / ``purged_by`` on queue entries (body and subject), documents (the copy in the
database and in the store) and the communications log (subject and content) say that the
content was removed on purpose — by the retention policy or an erasure — so that agents see
that rather than an error. ``erasures`` records each erasure: the pseudonym that replaced the
person's reference, when, by whom, and how many rows of each kind were touched.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

_PURGED = ('request_details', 'documents', 'communications')


def upgrade() -> None:
    for table in _PURGED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('purged_at', sa.DateTime(), nullable=True))
            batch_op.add_column(sa.Column('purged_by', sa.String(length=16), nullable=True))
    op.create_table(
        'erasures',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('pseudonym', sa.String(length=64), nullable=False),
        sa.Column('erased_at', sa.DateTime(), nullable=False),
        sa.Column('erased_by', sa.String(length=128), nullable=False),
        sa.Column('counts', sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_erasures')),
        sa.UniqueConstraint('pseudonym', name=op.f('uq_erasures_pseudonym')),
    )


def downgrade() -> None:
    op.drop_table('erasures')
    for table in reversed(_PURGED):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('purged_by')
            batch_op.drop_column('purged_at')
