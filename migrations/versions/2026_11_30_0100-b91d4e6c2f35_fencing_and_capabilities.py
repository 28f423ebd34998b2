"""fencing and capabilities: a lease token per attempt, what a job needs of its worker, workers' launchers and lease

Revision ID: b91d4e6c2f35
Revises: a7e3c1f09d21
Create Date: 2026-11-30 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'b91d4e6c2f35'
down_revision: str | None = 'a7e3c1f09d21'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What config.resources asks of the claiming worker (app.models.job.NEEDS_LAUNCHER / NEEDS_GPUS as of this
# revision), kept by Postgres in generated columns so the claim compares columns instead of reading configs.
NEEDS_LAUNCHER = "CASE WHEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'launcher') = 'string' THEN config -> 'resources' ->> 'launcher' ELSE 'auto' END) <> 'auto' THEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'launcher') = 'string' THEN config -> 'resources' ->> 'launcher' ELSE 'auto' END) WHEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'nodes') = 'number' THEN (config -> 'resources' ->> 'nodes')::numeric ELSE 1 END) > 1 THEN 'slurm' WHEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'gpus') = 'number' THEN (config -> 'resources' ->> 'gpus')::numeric ELSE 1 END) > 1 THEN 'torchrun' ELSE 'inprocess' END"
NEEDS_GPUS = "CASE WHEN (CASE WHEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'launcher') = 'string' THEN config -> 'resources' ->> 'launcher' ELSE 'auto' END) <> 'auto' THEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'launcher') = 'string' THEN config -> 'resources' ->> 'launcher' ELSE 'auto' END) WHEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'nodes') = 'number' THEN (config -> 'resources' ->> 'nodes')::numeric ELSE 1 END) > 1 THEN 'slurm' WHEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'gpus') = 'number' THEN (config -> 'resources' ->> 'gpus')::numeric ELSE 1 END) > 1 THEN 'torchrun' ELSE 'inprocess' END) = 'slurm' OR (CASE WHEN jsonb_typeof(config -> 'resources' -> 'device') = 'string' THEN config -> 'resources' ->> 'device' ELSE 'auto' END) = 'cpu' OR ((CASE WHEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'launcher') = 'string' THEN config -> 'resources' ->> 'launcher' ELSE 'auto' END) <> 'auto' THEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'launcher') = 'string' THEN config -> 'resources' ->> 'launcher' ELSE 'auto' END) WHEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'nodes') = 'number' THEN (config -> 'resources' ->> 'nodes')::numeric ELSE 1 END) > 1 THEN 'slurm' WHEN (CASE WHEN jsonb_typeof(config -> 'resources' -> 'gpus') = 'number' THEN (config -> 'resources' ->> 'gpus')::numeric ELSE 1 END) > 1 THEN 'torchrun' ELSE 'inprocess' END) = 'inprocess' AND (CASE WHEN jsonb_typeof(config -> 'resources' -> 'device') = 'string' THEN config -> 'resources' ->> 'device' ELSE 'auto' END) = 'auto') THEN 0 ELSE (CASE WHEN jsonb_typeof(config -> 'resources' -> 'gpus') = 'number' THEN (config -> 'resources' ->> 'gpus')::numeric ELSE 1 END) END"


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column('jobs', sa.Column('lease_token', sa.UUID(), nullable=True))
    # Stored generated columns rewrite the jobs table once (a queue: small), under the lock_timeout above.
    op.add_column('jobs', sa.Column('needs_launcher', sa.Text(), sa.Computed(NEEDS_LAUNCHER, persisted=True),
                                    nullable=False))
    op.add_column('jobs', sa.Column('needs_gpus', sa.Numeric(), sa.Computed(NEEDS_GPUS, persisted=True),
                                    nullable=False))
    op.add_column('workers', sa.Column('launchers', postgresql.JSONB(astext_type=sa.Text()), server_default='[]',
                                       nullable=False))
    op.add_column('workers', sa.Column('lease_seconds', sa.Float(), nullable=True))


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_column('workers', 'lease_seconds')
    op.drop_column('workers', 'launchers')
    op.drop_column('jobs', 'needs_gpus')
    op.drop_column('jobs', 'needs_launcher')
    op.drop_column('jobs', 'lease_token')
