"""The worker side of the response cache: store each succeeded deterministic answer once it is saved."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import redis

from app.cache.store import (
    CACHEABLE_FINISH_REASONS,
    CachedAnswer,
    ModelIdentity,
    ResponseCache,
    cache_key,
    is_cacheable,
)
from app.models import Job, JobStatus
from app.profiles import Profile
from app.quality import signals_of_row
from app.settings import CacheSettings
from engine.revision import UNKNOWN_REVISION, model_revision

log = logging.getLogger(__name__)


class AnswerCacheWriter:
    """Called with each job a worker finished; never raises (the job's result is already stored)."""

    def __init__(self, cache: ResponseCache, revision_of: Callable[[str, str], str]) -> None:
        self.cache = cache
        self.revision_of = revision_of  # (profile, model_id) -> revision of the weights serving it

    def __call__(self, job: Job) -> bool:
        """Store the job's answer when it may be reused; True when stored."""
        tags = job.tags()
        if (
            job.status != JobStatus.SUCCEEDED
            or job.finish_reason not in CACHEABLE_FINISH_REASONS
            or tags is None
            or not is_cacheable(job.request)
        ):
            return False
        try:
            revision = self.revision_of(job.profile, tags["model_id"])
            if revision == UNKNOWN_REVISION:  # an answer of unknown weights could outlive them
                return False
            model = ModelIdentity(tags["engine"], tags["model_id"], revision)
            self.cache.put(cache_key(model, job.request), answer_of(job, tags))
        except (redis.RedisError, OSError, ValueError) as exc:
            log.warning("job %s: could not store its answer in the response cache: %s", job.id, exc)
            return False
        return True


def answer_of(job: Job, tags: dict[str, str]) -> CachedAnswer:
    signals = signals_of_row(job)
    return CachedAnswer(
        job_id=job.id,
        content=job.content or "",
        reasoning=job.reasoning or "",
        finish_reason=job.finish_reason or "stop",
        prompt_tokens=job.prompt_tokens,
        completion_tokens=job.completion_tokens,
        reasoning_tokens=job.reasoning_tokens,
        tags=tags,
        quality=signals.as_columns() if signals is not None else {},
    )


def answer_cache_writer(
    settings: CacheSettings, profiles: Mapping[str, Profile], client: redis.Redis
) -> AnswerCacheWriter | None:
    """The worker's writer; None when CACHE_MAX_ENTRIES is 0."""
    if not settings.enabled:
        return None

    def revision_of(profile: str, model_id: str) -> str:
        return model_revision(profiles[profile].model, model_id)

    return AnswerCacheWriter(ResponseCache(client, settings), revision_of)
