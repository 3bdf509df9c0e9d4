"""The gate_runs table: one row per release-gate run with its verdict, report and latency plot."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.models import Base, UTCDateTime, time_ordered_id, utcnow


def new_gate_run_id() -> str:
    return time_ordered_id("gate_", 6)


class GateRun(Base):
    """A stored gate run; the figures the SLO checks are columns, so trends need no JSON parsing."""

    __tablename__ = "gate_runs"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(40), primary_key=True, default=new_gate_run_id)
    trigger: orm.Mapped[str] = orm.mapped_column(sa.String(16))  # "cli" or "schedule"
    profile: orm.Mapped[str] = orm.mapped_column(sa.String(64), index=True)
    slo: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    passed: orm.Mapped[bool]
    failures: orm.Mapped[list[str]] = orm.mapped_column(sa.JSON)  # one line per failed threshold
    achieved_qps: orm.Mapped[float | None]
    p95_ttft_s: orm.Mapped[float | None]
    p95_e2e_s: orm.Mapped[float | None]
    error_rate: orm.Mapped[float | None]
    report: orm.Mapped[dict[str, Any]] = orm.mapped_column(sa.JSON, deferred=True)
    markdown: orm.Mapped[str] = orm.mapped_column(sa.Text, deferred=True)
    plot_png: orm.Mapped[bytes] = orm.mapped_column(sa.LargeBinary, deferred=True)
    started_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime, default=utcnow)
    finished_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime, default=utcnow)
