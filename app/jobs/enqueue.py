"""The one way a job reaches its profile's queue: the `queued` event, the message, the `job.queued` line.

Single submits (jobs, chat, the cache's misses), batch ingest and worker requeues all go through a
JobQueue, so every queued job's event stream starts with `queued` and every one gets its log line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis
from celery import Celery

from app.jobs.events import JobEventLog, events_key
from app.jobs.log import log_job_transition
from app.ops.served_models import recent_served_tags
from app.queue import QueuedJob, send_run_job, send_run_jobs

# enqueue(job_id, profile, task_id, queue) puts the job's task on its queue (job_queue), raising on failure.
Enqueue = Callable[[str, str, str, str], None]


class JobQueue:
    def __init__(self, celery_app: Celery, events: JobEventLog, client: redis.Redis) -> None:
        self.celery_app, self.events, self.client = celery_app, events, client

    def enqueue(self, job_id: str, profile: str, task_id: str, queue: str) -> None:
        """Queue one job on its queue (app/queue.py job_queue); raises (leaving no event) on failure."""
        self.enqueue_many([QueuedJob(job_id, profile, task_id, queue)])

    def enqueue_many(self, jobs: Sequence[QueuedJob]) -> None:
        """Queue jobs, many messages per Redis round trip; raises (leaving no events) when the broker fails.

        The events go first: a fast worker must not publish `started` before `queued`."""
        if not jobs:
            return
        self.events.append_many(
            [(job.job_id, "queued", {"id": job.job_id, "profile": job.profile}) for job in jobs]
        )
        try:
            if len(jobs) == 1:
                send_run_job(self.celery_app, *jobs[0])
            else:
                send_run_jobs(self.celery_app, jobs)
        except Exception:
            self.events.client.delete(*(events_key(job.job_id) for job in jobs))
            raise
        tags: dict[str, dict[str, str]] = {}
        for job_id, profile, _, _ in jobs:
            if profile not in tags:
                tags[profile] = self._announced_tags(profile)
            log_job_transition("queued", job_id, tags[profile] | {"profile": profile})

    def _announced_tags(self, profile: str) -> dict[str, str]:
        try:
            return recent_served_tags(self.client, profile) or {}
        except Exception:  # the job is queued; a missing log field must not turn that into an error
            return {}
