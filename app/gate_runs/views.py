"""The gate runs resource: stored release-gate runs with their reports and latency plots."""

from __future__ import annotations

import base64
from typing import Any, Literal

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm

from app.db import db_session
from app.errors import ApiError
from app.gate_runs import store as gate_store
from app.gate_runs.models import GateRun
from app.http import json_body, list_page

bp = Blueprint("gate_runs", __name__, url_prefix="/v1/gate/runs")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # a long run's report holds one entry per request


class GateRunListQuery(BaseModel):
    """Query string of GET /v1/gate/runs."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = None
    limit: int = Field(default=20, ge=1, le=100)
    after: str | None = None


class ReportSlo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64)


class ReportLatency(BaseModel):
    model_config = ConfigDict(extra="allow")
    p95: float | None


class ReportFigures(BaseModel):
    model_config = ConfigDict(extra="allow")
    achieved_qps: float | None
    error_rate: float | None
    ttft_s: ReportLatency
    e2e_s: ReportLatency


class GateReport(BaseModel):
    """The fields of a gate report (gate/report.py) that the table stores; the rest is kept as sent."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(pattern=r"^gate_[0-9a-f]{12,32}$")
    trigger: Literal["cli", "schedule"]
    profile: str = Field(min_length=1, max_length=64)
    slo: ReportSlo
    passed: bool
    failures: list[str]
    figures: ReportFigures
    started_at: float
    finished_at: float


class GateRunCreate(BaseModel):
    """The body of POST /v1/gate/runs, as `gptoss gate` sends it."""

    model_config = ConfigDict(extra="forbid")

    report: GateReport
    markdown: str
    plot_png_base64: str


def decoded_png(text: str) -> bytes:
    try:
        png = base64.b64decode(text, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise ApiError(400, f"plot_png_base64 is not base64: {exc}", param="plot_png_base64") from exc
    if not png.startswith(PNG_SIGNATURE):
        raise ApiError(400, "plot_png_base64 is not a PNG image.", param="plot_png_base64")
    return png


@bp.post("")
def create_gate_run() -> tuple[Response, int]:
    """Store a run that `gptoss gate` made against this API."""
    request.max_content_length = MAX_UPLOAD_BYTES
    raw: Any = json_body()
    body = GateRunCreate.model_validate(raw)
    png = decoded_png(body.plot_png_base64)
    with db_session() as session:
        try:
            run = gate_store.save_gate_run(session, raw["report"], body.markdown, png)
        except sa_exc.IntegrityError as exc:
            message = f"Gate run {body.report.id} is already stored."
            raise ApiError(409, message, code="gate_run_exists") from exc
        return jsonify(gate_store.gate_run_json(run)), 201


@bp.get("")
def list_gate_runs() -> Response:
    """List gate runs newest first; `after` is the last id of the previous page."""
    query = GateRunListQuery.model_validate(request.args.to_dict())
    with db_session() as session:
        runs, has_more = gate_store.list_gate_runs(
            session, profile=query.profile, after=query.after, limit=query.limit
        )
        data = [gate_store.gate_run_json(run) for run in runs]
    return list_page(data, has_more)


@bp.get("/<run_id>")
def get_gate_run(run_id: str) -> Response:
    """Show one run with its report (JSON), its Markdown and a link to its plot."""
    with db_session() as session:
        run = gate_run_or_404(session, run_id, with_report=True)
        return jsonify({**gate_store.gate_run_json(run), "report": run.report, "markdown": run.markdown})


@bp.get("/<run_id>/plot.png")
def get_gate_run_plot(run_id: str) -> Response:
    """The run's latency-over-time plot."""
    with db_session() as session:
        png = gate_run_or_404(session, run_id).plot_png
    return current_app.response_class(png, mimetype="image/png")


def gate_run_or_404(session: orm.Session, run_id: str, *, with_report: bool = False) -> GateRun:
    run = gate_store.get_gate_run(session, run_id, with_report=with_report)
    if run is None:
        raise ApiError(404, f"No gate run with id '{run_id}'.", param="id", code="gate_run_not_found")
    return run
