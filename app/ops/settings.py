"""Observability settings (worker metrics port, heartbeats, stats window), read when a process starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The config keys (env GPTOSS_<KEY>, through app/settings.py DEFAULTS) and their defaults.
OBSERVABILITY_DEFAULTS: dict[str, Any] = {
    "WORKER_METRICS_PORT": None,  # a worker's /metrics port; None: 9101 + the profile's index; 0: off
    "WORKER_METRICS_HOST": "127.0.0.1",  # where a worker's /metrics listens
    "HEARTBEAT_INTERVAL_S": 5.0,  # how often a worker refreshes its gptoss:worker:<hostname> key
    "HEARTBEAT_TTL_S": 15,  # a worker whose key is older than this is gone (/readyz: 503)
    "STATS_MAX_JOBS": 10_000,  # GET /v1/stats looks at the newest this many jobs of its window
}

FIRST_WORKER_METRICS_PORT = 9101  # latency_first (the first profile) 9101, quality_first 9102, ...


@dataclass(frozen=True)
class ObservabilitySettings:
    worker_metrics_port: int | None
    worker_metrics_host: str
    heartbeat_interval_s: float
    heartbeat_ttl_s: int
    stats_max_jobs: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ObservabilitySettings:
        """The settings of an app config; keys it lacks take OBSERVABILITY_DEFAULTS."""

        def get(key: str) -> Any:
            return config.get(key, OBSERVABILITY_DEFAULTS[key])

        port = get("WORKER_METRICS_PORT")
        return cls(
            worker_metrics_port=None if port in (None, "") else int(port),
            worker_metrics_host=str(get("WORKER_METRICS_HOST")),
            heartbeat_interval_s=float(get("HEARTBEAT_INTERVAL_S")),
            heartbeat_ttl_s=int(get("HEARTBEAT_TTL_S")),
            stats_max_jobs=int(get("STATS_MAX_JOBS")),
        )

    def metrics_port_for(self, profile: str | None, profile_names: list[str]) -> int:
        """The configured port, else one per profile so both workers of a box can listen; 0 = off."""
        if self.worker_metrics_port is not None:
            return self.worker_metrics_port
        if profile is None or profile not in profile_names:
            return FIRST_WORKER_METRICS_PORT - 1  # a worker serving every profile
        return FIRST_WORKER_METRICS_PORT + profile_names.index(profile)
