"""The worker's job observer: a transition log line and metrics for each job it starts and finishes."""

from __future__ import annotations

import logging
from datetime import datetime

from app.jobs.log import log_job_transition
from app.jobs.store import JobOutcome
from app.models import Job
from engine.types import ModelTags
from workers.metrics import observe_finished_job
from workers.quality_metrics import observe_answer_quality

log = logging.getLogger(__name__)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 6)


class MetricsAndLogObserver:
    """Never raises: a metrics or logging bug must not fail a job whose result is already stored."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def job_started(self, job: Job, tags: ModelTags) -> None:
        try:
            log_job_transition(
                "started",
                job.id,
                tags.as_dict(),
                worker=self.hostname,
                attempt=job.attempts,
                queue_wait_s=_seconds_between(job.created_at, job.started_at),
            )
        except Exception:
            log.exception("job %s: could not log its start", job.id)

    def job_finished(self, job: Job, outcome: JobOutcome) -> None:
        try:
            observe_finished_job(job, outcome)
            observe_answer_quality(job)
            log_job_transition(
                job.status,
                job.id,
                job.tags() or {"profile": job.profile},
                worker=self.hostname,
                finish_reason=job.finish_reason,
                error=job.error,
                prompt_tokens=job.prompt_tokens,
                completion_tokens=job.completion_tokens,
                queue_wait_s=_seconds_between(job.created_at, job.started_at),
                ttft_s=job.ttft_s,
                e2e_s=job.e2e_s,
            )
        except Exception:
            log.exception("job %s: could not record its metrics", job.id)
