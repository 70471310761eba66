"""checkpoint variants: the other layout, and GGUF files, as checkpoints of their own

A finished job's checkpoint can be downloaded in the layout it was not run with, and as a GGUF file of a given
weight type; each such variant is materialised on demand and cached like any checkpoint. Its name ends the row's
label (``0.4000-uniform-gguf-q8_0``), which stays unique per job, so the label is widened; ``variant`` holds the
name alone for listing.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.alter_column("label", existing_type=sa.String(length=16), type_=sa.String(length=48))
        batch.add_column(sa.Column("variant", sa.String(length=32), nullable=False, server_default=""))


def downgrade() -> None:
    op.execute("DELETE FROM checkpoints WHERE variant <> ''")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("variant")
        batch.alter_column("label", existing_type=sa.String(length=48), type_=sa.String(length=16))
