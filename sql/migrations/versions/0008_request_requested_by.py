"""request_requested_by: the external system that made a request over the Web API

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:30:00.000000

``GET /v1/requests/{id}`` shows a request to admins and to the system that made it only; a
request written by SQL, the CLI or an admin key has none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('request_headers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requested_by_system_id',
                                      sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))
        batch_op.create_index(batch_op.f('ix_request_headers_requested_by_system_id'),
                              ['requested_by_system_id'], unique=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_request_headers_requested_by_system_id_external_systems'),
            'external_systems', ['requested_by_system_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('request_headers', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('fk_request_headers_requested_by_system_id_external_systems'),
            type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_request_headers_requested_by_system_id'))
        batch_op.drop_column('requested_by_system_id')
