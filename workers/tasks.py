"""Celery tasks, all thin: each passes an id to a plain function. run_job on the profile queues;
ingest_batch and watch_batch on `batches` (the reconciler's pass is in workers/reconciler.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial

from celery import shared_task
from flask import Flask, current_app

from app.batches.ingest import IngestContext
from app.batches.ingest import ingest_batch as ingest_batch_now
from app.batches.lease import ingest_lease
from app.batches.lifecycle import LifecycleContext, check_batch
from app.batches.lines import LineContext
from app.ops.served_models import served_model_ids
from app.profiles import Profile
from app.queue import (
    INGEST_BATCH_TASK,
    RUN_JOB_TASK,
    WATCH_BATCH_TASK,
    batch_slots_for,
    line_ended,
    lines_per_message,
    message_done,
    send_watch,
)
from app.services import services
from app.settings import MAX_LINE_BYTES
from workers.job_runner import run_job as run_job_now
from workers.job_runner import run_side_by_side
from workers.runtime import worker_context

log = logging.getLogger(__name__)


@shared_task(bind=True, name=RUN_JOB_TASK, ignore_result=True)
def run_job(self, *job_ids: str) -> None:  # type: ignore[no-untyped-def]
    """Run a message's jobs on this worker's engine: one job, or several lines of a batch side by side
    (app/queue.py lines_per_message); a second delivery of the same job is a no-op."""
    worker = worker_context(self.request.hostname)
    if len(job_ids) == 1:
        run_job_now(job_ids[0], worker)
        return
    task_id = self.request.id
    try:  # each line's slot is free for the next batch message as it ends (app/queue.py batch_lines_in_hand)
        run_side_by_side(job_ids, worker, partial(line_ended, task_id))
    finally:
        message_done(task_id)


def ingest_context(app: Flask) -> IngestContext:
    """What ingest needs, from a Flask app (the profiles, and the model ids workers announced)."""
    found = services(app)
    settings = found.settings.batches
    served = served_model_ids(found.redis, found.profile_names)
    lines = LineContext(found.profiles, served, settings.max_batch_lines, MAX_LINE_BYTES, found.router)
    return IngestContext(
        sessions=found.sessions,
        files=found.files,
        lines=lines,
        insert_chunk=settings.insert_chunk,
        enqueue_jobs=found.queue.enqueue_many,
        sampling_defaults=found.sampling_defaults,
        lines_per_message=partial(profile_lines_per_message, found.profiles, settings.reserved_slots),
    )


def profile_lines_per_message(profiles: Mapping[str, Profile], reserved_slots: int, profile: str) -> int:
    """A profile's batch lines per run_job message, from the batch slots its workers keep (app/queue.py)."""
    served = profiles.get(profile)
    if served is None:
        return 1
    return lines_per_message(batch_slots_for(served.max_batch, reserved_slots))


def lifecycle_context(app: Flask) -> LifecycleContext:
    found = services(app)
    return LifecycleContext(
        sessions=found.sessions,
        files=found.files,
        redis_client=found.redis,
        cancel_ttl_s=found.settings.cancel_signal_ttl_s,
    )


def _app() -> Flask:
    return current_app._get_current_object()  # type: ignore[attr-defined]


# Both batch tasks are safe to run twice: ingest resumes after its last inserted line and every
# batch transition is a guarded UPDATE. A crash mid-ingest is retried with backoff.
@shared_task(
    name=INGEST_BATCH_TASK, ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5
)
def ingest_batch(batch_id: str) -> None:
    """Validate a batch's input file, create and enqueue its jobs, then start watching it; held under
    the batch's ingest lease (app/batches/lease.py), so a second message for it waits its turn."""
    app = _app()
    with ingest_lease(services(app).redis, batch_id) as leased:
        if not leased:
            log.info("batch %s is being ingested by another worker; this message does nothing", batch_id)
            return
        status = ingest_batch_now(ingest_context(app), batch_id)
    if status is None:  # deleted, or this worker reads another database than the API that queued it
        log.warning("batch %s does not exist in this worker's database; nothing to ingest", batch_id)
        return
    log.info("batch %s ingested: %s", batch_id, status)
    send_watch(services(app).celery, batch_id)


@shared_task(
    name=WATCH_BATCH_TASK,
    ignore_result=True,
    autoretry_for=(Exception,),
    retry_backoff=True,
    max_retries=None,
)
def watch_batch(batch_id: str) -> None:
    """Check a batch once (end, cancel, expiry); check again later until it reaches a final status."""
    app = _app()
    if not check_batch(lifecycle_context(app), batch_id):
        send_watch(services(app).celery, batch_id, countdown=services(app).settings.batches.check_interval_s)
