"""Retention: a file's own expiry (OpenAI's expires_after), tombstones of purged things, and an index
on jobs.finished_at for the purge.

Revision ID: 0008_retention
Revises: 0007_keys_ownership
Create Date: 2026-12-07

Written to match app/batches/models.StoredFile.expires_at, app/models.Tombstone and the index of
app/models.Job.finished_at; never depends on app code. A tombstone keeps its row's owner (0007), so only
that key learns the id expired. The new column is nullable (no expiry of its
own), so adding it is a plain ALTER TABLE on SQLite and Postgres alike.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_retention"
down_revision: str | None = "0007_keys_ownership"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    op.add_column("files", sa.Column("expires_at", timestamp, nullable=True))
    op.create_index(op.f("ix_jobs_finished_at"), "jobs", ["finished_at"], unique=False)
    op.create_table(
        "tombstones",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("expired_at", timestamp, nullable=False),
        sa.Column("purged_at", timestamp, nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tombstones")),
    )
    op.create_index(op.f("ix_tombstones_purged_at"), "tombstones", ["purged_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tombstones_purged_at"), table_name="tombstones")
    op.drop_table("tombstones")
    op.drop_index(op.f("ix_jobs_finished_at"), table_name="jobs")
    with op.batch_alter_table("files") as batch_op:  # SQLite before 3.35 cannot drop columns in place
        batch_op.drop_column("expires_at")
