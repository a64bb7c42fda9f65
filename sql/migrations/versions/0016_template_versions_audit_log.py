"""template_versions_audit_log: template versions (draft, publish, rollback) and the audit log

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 04:30:00.000000

Every existing template becomes its own version 1, published (``live_version = 1``), so that
nothing that sends today changes. ``request_details.template_version`` records the version a
communication was rendered with. ``audit_log`` is append-only: a trigger refuses UPDATE and
DELETE (and TRUNCATE on PostgreSQL) whoever the role.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
PG_TRIGGERS = (
    "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
)
SQLITE_TRIGGERS = tuple(
    f"CREATE TRIGGER audit_log_no_{op_name.lower()} BEFORE {op_name} ON audit_log "
    f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {op_name} refused'); END"
    for op_name in ("UPDATE", "DELETE"))


def _first_versions() -> None:
    """Version 1, published, of every template there is, from its live rows."""
    bind = op.get_bind()
    systems = dict(bind.execute(sa.text("SELECT id, code FROM external_systems")).all())
    variants: dict[int, list[dict]] = {}
    for v in bind.execute(sa.text(
            "SELECT template_id, language, subject, body_html, body_text "
            "FROM template_variants ORDER BY language")).mappings():
        variants.setdefault(v["template_id"], []).append(
            {k: v[k] for k in ("language", "subject", "body_html", "body_text")})
    rows = bind.execute(sa.text("SELECT * FROM templates ORDER BY id")).mappings().all()
    versions = sa.table('template_versions', sa.column('template_id'),
                        sa.column('template_code'), sa.column('version'),
                        sa.column('content', sa.JSON), sa.column('created_at'),
                        sa.column('created_by'), sa.column('published_at'))
    for t in rows:
        def listed(value: object) -> list:
            return json.loads(value) if isinstance(value, str) else list(value or [])
        langs = sorted(variants.get(t["id"], []),
                       key=lambda v, d=t["default_language"]: (v["language"] != d,
                                                               v["language"]))
        content = {
            "code": t["code"], "name": t["name"], "media": t["media"],
            "direction": t["direction"], "category": t["category"],
            "classification": t["classification"],
            "referring_entities": listed(t["referring_entities"]),
            "unrestricted_params": listed(t["unrestricted_params"]),
            "external_system": systems.get(t["external_system_id"]),
            "default_language": t["default_language"], "variants": langs,
        }
        op.bulk_insert(versions, [{
            "template_id": t["id"], "template_code": t["code"], "version": 1,
            "content": content, "created_at": t["updated_at"], "created_by": "migration 0016",
            "published_at": t["updated_at"]}])
    bind.execute(sa.text("UPDATE templates SET live_version = 1"))


def upgrade() -> None:
    op.create_table('template_versions',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('template_id', BIG_ID, nullable=False),
    sa.Column('template_code', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('content', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.Column('published_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['template_id'], ['templates.id'],
                            name=op.f('fk_template_versions_template_id_templates'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_template_versions')),
    sa.UniqueConstraint('template_id', 'version',
                        name=op.f('uq_template_versions_template_id'))
    )
    op.create_table('audit_log',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target_kind', sa.String(length=64), nullable=False),
    sa.Column('target_id', sa.String(length=200), nullable=True),
    sa.Column('change', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)
        batch_op.create_index('ix_audit_log_target', ['target_kind', 'target_id'],
                              unique=False)
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('live_version', sa.Integer(), nullable=True))
    with op.batch_alter_table('request_details', schema=None) as batch_op:
        batch_op.add_column(sa.Column('template_version', sa.Integer(), nullable=True))
    _first_versions()
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(PG_FUNCTION)
        for statement in PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    with op.batch_alter_table('request_details', schema=None) as batch_op:
        batch_op.drop_column('template_version')
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_column('live_version')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_target')
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))
    op.drop_table('audit_log')
    op.drop_table('template_versions')
