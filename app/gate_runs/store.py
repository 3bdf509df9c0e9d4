"""Stored release-gate runs: insert one from its report, list them newest first, read one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import orm

from app.db import id_page
from app.gate_runs.models import GateRun


def save_gate_run(session: orm.Session, report: dict[str, Any], markdown: str, plot_png: bytes) -> GateRun:
    """Insert and commit a run; raises IntegrityError when a run with its id is already stored."""
    figures = report["figures"]
    run = GateRun(
        id=report["id"],
        trigger=report["trigger"],
        profile=report["profile"],
        slo=report["slo"]["name"],
        passed=bool(report["passed"]),
        failures=list(report["failures"]),
        achieved_qps=figures.get("achieved_qps"),
        p95_ttft_s=(figures.get("ttft_s") or {}).get("p95"),
        p95_e2e_s=(figures.get("e2e_s") or {}).get("p95"),
        error_rate=figures.get("error_rate"),
        report=report,
        markdown=markdown,
        plot_png=plot_png,
        started_at=datetime.fromtimestamp(report["started_at"], UTC),
        finished_at=datetime.fromtimestamp(report["finished_at"], UTC),
    )
    session.add(run)
    session.commit()
    return run


def list_gate_runs(
    session: orm.Session, *, profile: str | None, after: str | None, limit: int
) -> tuple[list[GateRun], bool]:
    """Runs newest first (ids are time-ordered), after the cursor `after`; returns (page, has_more)."""
    return id_page(session, GateRun, after, limit, GateRun.profile == profile if profile else None)


def get_gate_run(session: orm.Session, run_id: str, *, with_report: bool = False) -> GateRun | None:
    """One run; with_report also loads its report and Markdown (the plot is loaded on access)."""
    options = [orm.undefer(GateRun.report), orm.undefer(GateRun.markdown)] if with_report else []
    return session.get(GateRun, run_id, options=options)


def gate_run_json(run: GateRun) -> dict[str, Any]:
    """The run as listed: verdict, figures, failures, and where it and its plot are served."""
    return {
        "id": run.id,
        "object": "gate.run",
        "trigger": run.trigger,
        "profile": run.profile,
        "slo": run.slo,
        "passed": run.passed,
        "failures": run.failures,
        "figures": {
            "achieved_qps": run.achieved_qps,
            "p95_ttft_s": run.p95_ttft_s,
            "p95_e2e_s": run.p95_e2e_s,
            "error_rate": run.error_rate,
        },
        "started_at": run.started_at.timestamp(),
        "finished_at": run.finished_at.timestamp(),
        "url": f"/v1/gate/runs/{run.id}",
        "plot_url": f"/v1/gate/runs/{run.id}/plot.png",
    }
