"""Jobs whose worker died: how to tell, and what then (take over, requeue, or give up after MAX_ATTEMPTS).

A running job's worker is gone when its heartbeat key has expired (and Redis has been up long enough
for every live worker to have written one), or when its name now belongs to a process that started
after the job was claimed (the worker restarted). Each run of a job counts one attempt, so a job that
crashes every worker it reaches fails after MAX_ATTEMPTS instead of looping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import redis
from sqlalchemy import orm

from app.jobs import store as job_store
from app.jobs.store import JobOutcome
from app.models import Job, JobStatus
from app.ops.heartbeats import WorkerHeartbeat, worker_key
from app.queue import job_queue

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a job whose worker died this many times fails instead of running again

# is_gone(worker_hostname, job_started_at): is the process that claimed the job dead?
IsGone = Callable[[str, datetime | None], bool]
Enqueue = Callable[[str, str, str, str], None]


def redis_uptime_s(client: redis.Redis) -> float:
    return float(client.info("server")["uptime_in_seconds"])  # type: ignore[index]


def worker_is_gone(
    client: redis.Redis, heartbeat_ttl_s: float, hostname: str, job_started_at: datetime | None
) -> bool:
    """True when the worker process that claimed a job (at job_started_at) is dead."""
    fields = client.hgetall(worker_key(hostname))
    if not fields:  # expired, unless Redis itself just restarted and the heartbeats are not back yet
        return redis_uptime_s(client) >= heartbeat_ttl_s
    beat = WorkerHeartbeat.from_fields(hostname, fields)  # type: ignore[arg-type]
    return job_started_at is not None and beat.started_at > job_started_at.timestamp()


def give_up(session: orm.Session, job: Job) -> bool:
    """running -> failed, with an error that says why; False when the job is no longer running."""
    error = (
        f"gave up after {job.attempts} attempts: the worker running this job died each time "
        "(a request that crashes its worker?)"
    )
    failed = job_store.finish_job(
        session, job.id, JobOutcome(JobStatus.FAILED, finish_reason="error", error=error)
    )
    if failed is not None:
        log.error("job %s failed: %s", job.id, error)
    return failed is not None


def requeue_or_give_up(session: orm.Session, job: Job, enqueue: Enqueue) -> str | None:
    """Put a job of a dead worker back on its queue, or fail it once it used its attempts.

    Returns "requeued", "failed", or None when the job moved on meanwhile.
    """
    if job.attempts >= MAX_ATTEMPTS:
        return "failed" if give_up(session, job) else None
    if not job_store.requeue_job(session, job.id, job.worker_hostname or ""):
        return None
    # if this fails, the reconciler finds the job without message
    enqueue(job.id, job.profile, job.task_id, job_queue(job.profile, job.batch_id, job.request, job.owner))
    return "requeued"


def take_over_lost_job(session: orm.Session, job_id: str, hostname: str, is_gone: IsGone) -> Job | None:
    """A redelivered task finds its job `running`: run it here when its worker is gone (or fail it)."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.RUNNING or not job.worker_hostname:
        return None
    try:
        gone = is_gone(job.worker_hostname, job.started_at)
    except redis.RedisError as exc:  # cannot tell: leave it to the reconciler
        log.warning("job %s: cannot check worker %s: %s", job_id, job.worker_hostname, exc)
        return None
    if not gone:
        return None  # a live worker runs it; this delivery is a duplicate
    if job.attempts >= MAX_ATTEMPTS:
        give_up(session, job)
        return None
    dead = job.worker_hostname  # read now: the update below refreshes `job`
    taken = job_store.take_over_job(session, job_id, dead, job.attempts, hostname)
    if taken is not None:
        log.warning("job %s: worker %s is gone; running it here (attempt %d)", job_id, dead, taken.attempts)
    return taken
