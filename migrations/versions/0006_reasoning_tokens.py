"""Reasoning tokens: how many of a job's completion tokens became reasoning.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

Written to match app/models.Job.reasoning_tokens; never depends on app code. Nullable (older jobs
did not count them), so adding it is a plain ALTER TABLE on SQLite and Postgres alike.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("reasoning_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:  # SQLite before 3.35 cannot drop columns in place
        batch_op.drop_column("reasoning_tokens")
