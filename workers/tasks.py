"""Celery tasks: thin wrappers that pass a job id to plain functions."""

from __future__ import annotations

from celery import shared_task

from app.queue import RUN_JOB_TASK
from workers.job_runner import run_job as run_job_now
from workers.runtime import worker_context


@shared_task(bind=True, name=RUN_JOB_TASK, ignore_result=True)
def run_job(self, job_id: str) -> None:  # type: ignore[no-untyped-def]
    """Run one job on this worker's engine; a second delivery of the same job is a no-op."""
    run_job_now(job_id, worker_context(self.request.hostname))
