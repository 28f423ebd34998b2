"""hardening: keys bound to sources, idempotency expiry index, NOTIFY triggers for keys and job events

Revision ID: a7e3c1f09d21
Revises: c0a1d5e70001
Create Date: 2026-11-30 00:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'a7e3c1f09d21'
down_revision: str | None = 'c0a1d5e70001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every API process LISTENs (app/notify.py): a revoked key is dropped from every cache at once, and
# SSE streams wake when their job writes an event or changes status, instead of polling.
_TRIGGERS = """
CREATE FUNCTION distillery_notify_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('distillery_keys', OLD.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER api_keys_notify AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION distillery_notify_key();

CREATE FUNCTION distillery_notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('distillery_job_events', NEW.job_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
    FOR EACH ROW EXECUTE FUNCTION distillery_notify_job();

CREATE FUNCTION distillery_notify_job_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('distillery_job_events', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_status_notify AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION distillery_notify_job_status();
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column('api_keys', sa.Column('sources', postgresql.ARRAY(sa.Text()), nullable=True))
    op.create_index('ix_idempotency_keys_created_at', 'idempotency_keys', ['created_at'], unique=False)
    op.execute(_TRIGGERS)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("DROP TRIGGER IF EXISTS jobs_status_notify ON jobs; DROP FUNCTION IF EXISTS distillery_notify_job_status();"
               " DROP TRIGGER IF EXISTS job_events_notify ON job_events; DROP FUNCTION IF EXISTS distillery_notify_job();"
               " DROP TRIGGER IF EXISTS api_keys_notify ON api_keys; DROP FUNCTION IF EXISTS distillery_notify_key();")
    op.drop_index('ix_idempotency_keys_created_at', table_name='idempotency_keys')
    op.drop_column('api_keys', 'sources')
