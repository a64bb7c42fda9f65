"""fair_lanes: the requesting system on each queue entry, and the indexes of per-system claims

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 04:20:00.000000

Claims interleave external systems within a priority (one system's backlog delays another's
entries by at most one batch): each stage reads each system's next entries by
``(state[, media], requested_by_system_id, priority, id)``. A queue entry carries the system
that made its request (copied from its header by the Comms Monitor), so the send daemons and
merge jobs need no join.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('request_details', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requested_by_system_id',
                                      sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_request_details_requested_by_system_id_external_systems'),
            'external_systems', ['requested_by_system_id'], ['id'])
        batch_op.create_index('ix_request_details_lanes',
                              ['state', 'media', 'requested_by_system_id', 'priority', 'id'],
                              unique=False)
    with op.batch_alter_table('request_headers', schema=None) as batch_op:
        batch_op.create_index('ix_request_headers_lanes',
                              ['status', 'requested_by_system_id', 'priority', 'id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('request_headers', schema=None) as batch_op:
        batch_op.drop_index('ix_request_headers_lanes')
    with op.batch_alter_table('request_details', schema=None) as batch_op:
        batch_op.drop_index('ix_request_details_lanes')
        batch_op.drop_constraint(
            batch_op.f('fk_request_details_requested_by_system_id_external_systems'),
            type_='foreignkey')
        batch_op.drop_column('requested_by_system_id')
