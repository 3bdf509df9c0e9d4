"""The one submit path (jobs, chat completions, batch lines' rows): route, replay, cache, insert, enqueue."""

from __future__ import annotations

import logging
from typing import Any

from flask import request
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm

from app.cache.store import no_cache_header
from app.errors import ApiError
from app.jobs import store as job_store
from app.jobs.budget import check_prompt_fits
from app.jobs.grouped import QueueUnavailable
from app.jobs.schemas import JobCreate
from app.keys.caller import Caller
from app.models import Job
from app.ops.served_models import recent_served_tags
from app.queue import QueuedJob, job_queue
from app.services import services
from engine.prompt import today_utc

log = logging.getLogger(__name__)


def validated_job(raw: Any) -> JobCreate:
    """A job body checked against this app's profiles (and `auto`'s); `Cache-Control: no-cache` opts out."""
    found = services()
    body = JobCreate.model_validate(raw, context={"profiles": found.profiles, "router": found.router})
    if no_cache_header(request.headers.get("Cache-Control")):
        body.cache = False
    return body


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header, if any (at most 255 characters)."""
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 255:
        raise ApiError(400, "Idempotency-Key must be at most 255 characters.", param="Idempotency-Key")
    return key


def submit_job(
    session: orm.Session, body: JobCreate, idempotency_key: str | None, caller: Caller
) -> tuple[Job, bool]:
    """Insert the job, owned by the caller's key, and enqueue its task; returns (job, created). A
    failed enqueue leaves no row. Submits arriving together share the insert and the Redis round trips
    (app/jobs/grouped.py). The Idempotency-Key replays only the owner's own jobs. Priority
    `high` is for admin keys (and single-user mode); its lane and bucket: app/queue.py job_queue.

    A request whose answer is in the response cache is stored already succeeded. Profile `auto`
    is routed here, with the current load, once the body has been validated; then the profile's
    sampling defaults and today's date are filled in (app/jobs/defaults.py).
    """
    owner = caller.key_id
    if body.priority == "high" and not caller.admin:
        raise ApiError(
            403,
            "Priority 'high' (service_tier 'priority') is for admin keys; use 'normal' or 'low'.",
            param="priority",
            code="priority_not_allowed",
        )
    found = services()
    body.route(found.router)
    body.fill_defaults(found.sampling_defaults(body.queue_profile), today_utc())
    check_prompt_fits(body)
    request = body.model_dump(mode="json", exclude_none=True)
    idempotency_key = job_store.owned_idempotency_key(idempotency_key, owner)
    if idempotency_key:
        replayed = _replayed_job(session, idempotency_key, body.replay_request())
        if replayed is not None:
            return replayed, False
    if found.cached_jobs is not None:
        cached = found.cached_jobs.serve(session, body, request, idempotency_key, owner)
        if cached is not None:
            return cached, True
    row = job_store.job_row(body, idempotency_key=idempotency_key, owner=owner)
    lane = job_queue(row["profile"], row.get("batch_id"), row["request"], owner)
    try:
        found.submits.store_and_queue(row, QueuedJob(row["id"], row["profile"], row["task_id"], lane))
    except sa_exc.IntegrityError:  # a concurrent submit with the same key won the insert
        replayed = _replayed_job(session, idempotency_key or "", body.replay_request())
        if replayed is None:
            raise
        return replayed, False
    except QueueUnavailable as exc:
        raise ApiError(
            503,
            "The job queue is unavailable; the job was not created. Retry later.",
            type="server_error",
            code="queue_unavailable",
        ) from exc
    recent_served_tags(found.redis, row["profile"])  # the request's metric labels (app/metrics.py)
    return Job(**row), True


def _replayed_job(session: orm.Session, key: str, request: dict) -> Job | None:
    """The job stored under this key, if any; 409 when the key was used for a different request."""
    job = job_store.find_job_by_idempotency_key(session, key)
    if job is not None and job.request_hash != job_store.request_hash(request):
        raise ApiError(
            409,
            "This Idempotency-Key was already used with a different request body.",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )
    return job
