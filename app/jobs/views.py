"""The jobs resource: submit, read, list and cancel generation jobs."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from app.cache.store import no_cache_header
from app.db import db_session
from app.errors import ApiError
from app.jobs import store as job_store
from app.jobs import submit as job_service
from app.jobs.budget import check_prompt_fits
from app.jobs.render import job_json
from app.jobs.schemas import JobCreate
from app.models import JobStatus

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


class JobListQuery(BaseModel):
    """Query string of GET /v1/jobs."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    profile: str | None = None
    limit: int = Field(default=20, ge=1, le=100)
    after: str | None = None


def json_body() -> Any:
    """The parsed JSON body; 400 when it is not JSON (413 comes from MAX_CONTENT_LENGTH)."""
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from exc


@bp.post("")
def create_job() -> tuple[Response, int]:
    """Queue a generation job on its profile's queue; replays return the first job."""
    context = {
        "profiles": current_app.extensions["gptoss_profiles"],
        "router": current_app.extensions.get("gptoss_router"),
    }
    body = JobCreate.model_validate(json_body(), context=context)
    if no_cache_header(request.headers.get("Cache-Control")):
        body.cache = False
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 255:
        raise ApiError(400, "Idempotency-Key must be at most 255 characters.", param="Idempotency-Key")
    check_prompt_fits(body)
    with db_session() as session:
        job, created = job_service.submit_job(
            session,
            body,
            key,
            current_app.extensions["gptoss_enqueue"],
            current_app.extensions.get("gptoss_cached_jobs"),
        )
        return jsonify(job_json(job)), 202 if created else 200


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    """Show one job with its status, result, tags and timings."""
    with db_session() as session:
        return jsonify(job_json(job_service.get_job_or_404(session, job_id)))


@bp.get("")
def list_jobs() -> Response:
    """List jobs newest first; `after` is the last id of the previous page."""
    query = JobListQuery.model_validate(request.args.to_dict())
    with db_session() as session:
        jobs, has_more = job_store.list_jobs(
            session, status=query.status, profile=query.profile, after=query.after, limit=query.limit
        )
        data = [job_json(job) for job in jobs]
    return jsonify(
        object="list",
        data=data,
        first_id=data[0]["id"] if data else None,
        last_id=data[-1]["id"] if data else None,
        has_more=has_more,
    )


@bp.post("/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    """Cancel a queued job at once or ask the worker to stop a running one (keeping partial text)."""
    with db_session() as session:
        job = job_service.cancel_job(
            session,
            job_id,
            redis_client=current_app.extensions["gptoss_redis"],
            revoke=current_app.extensions["gptoss_revoke"],
            ttl_s=current_app.config["CANCEL_SIGNAL_TTL_S"],
            events=current_app.extensions["gptoss_events"],
        )
        return jsonify(job_json(job))
