"""The reconciler: finds work nobody is going to do and gets it done (celery beat runs it periodically).

- a job `queued` for longer than RECONCILE_STUCK_AFTER_S whose message is in no queue and held by no
  worker (lost: Redis restarted without persistence, a crash between insert and publish) is sent again;
- a job `running` for longer than that whose worker is gone is requeued, or failed after MAX_ATTEMPTS;
- a batch whose jobs all ended is finalized (in case its watch message was lost);
- a batch still `validating`, or with lines not yet made jobs, that nobody ingests (no ingest lease:
  its batch worker died, or its retries ran out) is sent to ingest again.
All of it is idempotent: a duplicate message finds its job already claimed and does nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import redis
import sqlalchemy as sa
from celery import shared_task
from flask import Flask, current_app
from sqlalchemy import orm

from app.batches.lease import is_leased
from app.batches.lifecycle import LifecycleContext, check_batch
from app.batches.models import Batch, BatchStatus
from app.models import Job, JobStatus, utcnow
from app.queue import RECONCILE_TASK, job_queue, profile_queue_keys, send_ingest, send_run_job
from app.services import services
from workers.recovery import Enqueue, requeue_or_give_up, worker_is_gone

log = logging.getLogger(__name__)

LOCK_KEY = "gptoss:reconciler:lock"  # one pass at a time, however many batch workers there are
UNACKED_KEY = "unacked"  # kombu's hash of delivered, not yet acknowledged messages
SCAN_CHUNK = 500  # queue entries read per round trip
MAX_JOBS_PER_PASS = 1000
UNFINISHED_BATCHES = (BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING)
INGESTED_STATUSES = (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING)  # validated: jobs are being made


@dataclass
class ReconcileContext:
    sessions: orm.sessionmaker[orm.Session]
    redis_client: redis.Redis
    enqueue: Enqueue  # enqueue(job_id, profile, task_id, queue): the plain Celery publish
    stuck_after_s: float
    heartbeat_ttl_s: float
    batches: LifecycleContext
    ingest: Callable[[str], None]  # send_ingest(batch_id): validation and job creation, resumed


@dataclass
class ReconcileReport:
    resent: list[str] = field(default_factory=list)  # queued jobs whose message was lost
    requeued: list[str] = field(default_factory=list)  # running jobs of dead workers, queued again
    failed: list[str] = field(default_factory=list)  # running jobs of dead workers, out of attempts
    batches_finished: list[str] = field(default_factory=list)
    batches_resumed: list[str] = field(default_factory=list)  # stalled ingests sent again

    def __bool__(self) -> bool:
        return any(asdict(self).values())


def reconcile_once(ctx: ReconcileContext, now: datetime | None = None) -> ReconcileReport:
    """One pass over stuck jobs and unfinished batches."""
    cutoff = (now or utcnow()) - timedelta(seconds=ctx.stuck_after_s)
    report = ReconcileReport(resent=resend_lost_messages(ctx, cutoff))
    report.requeued, report.failed = recover_jobs_of_dead_workers(ctx, cutoff)
    report.batches_finished = finish_ended_batches(ctx)
    report.batches_resumed = resume_stalled_ingests(ctx, cutoff)
    return report


def resume_stalled_ingests(ctx: ReconcileContext, cutoff: datetime) -> list[str]:
    """Send the ingest again of each batch made before `cutoff` that still waits for it (validating, or
    fewer jobs than lines) while no ingest holds its lease."""
    with ctx.sessions() as session:
        validating = Batch.status == BatchStatus.VALIDATING
        half_made = sa.and_(Batch.status.in_(INGESTED_STATUSES), Batch.request_total > jobs_of_batch())
        query = sa.select(Batch.id).where(Batch.created_at < cutoff, sa.or_(validating, half_made))
        batch_ids = list(session.scalars(query.order_by(Batch.id).limit(100)))
    stalled = [batch_id for batch_id in batch_ids if not is_leased(ctx.redis_client, batch_id)]
    for batch_id in stalled:
        ctx.ingest(batch_id)
    if stalled:
        log.warning("batches whose ingest stopped, sent again: %s", stalled)
    return stalled


def jobs_of_batch() -> sa.ScalarSelect[int]:
    return sa.select(sa.func.count(Job.id)).where(Job.batch_id == Batch.id).scalar_subquery()


def resend_lost_messages(ctx: ReconcileContext, cutoff: datetime) -> list[str]:
    """Send again the task of every job queued before `cutoff` whose message Redis no longer has."""
    with ctx.sessions() as session:
        query = (
            sa.select(Job.id, Job.profile, Job.task_id, Job.batch_id, Job.request, Job.owner)
            .where(Job.status == JobStatus.QUEUED, Job.created_at < cutoff)
            .order_by(Job.created_at)
            .limit(MAX_JOBS_PER_PASS)
        )
        stuck = session.execute(query).all()
    if not stuck:
        return []
    profiles = sorted({job.profile for job in stuck})  # the jobs' own profiles, even a removed one
    present = task_ids_in_broker(ctx.redis_client, profiles, {job.task_id for job in stuck})
    resent = []
    for job_id, profile, task_id, batch_id, request, owner in stuck:
        if task_id not in present:
            ctx.enqueue(job_id, profile, task_id, job_queue(profile, batch_id, request, owner))
            resent.append(job_id)
    if resent:
        log.warning("re-sent %d queued job(s) whose message was lost: %s", len(resent), resent[:20])
    return resent


def task_ids_in_broker(client: redis.Redis, profiles: list[str], wanted: set[str]) -> set[str]:
    """Which of the `wanted` task ids sit in a profile's queue or in a worker's unacknowledged messages."""
    found: set[str] = set()
    for profile in profiles:
        for key in profile_queue_keys(profile):
            found |= _scan_queue(client, key, wanted - found)
            if found == wanted:
                return found
    for raw in client.hvals(UNACKED_KEY):  # type: ignore[union-attr]
        task_id = _task_id(json.loads(raw)[0])
        if task_id in wanted:
            found.add(task_id)
    return found


def _scan_queue(client: redis.Redis, key: str, wanted: set[str]) -> set[str]:
    """Read a kombu queue from its tail (the oldest messages: kombu pushes left, workers pop right)."""
    found: set[str] = set()
    length = int(client.llen(key))  # type: ignore[arg-type]
    end = -1
    while wanted - found and end >= -length:
        chunk: Any = client.lrange(key, max(-length, end - SCAN_CHUNK + 1), end)
        found |= {task_id for raw in chunk if (task_id := _task_id(json.loads(raw))) in wanted}
        end -= SCAN_CHUNK
    return found


def _task_id(message: dict[str, Any]) -> str | None:
    return (message.get("headers") or {}).get("id") or (message.get("properties") or {}).get("correlation_id")


def recover_jobs_of_dead_workers(ctx: ReconcileContext, cutoff: datetime) -> tuple[list[str], list[str]]:
    """Requeue (or fail, once out of attempts) each job running since before `cutoff` on a dead worker."""
    requeued: list[str] = []
    failed: list[str] = []
    with ctx.sessions() as session:
        query = (
            sa.select(Job)
            .where(Job.status == JobStatus.RUNNING, Job.started_at < cutoff)
            .order_by(Job.started_at)
            .limit(MAX_JOBS_PER_PASS)
        )
        for job in session.scalars(query).all():
            if not worker_is_gone(
                ctx.redis_client, ctx.heartbeat_ttl_s, job.worker_hostname or "", job.started_at
            ):
                continue
            outcome = requeue_or_give_up(session, job, ctx.enqueue)
            if outcome is not None:
                (requeued if outcome == "requeued" else failed).append(job.id)
    if requeued or failed:
        log.warning("jobs of dead workers: requeued %s, failed %s", requeued, failed)
    return requeued, failed


def finish_ended_batches(ctx: ReconcileContext) -> list[str]:
    """Check every unfinished batch once; returns those that are final now."""
    with ctx.sessions() as session:
        query = sa.select(Batch.id).where(Batch.status.in_(UNFINISHED_BATCHES)).order_by(Batch.id).limit(100)
        batch_ids = list(session.scalars(query))
    return [batch_id for batch_id in batch_ids if check_batch(ctx.batches, batch_id)]


def reconcile_context(app: Flask) -> ReconcileContext:
    """The reconciler's view of an app (run in the batch worker, which loads no model)."""
    found = services(app)
    return ReconcileContext(
        sessions=found.sessions,
        redis_client=found.redis,
        enqueue=partial(send_run_job, found.celery),
        ingest=partial(send_ingest, found.celery),
        stuck_after_s=found.settings.reliability.reconcile_stuck_after_s,
        heartbeat_ttl_s=found.settings.observability.heartbeat_ttl_s,
        batches=LifecycleContext(
            sessions=found.sessions,
            files=found.files,
            redis_client=found.redis,
            cancel_ttl_s=found.settings.cancel_signal_ttl_s,
        ),
    )


# Acked on receipt: a lost pass costs nothing (beat sends the next), while an unacked message in
# flight when the broker goes away made kombu crash the whole batch worker as it closed the channel
# (restore_unacked -> AttributeError on a cleared connection; seen in tests/faults' Redis restart).
@shared_task(name=RECONCILE_TASK, ignore_result=True, acks_late=False)
def reconcile() -> None:
    """One reconciler pass, unless another one is running."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    ctx = reconcile_context(app)
    hold_s = max(10, int(services(app).settings.reliability.reconcile_interval_s))
    if not ctx.redis_client.set(LOCK_KEY, "1", nx=True, ex=hold_s):
        log.info("another reconciler pass is running; skipping this one")
        return
    try:
        report = reconcile_once(ctx)
    finally:
        ctx.redis_client.delete(LOCK_KEY)
    if report:
        log.warning("reconciler: %s", asdict(report))
