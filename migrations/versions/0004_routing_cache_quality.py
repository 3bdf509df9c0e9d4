"""Routing, response cache and answer quality: how a job was routed, what it was cached from, its signals.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Written to match the routing, cache and quality columns of app/models.Job; like 0001 it never
depends on app code. Every new column is nullable (old jobs were neither routed nor scored), so
adding them is a plain ALTER TABLE on SQLite and Postgres alike.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_COLUMNS = (
    ("routed_from", sa.String(length=16)),
    ("route_reason", sa.String(length=500)),
    ("cached_from", sa.String(length=40)),
    ("quality_harmony_ok", sa.Boolean()),
    ("quality_empty_answer", sa.Boolean()),
    ("quality_truncated", sa.Boolean()),
    ("quality_reasoning_share", sa.Double()),
    ("quality_repetition", sa.Double()),
)


def upgrade() -> None:
    for name, column_type in NEW_COLUMNS:
        op.add_column("jobs", sa.Column(name, column_type, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:  # SQLite before 3.35 cannot drop columns in place
        for name, _ in reversed(NEW_COLUMNS):
            batch_op.drop_column(name)
