"""fenced writes, crash and retry counts, outbox timestamps

* jobs.crashes (claims after a lost worker) and jobs.transient_retries (releases after an outage) are
  counted apart; jobs.transient_since starts the clock of the transient deadline;
* jobs.enqueued_at / checkpoints.enqueued_at: when a message was last handed to the broker (null: never,
  e.g. the broker was down), so the reaper can re-send what a lost message stranded;
* checkpoints.claim / claimed_at: the token of the worker materialising an on-demand checkpoint, which
  fences its writes as a job's lease fences the run's;
* artifacts are looked up by (job, checkpoint, kind, name): objects are written under their writer's token
  and a row points at the current one.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("crashes", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("transient_retries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("transient_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("claim", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_artifacts_job_kind_name", "artifacts", ["job_id", "kind", "name"])
    op.create_index("ix_jobs_status_enqueued", "jobs", ["status", "enqueued_at"])
    # Everything queued before this revision was handed to the broker when it was submitted.
    op.execute("UPDATE jobs SET enqueued_at = created_at WHERE status = 'queued'")
    op.execute("UPDATE checkpoints SET enqueued_at = updated_at WHERE status = 'pending'")


def downgrade() -> None:
    op.drop_index("ix_jobs_status_enqueued", table_name="jobs")
    op.drop_index("ix_artifacts_job_kind_name", table_name="artifacts")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("claim")
        batch.drop_column("enqueued_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("enqueued_at")
        batch.drop_column("transient_since")
        batch.drop_column("transient_retries")
        batch.drop_column("crashes")
