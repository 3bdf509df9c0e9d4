"""File bytes in the database: the file_chunks table (GPTOSS_FILE_STORAGE=database).

Revision ID: 0010_file_chunks
Revises: 0009_webhooks
Create Date: 2026-12-07

Written to match app/batches/models.FileChunk; never depends on app code. A file's bytes are its rows
in seq order, about 1 MiB each (bytea on Postgres, BLOB on SQLite). No foreign key to files: the bytes
are written before the file's row is committed. With the default local storage the table stays empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_file_chunks"
down_revision: str | None = "0009_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "file_chunks",
        sa.Column("file_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "seq", name=op.f("pk_file_chunks")),
    )


def downgrade() -> None:
    op.drop_table("file_chunks")
