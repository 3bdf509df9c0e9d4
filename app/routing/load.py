"""The load `auto` routing sees: each profile's queue backlog (Redis) and recent latency (the DB).

Backlog is the length of the profile's Celery queue (the lists kombu keeps in Redis, as the
gptoss_queue_depth metric reads them): jobs no worker has taken yet. Recent latency is the median
engine time (e2e_s) of the profile's newest succeeded jobs within a window; before there are any,
the configured default stands in. The snapshot is reread at most every `load_refresh_s`, so a
burst of submits (or a batch's thousands of lines) costs a few queries, not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import timedelta

import redis
import sqlalchemy as sa
from sqlalchemy import orm

from app.metrics import QueueDepthCollector
from app.models import Job, JobStatus, utcnow
from app.ops.stats import percentile
from app.profiles import Profile
from app.routing.auto import ProfileLoad, ProfileRouter
from app.routing.rules import RoutingRules, load_routing_rules

log = logging.getLogger(__name__)


def recent_latency_s(session: orm.Session, profile: str, rules: RoutingRules) -> float | None:
    """Median e2e_s of the profile's newest succeeded jobs in the window; None without any."""
    since = utcnow() - timedelta(seconds=rules.recent_window_s)
    first_id = f"job_{int(since.timestamp() * 1000):012x}"  # ids are time-ordered: the pk bounds the scan
    query = (
        sa.select(Job.e2e_s)
        .where(
            Job.id >= first_id,
            Job.profile == profile,
            Job.status == JobStatus.SUCCEEDED,
            Job.e2e_s.is_not(None),
            Job.created_at >= since,
        )
        .order_by(Job.id.desc())
        .limit(rules.recent_jobs)
    )
    values = [value for value in session.scalars(query) if value is not None]
    return percentile(values, 0.5)


class LoadMonitor:
    """A cached load snapshot per profile; None when Redis or the DB cannot say (routing ignores load)."""

    def __init__(
        self,
        client: redis.Redis,
        sessions: orm.sessionmaker[orm.Session],
        profiles: list[str],
        rules: RoutingRules,
    ) -> None:
        self.queues = QueueDepthCollector(client, profiles)
        self.sessions = sessions
        self.profiles = profiles
        self.rules = rules
        self._lock = threading.Lock()
        self._snapshot: dict[str, ProfileLoad] | None = None
        self._read_at = float("-inf")

    def __call__(self) -> Mapping[str, ProfileLoad] | None:
        with self._lock:
            if time.monotonic() - self._read_at >= self.rules.load_refresh_s:
                self._snapshot = self._read()
                self._read_at = time.monotonic()
            return self._snapshot

    def _read(self) -> dict[str, ProfileLoad] | None:
        try:
            backlog = self.queues.queue_depths()
            with self.sessions() as session:
                latency = {p: recent_latency_s(session, p, self.rules) for p in self.profiles}
        except (redis.RedisError, sa.exc.SQLAlchemyError) as exc:
            log.warning("routing load unavailable, routing by the request alone: %s", exc)
            return None
        loads = {}
        for profile in self.profiles:
            measured = latency[profile]
            loads[profile] = ProfileLoad(
                backlog=backlog.get(profile, 0),
                latency_s=measured if measured is not None else self.rules.default_latency(profile),
                measured=measured is not None,
            )
        return loads


def make_router(
    profiles_path: str,
    profiles: Mapping[str, Profile],
    client: redis.Redis,
    sessions: orm.sessionmaker[orm.Session],
) -> ProfileRouter:
    """The app's `auto` router, with rules from the profiles file and the live load."""
    rules = load_routing_rules(profiles_path)
    router = ProfileRouter(rules, profiles)
    router.load_snapshot = LoadMonitor(client, sessions, list(router.candidates), rules)
    return router
