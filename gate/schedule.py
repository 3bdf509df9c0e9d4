"""The scheduled release gate: one run per schedule interval, however many beats fire, stored in the DB."""

from __future__ import annotations

import logging
import math
import time

import redis
from flask import Flask

from app.gate_runs.store import save_gate_run
from app.services import services
from gate.runner import GateOptions, run_gate
from gate.slo import find_slo

log = logging.getLogger(__name__)

LOCK_KEY_PREFIX = "gptoss:gate:lock:"


def gate_lock_key(profile: str, interval_s: float, now: float) -> str:
    """The lock of the schedule interval `now` falls in: gptoss:gate:lock:<profile>:<floor(now/interval)>."""
    return f"{LOCK_KEY_PREFIX}{profile}:{math.floor(now / interval_s)}"


def claim_interval(client: redis.Redis, profile: str, interval_s: float, now: float) -> bool:
    """True for the first caller of this interval only (SET NX); the key outlives the interval."""
    key = gate_lock_key(profile, interval_s, now)
    return bool(client.set(key, str(now), nx=True, ex=max(1, math.ceil(2 * interval_s))))


def run_scheduled_gate(app: Flask, now: float | None = None) -> str | None:
    """Run the configured gate against the API and store it; None when this interval already has its run."""
    settings = services(app).settings.gate
    now = time.time() if now is None else now
    if not claim_interval(services(app).redis, settings.profile, settings.lock_interval_s, now):
        log.info("release gate: this interval of %s already has its run; skipping", settings.profile)
        return None
    options = GateOptions(
        url=settings.api_url,
        profile=settings.profile,
        slo=find_slo(settings.slo, settings.slo_file),
        duration_s=settings.duration_s,
        rate=settings.rate,
        api_key=settings.api_key,
        trigger="schedule",
    )
    log.info("release gate: %s SLO on %s against %s", settings.slo, settings.profile, settings.api_url)
    run = run_gate(options)
    with services(app).sessions() as session:
        save_gate_run(session, run.report, run.markdown(), run.plot_png)
    outcome = "passed" if run.passed else "FAILED: " + "; ".join(run.report["failures"])
    log.log(logging.INFO if run.passed else logging.WARNING, "release gate %s %s", run.id, outcome)
    return run.id
