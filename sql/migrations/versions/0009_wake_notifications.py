"""wake_notifications: PostgreSQL triggers that NOTIFY a stage's channel when work arrives

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 04:20:00.000000

Idle workers ``LISTEN`` on their stage's channel (``comms_pipeline.queue.wake``) and claim as
soon as a notification arrives; the poll interval stays as the fallback. The INSERT triggers
are statement-level with transition tables, so an INSERT (or COPY) of 200,000 rows sends one
notification per channel, not one per row, and workflow systems that insert by plain SQL wake
the workers too. An UPDATE notifies only for the rows whose state it moves into a pending one
(a row-level trigger whose WHEN is checked before any function is called; a transition-table
join of old and new rows is quadratic without statistics). Channels: ``comms_monitor`` (a
header awaiting processing), ``comms_merge_<media>`` (a queue entry entering Awaiting Merge), ``comms_send_<media>``
(entering Awaiting Send), ``comms_external`` (entering Awaiting External), ``comms_storage``
(a document not yet stored). SQLite has no notifications: nothing is created there.
"""

from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_FUNCTIONS = (
    # One notification per INSERT (or COPY) statement and channel, from its transition table.
    """
CREATE OR REPLACE FUNCTION comms_wake_headers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('comms_monitor', '')
    WHERE EXISTS (SELECT 1 FROM comms_new WHERE status = 'awaiting_processing');
  RETURN NULL;
END $$
""",
    """
CREATE OR REPLACE FUNCTION comms_wake_details() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(channel, '') FROM (
    SELECT DISTINCT CASE state WHEN 'awaiting_merge' THEN 'comms_merge_' || media
                               WHEN 'awaiting_send' THEN 'comms_send_' || media
                               ELSE 'comms_external' END AS channel
      FROM comms_new
     WHERE state IN ('awaiting_merge', 'awaiting_send', 'awaiting_external')) AS woken;
  RETURN NULL;
END $$
""",
    """
CREATE OR REPLACE FUNCTION comms_wake_documents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('comms_storage', '')
    WHERE EXISTS (SELECT 1 FROM comms_new WHERE stored_at IS NULL);
  RETURN NULL;
END $$
""",
    # Updates: row-level, but only for the rows whose state changes into a pending one (the
    # WHEN is checked without calling the function, so claim stamps and completions cost
    # nothing); PostgreSQL folds the same notification sent twice in a transaction into one.
    """
CREATE OR REPLACE FUNCTION comms_wake_header_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('comms_monitor', '');
  RETURN NULL;
END $$
""",
    """
CREATE OR REPLACE FUNCTION comms_wake_detail_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(CASE NEW.state WHEN 'awaiting_merge' THEN 'comms_merge_' || NEW.media
                                   WHEN 'awaiting_send' THEN 'comms_send_' || NEW.media
                                   ELSE 'comms_external' END, '');
  RETURN NULL;
END $$
""",
)

_TRIGGERS = (
    "CREATE TRIGGER comms_wake_headers_insert AFTER INSERT ON request_headers "
    "REFERENCING NEW TABLE AS comms_new FOR EACH STATEMENT "
    "EXECUTE FUNCTION comms_wake_headers()",
    "CREATE TRIGGER comms_wake_details_insert AFTER INSERT ON request_details "
    "REFERENCING NEW TABLE AS comms_new FOR EACH STATEMENT "
    "EXECUTE FUNCTION comms_wake_details()",
    "CREATE TRIGGER comms_wake_documents_insert AFTER INSERT ON documents "
    "REFERENCING NEW TABLE AS comms_new FOR EACH STATEMENT "
    "EXECUTE FUNCTION comms_wake_documents()",
    "CREATE TRIGGER comms_wake_headers_update AFTER UPDATE OF status ON request_headers "
    "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status "
    "AND NEW.status = 'awaiting_processing') EXECUTE FUNCTION comms_wake_header_row()",
    "CREATE TRIGGER comms_wake_details_update AFTER UPDATE OF state ON request_details "
    "FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state "
    "AND NEW.state IN ('awaiting_merge', 'awaiting_send', 'awaiting_external')) "
    "EXECUTE FUNCTION comms_wake_detail_row()",
)
#: (trigger, table) and the functions, for the downgrade.
_DROPS = (("comms_wake_headers_insert", "request_headers"),
          ("comms_wake_details_insert", "request_details"),
          ("comms_wake_documents_insert", "documents"),
          ("comms_wake_headers_update", "request_headers"),
          ("comms_wake_details_update", "request_details"))
_FUNCTION_NAMES = ("comms_wake_headers", "comms_wake_details", "comms_wake_documents",
                   "comms_wake_header_row", "comms_wake_detail_row")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in (*_FUNCTIONS, *_TRIGGERS):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table in _DROPS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for function in _FUNCTION_NAMES:
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
