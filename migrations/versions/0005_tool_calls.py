"""Tool calls: the function calls a job's answer made.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Written to match app/models.Job.tool_calls; never depends on app code. Nullable (old jobs made
none), so adding it is a plain ALTER TABLE on SQLite and Postgres alike.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("tool_calls", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:  # SQLite before 3.35 cannot drop columns in place
        batch_op.drop_column("tool_calls")
