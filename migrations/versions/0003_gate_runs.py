"""Release-gate runs, and a flag on jobs that marks gate traffic.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Written to match app/gate_runs/models.py and Job.is_gate; like 0001 it uses plain DateTime(timezone=True)
so it never depends on app code. is_gate is NOT NULL with a server default, so existing jobs become
ordinary traffic and the ALTER TABLE works on SQLite and Postgres alike.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "gate_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("slo", sa.String(length=64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.Column("achieved_qps", sa.Double(), nullable=True),
        sa.Column("p95_ttft_s", sa.Double(), nullable=True),
        sa.Column("p95_e2e_s", sa.Double(), nullable=True),
        sa.Column("error_rate", sa.Double(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("markdown", sa.Text(), nullable=False),
        sa.Column("plot_png", sa.LargeBinary(), nullable=False),
        sa.Column("started_at", timestamp, nullable=False),
        sa.Column("finished_at", timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_runs")),
    )
    op.create_index(op.f("ix_gate_runs_profile"), "gate_runs", ["profile"], unique=False)
    op.add_column("jobs", sa.Column("is_gate", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_index(op.f("ix_jobs_is_gate"), "jobs", ["is_gate"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_is_gate"), table_name="jobs")
    with op.batch_alter_table("jobs") as batch_op:  # SQLite before 3.35 cannot drop columns in place
        batch_op.drop_column("is_gate")
    op.drop_index(op.f("ix_gate_runs_profile"), table_name="gate_runs")
    op.drop_table("gate_runs")
