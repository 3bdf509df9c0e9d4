"""The jobs resource: submit, read, list and cancel generation jobs."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from app.db import db_session
from app.http import json_body, list_page
from app.jobs import store as job_store
from app.jobs.cancel import cancel
from app.jobs.render import job_json
from app.jobs.submit import idempotency_key, submit_job, validated_job
from app.keys.caller import current_caller
from app.limits import counts_as_submit
from app.models import JobStatus

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


class JobListQuery(BaseModel):
    """Query string of GET /v1/jobs."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    profile: str | None = None
    limit: int = Field(default=20, ge=1, le=100)
    after: str | None = None


@bp.post("")
@counts_as_submit
def create_job() -> tuple[Response, int]:
    """Queue a generation job on its profile's queue; replays return the first job."""
    body = validated_job(json_body())
    with db_session() as session:
        job, created = submit_job(session, body, idempotency_key(), current_caller())
        return jsonify(job_json(job)), 202 if created else 200


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    """Show one job with its status, result, tags and timings."""
    with db_session() as session:
        return jsonify(job_json(job_store.get_job_or_404(session, job_id, current_caller())))


@bp.get("")
def list_jobs() -> Response:
    """List jobs newest first; `after` is the last id of the previous page."""
    query = JobListQuery.model_validate(request.args.to_dict())
    with db_session() as session:
        jobs, has_more = job_store.list_jobs(
            session,
            current_caller(),
            status=query.status,
            profile=query.profile,
            after=query.after,
            limit=query.limit,
        )
        data = [job_json(job) for job in jobs]
    return list_page(data, has_more)


@bp.post("/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    """Cancel a queued job at once or ask the worker to stop a running one (keeping partial text)."""
    with db_session() as session:
        return jsonify(job_json(cancel(session, job_id, current_caller())))
