"""Which model each profile really serves, as announced by its workers when they load it."""

from __future__ import annotations

import json
import time
import weakref

import redis
from flask import g, has_request_context

SERVED_KEY_PREFIX = "gptoss:served:"
# How long a process trusts a profile's announcement before reading it again: a submit (the response
# cache's key, the `job.queued` line) then pays no Redis round trip for it. A worker that loads another
# model is seen within this many seconds; the tags stored with each result are the worker's own.
SERVED_RECHECK_S = 1.0
_announced: weakref.WeakKeyDictionary[redis.Redis, dict[str, tuple[dict[str, str] | None, float]]] = (
    weakref.WeakKeyDictionary()
)


def announce_served_model(client: redis.Redis, profile: str, tags: dict[str, str]) -> None:
    """A worker says which model it loaded for `profile` (the five tags)."""
    client.set(f"{SERVED_KEY_PREFIX}{profile}", json.dumps(tags))


def served_tags(client: redis.Redis, profiles: list[str]) -> dict[str, dict[str, str]]:
    """The announced tags per profile; profiles with no announcement are left out."""
    if not profiles:
        return {}
    try:
        values = client.mget([f"{SERVED_KEY_PREFIX}{p}" for p in profiles])
    except redis.RedisError:
        return {}
    return {p: json.loads(v) for p, v in zip(profiles, values, strict=True) if v is not None}


def recent_served_tags(client: redis.Redis, profile: str) -> dict[str, str] | None:
    """A profile's announced tags (None: not announced yet) as read at most SERVED_RECHECK_S ago through
    this client. In a request,
    what it gave is kept in `g` for the request's metric labels (app/metrics.py request_tags)."""
    now = time.monotonic()
    memo = _announced.setdefault(client, {})
    remembered = memo.get(profile)
    if remembered is not None and now - remembered[1] < SERVED_RECHECK_S:
        tags: dict[str, str] | None = remembered[0]
    else:
        tags = served_tags(client, [profile]).get(profile)
        memo[profile] = (tags, now)
    if has_request_context():
        g.setdefault("gptoss_served_tags", {})[profile] = tags
    return tags


def served_model_ids(client: redis.Redis, profiles: list[str]) -> dict[str, str]:
    return {profile: tags["model_id"] for profile, tags in served_tags(client, profiles).items()}
