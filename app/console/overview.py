"""What the console's overview shows, read through the stores the API answers from: each profile's
live workers (heartbeats), queue depth (as gptoss_queue_depth reads it), p50/p95 TTFT and E2E of the
last hour (GET /v1/stats's job_stats), and tokens per key per day (GET /v1/usage's usage_by_key)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import orm

from app.keys import store as key_store
from app.keys.caller import Caller
from app.metrics import QueueDepthCollector
from app.models import Job, utcnow
from app.ops.heartbeats import WorkerHeartbeat, live_workers_by_profile
from app.ops.stats import job_stats
from app.ops.usage import day_window, usage_by_key
from app.services import services

log = logging.getLogger(__name__)

STATS_WINDOW = timedelta(hours=1)
USAGE_DAYS = 7


@dataclass(frozen=True)
class ProfileOverview:
    name: str
    workers: list[WorkerHeartbeat] | None  # None: Redis did not answer
    queue_depth: int | None
    stats: dict[str, Any]  # job_stats of the last hour: ttft_s, e2e_s ({p50, p95, samples}), count


@dataclass(frozen=True)
class UsageRow:
    key: str  # the key's name (or id); "(no key)" for jobs made without one
    day: str  # YYYY-MM-DD, UTC
    tally: dict[str, Any]  # Tally.as_json: jobs, prompt_tokens, completion_tokens, total_tokens ...


def profile_overviews(session: orm.Session, caller: Caller) -> list[ProfileOverview]:
    """Each profile's workers, queue and last hour's latencies (of the caller's own jobs, unless admin)."""
    found = services()
    profiles = list(found.profiles)
    try:
        workers: dict[str, list[WorkerHeartbeat]] | None = live_workers_by_profile(found.redis, profiles)
        depths: dict[str, int] | None = QueueDepthCollector(found.redis, profiles).queue_depths()
    except redis.RedisError as exc:
        log.warning("console overview: Redis unavailable: %s", exc)
        workers, depths = None, None
    since, max_jobs = utcnow() - STATS_WINDOW, found.settings.observability.stats_max_jobs
    visible = caller.sees(Job.owner)
    return [
        ProfileOverview(
            name=profile,
            workers=None if workers is None else workers[profile],
            queue_depth=None if depths is None else depths[profile],
            stats=job_stats(session, profile, since, max_jobs, visible=visible),
        )
        for profile in profiles
    ]


def usage_rows(session: orm.Session, caller: Caller) -> list[UsageRow]:
    """Tokens per key per UTC day over the last USAGE_DAYS days, newest day first (a key: its own)."""
    names = key_store.key_directory(session, services().settings.reliability.api_keys)
    first_day = utcnow().date() - timedelta(days=USAGE_DAYS - 1)
    rows = [
        UsageRow(names.get(usage.key_id or "", usage.key_id or "(no key)"), day, tally.as_json())
        for usage in usage_by_key(session, caller.sees(Job.owner), *day_window(first_day, None))
        for day, tally in usage.by_day.items()
    ]
    return sorted(rows, key=lambda row: (row.day, row.key), reverse=True)
