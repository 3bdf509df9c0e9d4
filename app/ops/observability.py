"""Wire metrics and job transition logs into an app (API and worker processes alike)."""

from __future__ import annotations

from flask import Flask

from app.jobs.log import configure_job_log, logging_enqueue
from app.metrics import init_api_metrics
from app.ops.served_models import served_tags_in_request


def init_observability(app: Flask) -> None:
    """Request metrics, the queue-depth collector, and a `job.queued` line for each enqueued job."""
    configure_job_log()
    init_api_metrics(app)
    client = app.extensions["gptoss_redis"]

    def announced_tags(profile: str) -> dict[str, str] | None:
        return served_tags_in_request(client, profile)

    app.extensions["gptoss_enqueue"] = logging_enqueue(app.extensions["gptoss_enqueue"], announced_tags)
