"""A profile's start: check it against this machine (engine/preflight.py), then load what the check planned.

The worker runs check_profile before Celery starts (workers/start.py), so an impossible profile never
takes work; the engine runs load_profile_model, which checks again on the machine it loads on.
"""

from __future__ import annotations

from pathlib import Path

from engine.loader import LoadedModel, load_model, locate_model
from engine.preflight import Machine, Plan, ProfileSpec, detect_machine, plan_profile


def check_profile(spec: ProfileSpec, machine: Machine | None = None) -> Plan:
    """What loading the profile's model here would do; raise PreflightError where it cannot work."""
    return plan_profile(spec, machine or detect_machine(), locate_model(spec.model))


def load_profile_model(
    spec: ProfileSpec, cache_dir: Path | None, machine: Machine | None = None
) -> LoadedModel:
    """Check the profile, then load its model (or the demo, announced, where the check allows it)."""
    plan = check_profile(spec, machine)
    return load_model(
        spec.model if plan.demo_fallback else plan.source,
        gpu_mode=spec.gpu_mode,
        cache_dir=cache_dir,
        allow_demo_fallback=plan.demo_fallback,
        mxfp4_packed=plan.mxfp4_packed,
    )
