"""The API side of the response cache: a hit becomes a job that is already succeeded, run by no worker.

The new job copies the cached answer, its usage, quality signals and the ORIGINAL job's five tags
(the model that really produced the text), and names that job in `cached_from`. Its event stream
gets the whole answer as one `delta` then `done`, so SSE readers and streamed chat completions
see the text like any other job's. Lookups count in gptoss_response_cache_lookups_total{result}:
hit, miss (cacheable, not found) or bypass (sampled, opted out or release-gate traffic).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from prometheus_client import Counter
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm

from app.cache.store import (
    CachedAnswer,
    ModelIdentity,
    ResponseCache,
    cache_key,
    is_cacheable,
    served_revision,
)
from app.jobs.events import JobEventLog
from app.jobs.render import job_json
from app.jobs.schemas import JobCreate
from app.jobs.store import job_row
from app.metrics import API_REGISTRY, JOBS_FINISHED_IN_API, TAG_LABELS, tag_values
from app.models import Job, JobStatus
from app.ops.served_models import recent_served_tags

log = logging.getLogger(__name__)

CACHED_TASK_ID = "cached"  # jobs served from the cache have no Celery task
RESPONSE_CACHE_LOOKUPS = Counter(
    "gptoss_response_cache_lookups",
    "Response cache lookups of submitted jobs: hit, miss (cacheable, not stored) or bypass (not cacheable)",
    [*TAG_LABELS, "result"],
    registry=API_REGISTRY,
)


class CachedJobs:
    """Serves submitted jobs from the response cache when their answer is already known."""

    def __init__(self, cache: ResponseCache, events: JobEventLog) -> None:
        self.cache = cache
        self.client = cache.client
        self.events = events

    def serve(
        self,
        session: orm.Session,
        body: JobCreate,
        request: dict[str, Any],
        idempotency_key: str | None,
        owner: str | None,
    ) -> Job | None:
        """The finished job made from a cached answer, or None (then the job goes to a worker)."""
        profile = body.queue_profile
        try:
            tags = recent_served_tags(self.client, profile)
            labels = tag_values(tags, profile)
            if not is_cacheable(request):
                RESPONSE_CACHE_LOOKUPS.labels(**labels, result="bypass").inc()
                return None
            answer = self._lookup(tags, profile, request)
        except redis.RedisError as exc:  # the cache is an optimisation: the job still runs
            log.warning("response cache unavailable: %s", exc)
            return None
        if answer is None:
            RESPONSE_CACHE_LOOKUPS.labels(**labels, result="miss").inc()
            return None
        job = self._insert(session, body, idempotency_key, owner, answer)
        if job is None:
            return None
        RESPONSE_CACHE_LOOKUPS.labels(**labels, result="hit").inc()
        JOBS_FINISHED_IN_API.labels(**tag_values(answer.tags, profile), status=JobStatus.SUCCEEDED).inc()
        self._publish(job)
        return job

    def _lookup(
        self, tags: dict[str, str] | None, profile: str, request: dict[str, Any]
    ) -> CachedAnswer | None:
        if tags is None:  # no worker has announced its model yet: the key is unknown
            return None
        revision = served_revision(self.client, profile) or ""
        return self.cache.get(cache_key(ModelIdentity(tags["engine"], tags["model_id"], revision), request))

    def _insert(
        self,
        session: orm.Session,
        body: JobCreate,
        idempotency_key: str | None,
        owner: str | None,
        answer: CachedAnswer,
    ) -> Job | None:
        row = job_row(
            body,
            task_id=CACHED_TASK_ID,
            idempotency_key=idempotency_key,
            owner=owner,
            status=JobStatus.SUCCEEDED,
            content=answer.content,
            reasoning=answer.reasoning,
            finish_reason=answer.finish_reason,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            reasoning_tokens=answer.reasoning_tokens,
            cached_from=answer.job_id,
            **{f"tag_{name}": value for name, value in answer.tags.items()},
            **answer.quality,
        )
        job = Job(**(row | {"finished_at": row["created_at"]}))  # served the moment it was asked
        session.add(job)
        try:
            session.commit()
        except sa_exc.IntegrityError:  # a concurrent submit took the idempotency key: let it replay
            session.rollback()
            return None
        return job

    def _publish(self, job: Job) -> None:
        try:
            delta = {"content": job.content, "reasoning": job.reasoning}
            self.events.append(job.id, "delta", {**delta, "completion_tokens": job.completion_tokens})
            self.events.append(job.id, "done", job_json(job))
        except redis.RedisError as exc:  # readers fall back to the stored job
            log.warning("job %s: could not publish its cached answer: %s", job.id, exc)
