"""API keys and ownership: the api_keys table, and an owner column on jobs, files and batches.

Revision ID: 0007_keys_ownership
Revises: 0006
Create Date: 2026-12-07

Written to match app/keys/models.py and the owner columns of app/models.Job and app/batches/models.py;
never depends on app code. The owner columns are nullable: existing rows keep owner NULL (owned by
nobody in particular: admins see them, and everyone does in single-user mode), so adding them is a
plain ALTER TABLE on SQLite and Postgres alike.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_keys_ownership"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNED_TABLES = ("jobs", "files", "batches")


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("revoked_at", timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    for table in OWNED_TABLES:
        op.add_column(table, sa.Column("owner", sa.String(length=40), nullable=True))
        op.create_index(op.f(f"ix_{table}_owner"), table, ["owner"], unique=False)


def downgrade() -> None:
    for table in OWNED_TABLES:
        op.drop_index(op.f(f"ix_{table}_owner"), table_name=table)
        with op.batch_alter_table(table) as batch_op:  # SQLite before 3.35 cannot drop columns in place
            batch_op.drop_column("owner")
    op.drop_table("api_keys")
