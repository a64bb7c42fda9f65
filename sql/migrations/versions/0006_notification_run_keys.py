"""notification_run_keys: a run covers one period of its type (its run key), once

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 23:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Runs made before this migration have no key (NULL): unique indexes let NULLs repeat.
    with op.batch_alter_table('notification_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_key', sa.String(length=100), nullable=True))
        batch_op.create_index('ux_notification_runs_type_run_key', ['type_id', 'run_key'],
                              unique=True)
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_key', sa.String(length=100), nullable=True))
        batch_op.create_index('ux_notifications_type_run_key_recipient',
                              ['type_id', 'run_key', 'recipient_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ux_notifications_type_run_key_recipient')
        batch_op.drop_column('run_key')
    with op.batch_alter_table('notification_runs', schema=None) as batch_op:
        batch_op.drop_index('ux_notification_runs_type_run_key')
        batch_op.drop_column('run_key')
