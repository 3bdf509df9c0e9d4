"""Celery glue: one queue per profile, JSON only, late acks, tasks run inside the Flask app context."""

from __future__ import annotations

from functools import partial
from typing import Any

from celery import Celery, Task
from flask import Flask
from kombu import Exchange, Queue

RUN_JOB_TASK = "workers.tasks.run_job"


def celery_config(config: dict[str, Any], profile_names: list[str]) -> dict[str, Any]:
    """Celery settings from the app config; the DB, not Celery, stores results."""
    from app.reliability_settings import reconcile_beat_schedule  # here: app/ imports this module at start

    return {
        "broker_url": config["REDIS_URL"],
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": config["VISIBILITY_TIMEOUT_S"],
            "socket_connect_timeout": 2,
            **unacked_restore_options(config["VISIBILITY_TIMEOUT_S"]),
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
        "include": ["workers.tasks", "workers.reconciler"],
        "beat_schedule": reconcile_beat_schedule(config),
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


def celery_init_app(app: Flask) -> Celery:
    """Create the app's Celery (stored in app.extensions["celery"]) and the enqueue/revoke hooks."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_config(app.config, list(app.extensions["gptoss_profiles"])))
    from app.gate_runs.settings import gate_beat_schedule  # here: app/ imports this module at its start

    celery_app.conf.beat_schedule = {**celery_app.conf.beat_schedule, **gate_beat_schedule(app.config)}
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    app.extensions["gptoss_enqueue"] = partial(enqueue_job, celery_app)
    app.extensions["gptoss_revoke"] = celery_app.control.revoke
    return celery_app


def enqueue_job(celery_app: Celery, job_id: str, profile: str, task_id: str) -> None:
    """Put run_job(job_id) on the profile's queue; raises when the broker cannot take it."""
    celery_app.send_task(RUN_JOB_TASK, args=[job_id], queue=profile, task_id=task_id)
