"""Files and batches (the OpenAI Batch API); jobs learn which batch line they came from.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Written to match app/batches/models.py and the batch columns of app/models.Job; like 0001 it uses plain
DateTime(timezone=True) so it never depends on app code. The new job columns are nullable, so adding
them is a plain ALTER TABLE on SQLite and Postgres alike.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "files",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
    )
    op.create_index(op.f("ix_files_purpose"), "files", ["purpose"], unique=False)
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("input_file_id", sa.String(length=40), nullable=False),
        sa.Column("completion_window", sa.String(length=16), nullable=False),
        sa.Column("output_file_id", sa.String(length=40), nullable=True),
        sa.Column("error_file_id", sa.String(length=40), nullable=True),
        sa.Column("errors", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("request_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("request_completed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("request_failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("expires_at", timestamp, nullable=False),
        sa.Column("in_progress_at", timestamp, nullable=True),
        sa.Column("finalizing_at", timestamp, nullable=True),
        sa.Column("completed_at", timestamp, nullable=True),
        sa.Column("failed_at", timestamp, nullable=True),
        sa.Column("expired_at", timestamp, nullable=True),
        sa.Column("cancelling_at", timestamp, nullable=True),
        sa.Column("cancelled_at", timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    op.create_index(op.f("ix_batches_status"), "batches", ["status"], unique=False)
    op.add_column("jobs", sa.Column("batch_id", sa.String(length=40), nullable=True))
    op.add_column("jobs", sa.Column("custom_id", sa.String(length=512), nullable=True))
    op.add_column("jobs", sa.Column("batch_line", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_jobs_batch_id"), "jobs", ["batch_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_batch_id"), table_name="jobs")
    with op.batch_alter_table("jobs") as batch_op:  # SQLite before 3.35 cannot drop columns in place
        batch_op.drop_column("batch_line")
        batch_op.drop_column("custom_id")
        batch_op.drop_column("batch_id")
    op.drop_index(op.f("ix_batches_status"), table_name="batches")
    op.drop_table("batches")
    op.drop_index(op.f("ix_files_purpose"), table_name="files")
    op.drop_table("files")
