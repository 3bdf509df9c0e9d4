"""Security and reliability settings (API keys, limits, the reconciler), read from the app config at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The config keys (env GPTOSS_<KEY>, through app/settings.py DEFAULTS) and their defaults.
RELIABILITY_DEFAULTS: dict[str, Any] = {
    "API_KEYS": "",  # comma-separated; set: every route but /healthz needs `Authorization: Bearer <key>`
    "RATE_LIMIT_PER_MIN": 6000,  # job submits per client (API key, else IP) per minute; 0: no limit
    "MAX_STREAMS_PER_CLIENT": 64,  # open event streams (SSE) per client; 0: no limit
    "RECONCILE_INTERVAL_S": 60.0,  # celery beat runs the reconciler this often; 0: not scheduled
    "RECONCILE_STUCK_AFTER_S": 120.0,  # a queued/running job this old with no message/worker is re-enqueued
}


@dataclass(frozen=True)
class ReliabilitySettings:
    api_keys: tuple[str, ...]
    rate_limit_per_min: int
    max_streams_per_client: int
    reconcile_interval_s: float
    reconcile_stuck_after_s: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ReliabilitySettings:
        """The settings of an app config; keys it lacks take RELIABILITY_DEFAULTS."""

        def get(key: str) -> Any:
            return type(RELIABILITY_DEFAULTS[key])(config.get(key, RELIABILITY_DEFAULTS[key]))

        return cls(
            api_keys=parse_api_keys(config.get("API_KEYS", "")),
            rate_limit_per_min=get("RATE_LIMIT_PER_MIN"),
            max_streams_per_client=get("MAX_STREAMS_PER_CLIENT"),
            reconcile_interval_s=get("RECONCILE_INTERVAL_S"),
            reconcile_stuck_after_s=get("RECONCILE_STUCK_AFTER_S"),
        )


def parse_api_keys(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Keys from "k1, k2" (env) or a list (tests); blanks dropped."""
    if not value:
        return ()
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(key.strip() for key in parts if key.strip())


RECONCILE_TASK = "workers.reconciler.reconcile"


def reconcile_beat_schedule(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The celery beat entry of the reconciler: on the batch worker's queue (it loads no model)."""
    from app.batches.queue import BATCHES_QUEUE

    interval = ReliabilitySettings.from_config(config).reconcile_interval_s
    if interval <= 0:
        return {}
    # `expires`: a run nobody took within one interval is dropped; the next one does its work
    options = {"queue": BATCHES_QUEUE, "expires": interval}
    return {"reconcile-jobs": {"task": RECONCILE_TASK, "schedule": interval, "options": options}}
