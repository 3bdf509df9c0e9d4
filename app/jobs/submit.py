"""Submit and cancel jobs: the DB row, the Celery task and the cancel signal kept consistent."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm

from app.errors import ApiError
from app.jobs import store as job_store
from app.jobs.cancel import signal_cancel
from app.jobs.events import JobEventLog
from app.jobs.log import log_job_transition
from app.jobs.render import job_json
from app.jobs.schemas import JobCreate
from app.metrics import count_cancelled_while_queued
from app.models import Job

if TYPE_CHECKING:
    from app.cache.jobs import CachedJobs

log = logging.getLogger(__name__)

# enqueue(job_id, profile, task_id) puts the job's task on the profile's queue, raising on failure.
Enqueue = Callable[[str, str, str], None]


def submit_job(
    session: orm.Session,
    body: JobCreate,
    idempotency_key: str | None,
    enqueue: Enqueue,
    cached_jobs: CachedJobs | None = None,
) -> tuple[Job, bool]:
    """Insert the job and enqueue its task; returns (job, created). A failed enqueue leaves no row.

    With `cached_jobs`, a request whose answer is in the response cache is stored already succeeded.
    """
    request = body.model_dump(mode="json", exclude_none=True)
    if idempotency_key:
        replayed = _replayed_job(session, idempotency_key, request)
        if replayed is not None:
            return replayed, False
    cached = cached_jobs.serve(session, body, request, idempotency_key) if cached_jobs is not None else None
    if cached is not None:
        return cached, True
    task_id = str(uuid.uuid4())
    try:
        job = job_store.insert_job(
            session,
            profile=body.queue_profile,
            request=request,
            task_id=task_id,
            idempotency_key=idempotency_key,
            **body.routing_columns(),
        )
    except sa_exc.IntegrityError:  # a concurrent submit with the same key won the insert
        session.rollback()
        replayed = _replayed_job(session, idempotency_key or "", request)
        if replayed is None:
            raise
        return replayed, False
    try:
        enqueue(job.id, job.profile, task_id)
    except Exception as exc:
        log.warning("enqueue of %s failed, removing the job: %s", job.id, exc)
        job_store.delete_job(session, job.id)
        raise ApiError(
            503,
            "The job queue is unavailable; the job was not created. Retry later.",
            type="server_error",
            code="queue_unavailable",
        ) from exc
    return job, True


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


def cancel_job(
    session: orm.Session,
    job_id: str,
    *,
    redis_client: redis.Redis,
    revoke: Callable[[str], None],
    ttl_s: int,
    events: JobEventLog | None = None,
) -> Job:
    """Cancel a queued job at once, or signal a running one; 404 unknown, 409 already finished."""
    job = get_job_or_404(session, job_id)
    if job_store.cancel_queued_job(session, job_id):
        count_cancelled_while_queued(job.profile)
        log_job_transition("cancelled", job_id, {"profile": job.profile}, from_status="queued")
        _revoke_quietly(revoke, job.task_id)
        if events is not None:  # no worker will ever end this job's stream
            session.refresh(job)
            _publish_quietly(events, job_id, "cancelled", job_json(job))
    elif job_store.request_cancel_of_running_job(session, job_id):
        log_job_transition("cancel_requested", job_id, {"profile": job.profile}, from_status="running")
        try:
            signal_cancel(redis_client, job_id, ttl_s)
        except redis.RedisError as exc:
            raise ApiError(
                503,
                "Could not signal the worker (Redis unavailable); retry the cancel.",
                type="server_error",
                code="queue_unavailable",
            ) from exc
    else:
        session.refresh(job)
        raise ApiError(409, f"Job {job_id} already finished with status '{job.status}'.", code="job_finished")
    session.refresh(job)
    return job


def _publish_quietly(events: JobEventLog, job_id: str, event_type: str, data: dict) -> None:
    try:
        events.append(job_id, event_type, data)
    except redis.RedisError as exc:
        log.warning("job %s: could not publish %s event: %s", job_id, event_type, exc)


def _revoke_quietly(revoke: Callable[[str], None], task_id: str) -> None:
    """Revoking saves a worker the wake-up; the claim guard makes it safe when it fails."""
    try:
        revoke(task_id)
    except Exception as exc:
        log.warning("revoke of task %s failed: %s", task_id, exc)


def get_job_or_404(session: orm.Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise ApiError(404, f"No job with id '{job_id}'.", param="id", code="job_not_found")
    return job
