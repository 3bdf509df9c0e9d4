"""Which model each profile really serves, as announced by its workers when they load it."""

from __future__ import annotations

import json

import redis
from flask import g, has_request_context

SERVED_KEY_PREFIX = "gptoss:served:"


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


def served_tags_in_request(client: redis.Redis, profile: str) -> dict[str, str] | None:
    """A profile's announced tags, read from Redis once per HTTP request: a submit asks twice (the
    response cache's key, then the `job.queued` log line). Outside a request, read each time."""
    if not has_request_context():
        return served_tags(client, [profile]).get(profile)
    memo: dict[str, dict[str, str] | None] = g.setdefault("gptoss_served_tags", {})
    if profile not in memo:
        memo[profile] = served_tags(client, [profile]).get(profile)
    return memo[profile]


def served_model_ids(client: redis.Redis, profiles: list[str]) -> dict[str, str]:
    return {profile: tags["model_id"] for profile, tags in served_tags(client, profiles).items()}
