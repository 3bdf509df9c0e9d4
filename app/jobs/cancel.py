"""The one cancel path: a job (POST /v1/jobs/<id>/cancel, a chat client that left) or a batch's jobs.

A queued job is cancelled at once (its task becomes a no-op, and the API ends its event stream); a
running one is flagged and signalled through a Redis key its worker polls (workers/cancel_watcher.py),
and keeps what it generated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import redis
from sqlalchemy import orm

from app.db import db_session
from app.errors import ApiError
from app.jobs import store as job_store
from app.jobs.events import JobEventLog
from app.jobs.log import log_job_transition
from app.jobs.render import job_json
from app.keys.caller import SERVER, Caller
from app.metrics import count_cancelled_while_queued
from app.models import Job
from app.services import services

log = logging.getLogger(__name__)

CANCEL_KEY_PREFIX = "gptoss:cancel:"


def cancel_key(job_id: str) -> str:
    return f"{CANCEL_KEY_PREFIX}{job_id}"


def signal_cancel(client: redis.Redis, job_ids: list[str], ttl_s: int) -> None:
    """Set the jobs' cancel keys (one round trip); they expire after ttl_s so stale keys do not pile up."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.set(cancel_key(job_id), "1", ex=ttl_s)
    pipe.execute()


def cancelled_job_ids(client: redis.Redis, job_ids: list[str]) -> list[str]:
    """Which of these jobs have their cancel key set (one round trip)."""
    if not job_ids:
        return []
    values = client.mget([cancel_key(job_id) for job_id in job_ids])
    return [job_id for job_id, value in zip(job_ids, values, strict=True) if value is not None]


def cancel(session: orm.Session, job_id: str, caller: Caller) -> Job:
    """Cancel a job of the current app that the caller may see; 404 unknown (or another key's), 409
    already finished."""
    found = services()
    return cancel_job(
        session, job_id, caller, redis_client=found.redis, revoke=found.revoke,
        ttl_s=found.settings.cancel_signal_ttl_s, events=found.events,
    )  # fmt: skip


def cancel_quietly(job_id: str) -> None:
    """Cancel a job whose client left (the server made it for that client); one that finished is fine."""
    try:
        with db_session() as session:
            cancel(session, job_id, SERVER)
    except ApiError:
        pass
    except Exception as exc:  # Redis or the database away too: the reconciler's rules apply to the job
        log.warning("job %s: could not be cancelled: %s", job_id, exc)


def cancel_job(
    session: orm.Session,
    job_id: str,
    caller: Caller,
    *,
    redis_client: redis.Redis,
    revoke: Callable[[str], None],
    ttl_s: int,
    events: JobEventLog | None = None,
) -> Job:
    """Cancel a queued job at once, or signal a running one; 404 unknown, 409 already finished."""
    job = job_store.get_job_or_404(session, job_id, caller)
    if job_store.cancel_queued_job(session, job_id):
        count_cancelled_while_queued(job.profile)
        log_job_transition("cancelled", job_id, {"profile": job.profile}, from_status="queued")
        if job.batch_id is None:  # a batch's lines share their message's task id: revoking drops them all
            _revoke_quietly(revoke, job.task_id)
        if events is not None:  # no worker will ever end this job's stream
            session.refresh(job)
            _publish_quietly(events, job_id, "cancelled", job_json(job))
    elif job_store.request_cancel_of_running_job(session, job_id):
        log_job_transition("cancel_requested", job_id, {"profile": job.profile}, from_status="running")
        try:
            signal_cancel(redis_client, [job_id], ttl_s)
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


def cancel_batch_jobs(
    session: orm.Session, batch_id: str, redis_client: redis.Redis, ttl_s: int, now: datetime
) -> None:
    """Cancel the batch's queued jobs and signal its running ones (which keep what they produced)."""
    job_store.cancel_queued_jobs_of_batch(session, batch_id, now)
    running = job_store.flag_running_jobs_of_batch(session, batch_id, now)
    if running:
        signal_cancel(redis_client, running, ttl_s)


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
