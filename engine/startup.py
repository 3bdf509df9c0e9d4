"""A profile's start: check it against this machine (engine/preflight.py), then load what the check planned.

The worker runs check_profile before Celery starts (workers/start.py), so an impossible profile never
takes work; the engine runs start_profile_engine, which checks again on the machine it loads on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cpu.threads import in_short_lived_thread
from engine.loader import LoadedModel, load_model, locate_model
from engine.preflight import Machine, Plan, ProfileSpec, detect_machine, is_paced, paced_rate, plan_profile

if TYPE_CHECKING:
    from engine.engine import Engine
    from engine.paced import PacedEngine


def check_profile(spec: ProfileSpec, machine: Machine | None = None) -> Plan:
    """What loading the profile's model here would do; raise PreflightError where it cannot work."""
    if machine is None:  # the paced engine needs no device: no torch to import to look for one
        machine = Machine() if is_paced(spec.model) else detect_machine()
    return plan_profile(spec, machine, locate_model(spec.model))


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


def start_profile_engine(spec: ProfileSpec, cache_dir: Path | None) -> tuple[Engine | PacedEngine, float]:
    """The profile's running engine and the seconds its model took to load: the paced engine for a
    `paced:N` model (engine/paced.py), else the model the check planned in engine/engine.py's Engine."""
    # lazily: torch and transformers load with the engine, not when the worker's start check imports this
    from engine.engine import Engine
    from engine.paced import PacedEngine

    if is_paced(spec.model):
        start = time.perf_counter()
        check_profile(spec)  # a bad rate fails here too, naming the profile and its model
        engine = PacedEngine(paced_rate(spec.model), spec.name, spec.max_batch)
        return engine, time.perf_counter() - start
    loaded = load_profile_model(spec, cache_dir)
    # Like the load, off the caller's (long-lived) thread: its torch thread pool would slow the engine's.
    started = in_short_lived_thread(Engine.from_loaded, loaded, profile=spec.name, max_batch=spec.max_batch)
    return started, loaded.load_seconds
