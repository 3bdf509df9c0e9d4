"""Celery glue: one queue per profile plus `batches`, JSON only, late acks, tasks inside the app context.

Every task name and every message the API or a worker sends is here. The names keep the modules
the tasks were first registered in ("workers.batch_tasks.ingest_batch", ...): messages already
queued, and beat schedules already stored, name them so.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from celery import Celery, Task
from flask import Flask
from kombu import Exchange, Queue

from app.settings import Settings

RUN_JOB_TASK = "workers.tasks.run_job"
INGEST_BATCH_TASK = "workers.batch_tasks.ingest_batch"
WATCH_BATCH_TASK = "workers.batch_tasks.watch_batch"
RECONCILE_TASK = "workers.reconciler.reconcile"
RUN_GATE_TASK = "gate.tasks.run_scheduled_gate"
PURGE_TASK = "workers.retention.purge"

BATCHES_QUEUE = "batches"  # consumed by the batch worker (Procfile `batches`), never by a model worker
PUBLISH_BATCH = 1000  # messages buffered in one Redis pipeline (kombu >= 5.7 batches publishes)

QueuedJob = tuple[str, str, str]  # (job id, profile, task id)


def celery_config(settings: Settings, profile_names: list[str]) -> dict[str, Any]:
    """Celery settings; the DB, not Celery, stores results."""
    visibility_timeout = settings.visibility_timeout_s
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout,
            "socket_connect_timeout": 2,
            **unacked_restore_options(visibility_timeout),
        },
        "broker_connection_max_retries": None,  # a worker outlives any Redis outage, then consumes again
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in profile_names],
        "task_default_queue": profile_names[0],
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # a submit must fail fast (and answer 503) when Redis is down, not hang for ever
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        "worker_hijack_root_logger": False,
        "include": ["workers.tasks", "workers.reconciler", "workers.retention"],
        "beat_schedule": {
            **reconcile_beat_schedule(settings),
            **purge_beat_schedule(settings),
            **gate_beat_schedule(settings),
        },
    }


def unacked_restore_options(visibility_timeout_s: float) -> dict[str, int]:
    """Sweep for messages of dead workers often enough for the visibility timeout (kombu: every 100 s).

    A worker killed inside a sweep leaves the sweep's lock behind; it expires after a few sweeps
    (kombu: 5 minutes, during which nothing is redelivered). Two overlapping sweeps at worst
    deliver a message twice, which the job's claim guard turns into a no-op.
    """
    interval = max(1, min(10, int(visibility_timeout_s) // 3))
    return {
        "unacked_restore_interval": interval,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 5 * interval,
    }


def reconcile_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The celery beat entry of the reconciler: on the batch worker's queue (it loads no model)."""
    interval = settings.reliability.reconcile_interval_s
    if interval <= 0:
        return {}
    # `expires`: a run nobody took within one interval is dropped; the next one does its work
    options = {"queue": BATCHES_QUEUE, "expires": interval}
    return {"reconcile-jobs": {"task": RECONCILE_TASK, "schedule": interval, "options": options}}


def purge_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The celery beat entry of the retention purge (workers/retention.py), on the batch worker's queue."""
    interval = settings.retention.purge_interval_s
    if interval <= 0:
        return {}
    options = {"queue": BATCHES_QUEUE, "expires": interval}
    return {"purge-expired": {"task": PURGE_TASK, "schedule": interval, "options": options}}


def gate_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery beat's entry for the scheduled gate; empty when GATE_SCHEDULE_S is 0."""
    gate = settings.gate
    if gate.schedule_s <= 0:
        return {}
    return {
        "release-gate": {
            "task": RUN_GATE_TASK,
            "schedule": timedelta(seconds=gate.schedule_s),
            "options": {"queue": gate.queue, "expires": gate.schedule_s},
        }
    }


def make_celery(app: Flask, settings: Settings, profile_names: list[str]) -> Celery:
    """The app's Celery, whose tasks run inside the Flask app context."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_config(settings, profile_names))
    celery_app.set_default()
    app.extensions["celery"] = celery_app  # where Flask's Celery pattern (and `celery -A`) looks
    return celery_app


def send_run_job(celery_app: Celery, job_id: str, profile: str, task_id: str) -> None:
    """Put run_job(job_id) on the profile's queue; raises when the broker cannot take it."""
    celery_app.send_task(RUN_JOB_TASK, args=[job_id], queue=profile, task_id=task_id)


def send_run_jobs(celery_app: Celery, jobs: Iterable[QueuedJob]) -> None:
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


def send_ingest(celery_app: Celery, batch_id: str) -> None:
    """Queue the validation and job creation of a batch; raises when the broker cannot take it."""
    celery_app.send_task(INGEST_BATCH_TASK, args=[batch_id], queue=BATCHES_QUEUE)


def send_watch(celery_app: Celery, batch_id: str, countdown: float = 0.0) -> None:
    """Queue the next check of a running batch (its end, its cancel, its expiry)."""
    celery_app.send_task(WATCH_BATCH_TASK, args=[batch_id], queue=BATCHES_QUEUE, countdown=countdown or None)
