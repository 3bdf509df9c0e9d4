"""Release-gate settings (schedule, profile, SLO, API URL), read from the app config at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from app.reliability_settings import parse_api_keys

RUN_GATE_TASK = "gate.tasks.run_scheduled_gate"
DEFAULT_LOCK_INTERVAL_S = 24 * 3600.0  # the lock interval of a run started by hand with no schedule

# The config keys (env GPTOSS_<KEY>, through app/settings.py DEFAULTS) and their defaults.
GATE_DEFAULTS: dict[str, Any] = {
    "GATE_SCHEDULE_S": 24 * 3600.0,  # celery beat runs the gate this often; 0 turns the schedule off
    "GATE_PROFILE": "latency_first",  # the profile the scheduled gate drives
    "GATE_SLO": "personal",  # the SLO it checks (gate/slos.toml, or GATE_SLO_FILE)
    "GATE_DURATION_S": 60.0,  # how long it sends requests
    "GATE_RATE": 0.0,  # requests per second; 0: the SLO's min_qps
    "GATE_API_URL": "http://127.0.0.1:8000",  # the API the scheduled gate drives
    "GATE_SLO_FILE": "",  # a TOML file of extra or overriding SLOs
    "GATE_QUEUE": "batches",  # the queue of the worker that runs it (the batch worker; no model)
    "GATE_API_KEY": "",  # the key it sends where the API requires keys; empty: the first of API_KEYS
}


@dataclass(frozen=True)
class GateSettings:
    schedule_s: float
    profile: str
    slo: str
    duration_s: float
    rate: float | None
    api_url: str
    slo_file: str | None
    queue: str
    api_key: str | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GateSettings:
        """The settings of an app config; keys it lacks take GATE_DEFAULTS."""

        def get(key: str) -> Any:
            return type(GATE_DEFAULTS[key])(config.get(key, GATE_DEFAULTS[key]))

        return cls(
            schedule_s=get("GATE_SCHEDULE_S"),
            profile=get("GATE_PROFILE"),
            slo=get("GATE_SLO"),
            duration_s=get("GATE_DURATION_S"),
            rate=get("GATE_RATE") or None,
            api_url=get("GATE_API_URL").rstrip("/"),
            slo_file=get("GATE_SLO_FILE") or None,
            queue=get("GATE_QUEUE"),
            api_key=get("GATE_API_KEY") or next(iter(parse_api_keys(config.get("API_KEYS"))), None),
        )

    @property
    def lock_interval_s(self) -> float:
        return self.schedule_s if self.schedule_s > 0 else DEFAULT_LOCK_INTERVAL_S


def gate_beat_schedule(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Celery beat's entry for the scheduled gate; empty when GATE_SCHEDULE_S is 0."""
    settings = GateSettings.from_config(config)
    if settings.schedule_s <= 0:
        return {}
    return {
        "release-gate": {
            "task": RUN_GATE_TASK,
            "schedule": timedelta(seconds=settings.schedule_s),
            "options": {"queue": settings.queue, "expires": settings.schedule_s},
        }
    }
