"""Celery messages of the Batch API: ingest and watch tasks on the `batches` queue, and job runs in bulk."""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery

from app.queue import RUN_JOB_TASK

BATCHES_QUEUE = "batches"  # consumed by the batch worker (Procfile `batches`), never by a model worker
INGEST_BATCH_TASK = "workers.batch_tasks.ingest_batch"
WATCH_BATCH_TASK = "workers.batch_tasks.watch_batch"

PUBLISH_BATCH = 1000  # messages buffered in one Redis pipeline (kombu >= 5.7 batches publishes)

QueuedJob = tuple[str, str, str]  # (job id, profile, task id)


def send_ingest(celery_app: Celery, batch_id: str) -> None:
    """Queue the validation and job creation of a batch; raises when the broker cannot take it."""
    celery_app.send_task(INGEST_BATCH_TASK, args=[batch_id], queue=BATCHES_QUEUE)


def send_watch(celery_app: Celery, batch_id: str, countdown: float = 0.0) -> None:
    """Queue the next check of a running batch (its end, its cancel, its expiry)."""
    celery_app.send_task(WATCH_BATCH_TASK, args=[batch_id], queue=BATCHES_QUEUE, countdown=countdown or None)


def enqueue_jobs(celery_app: Celery, jobs: Iterable[QueuedJob]) -> None:
    """Put run_job(job_id) on each job's profile queue, many messages per Redis round trip."""
    declared: set[str] = set()
    with celery_app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
        for job_id, profile, task_id in jobs:
            # declaring each queue once per call, and giving argsrepr, halve Celery's per-message cost
            declare: list[str] | None = None if profile not in declared else []
            declared.add(profile)
            celery_app.send_task(
                RUN_JOB_TASK, args=[job_id], queue=profile, task_id=task_id, producer=producer,
                declare=declare, argsrepr=repr([job_id]), kwargsrepr="{}",
            )  # fmt: skip
