"""Celery tasks of the `batches` queue: thin wrappers around ingest and the batch check."""

from __future__ import annotations

import logging
from functools import partial

from celery import shared_task
from flask import Flask, current_app

from app.batches.ingest import IngestContext
from app.batches.ingest import ingest_batch as ingest_batch_now
from app.batches.lifecycle import LifecycleContext, check_batch
from app.batches.lines import LineContext
from app.batches.queue import INGEST_BATCH_TASK, WATCH_BATCH_TASK, enqueue_jobs, send_watch
from app.batches.settings import MAX_LINE_BYTES, BatchSettings
from app.ops.served_models import served_model_ids

log = logging.getLogger(__name__)


def ingest_context(app: Flask) -> IngestContext:
    """What ingest needs, from a Flask app (the profiles, and the model ids workers announced)."""
    settings = BatchSettings.from_config(app.config)
    profiles = app.extensions["gptoss_profiles"]
    served = served_model_ids(app.extensions["gptoss_redis"], list(profiles))
    router = app.extensions.get("gptoss_router")
    lines = LineContext(profiles, served, settings.max_batch_lines, MAX_LINE_BYTES, router)
    return IngestContext(
        sessions=app.extensions["gptoss_sessions"],
        files_dir=settings.files_dir,
        lines=lines,
        insert_chunk=settings.insert_chunk,
        enqueue_jobs=partial(enqueue_jobs, app.extensions["celery"]),
    )


def lifecycle_context(app: Flask) -> LifecycleContext:
    return LifecycleContext(
        sessions=app.extensions["gptoss_sessions"],
        files_dir=BatchSettings.from_config(app.config).files_dir,
        redis_client=app.extensions["gptoss_redis"],
        cancel_ttl_s=app.config["CANCEL_SIGNAL_TTL_S"],
    )


def _app() -> Flask:
    return current_app._get_current_object()  # type: ignore[attr-defined]


# Both tasks are safe to run twice: ingest resumes after its last inserted line and every batch
# transition is a guarded UPDATE. A crash mid-ingest is retried with backoff.
@shared_task(
    name=INGEST_BATCH_TASK, ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5
)
def ingest_batch(batch_id: str) -> None:
    """Validate a batch's input file, create and enqueue its jobs, then start watching it."""
    app = _app()
    status = ingest_batch_now(ingest_context(app), batch_id)
    if status is None:  # deleted, or this worker reads another database than the API that queued it
        log.warning("batch %s does not exist in this worker's database; nothing to ingest", batch_id)
        return
    log.info("batch %s ingested: %s", batch_id, status)
    send_watch(app.extensions["celery"], batch_id)


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
        interval = BatchSettings.from_config(app.config).check_interval_s
        send_watch(app.extensions["celery"], batch_id, countdown=interval)
