"""The engines of one worker process: built once per profile on first use, shared by all task threads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app.profiles import Profile

if TYPE_CHECKING:
    from engine.engine import Engine
    from engine.paced import PacedEngine
    from engine.process import EngineProcess

    ServingEngine = Engine | PacedEngine | EngineProcess

log = logging.getLogger(__name__)


class WrongProfileError(RuntimeError):
    """A task for another profile reached a worker pinned to one profile (a routing mistake)."""


class EngineHost:
    """Loads each profile's model at most once per process; never at import, never before a fork."""

    def __init__(
        self,
        profiles: dict[str, Profile],
        model_cache_dir: Path,
        pinned_profile: str | None,
        on_loaded: Callable[[ServingEngine], None] | None = None,
        engine_process: bool = False,
        profiles_file: str | Path = "profiles.toml",
    ) -> None:
        if pinned_profile is not None and pinned_profile not in profiles:
            raise WrongProfileError(f"GPTOSS_PROFILE={pinned_profile!r} is not in the profiles file")
        self.profiles = profiles
        self.model_cache_dir = model_cache_dir
        self.pinned_profile = pinned_profile
        self.on_loaded = on_loaded  # e.g. announce which model really serves the profile
        self.engine_process = engine_process  # each engine in a child process (engine/process.py)
        self.profiles_file = profiles_file  # named in the start check's errors
        self._engines: dict[str, ServingEngine] = {}
        self.load_seconds: dict[str, float] = {}  # profile -> how long its model took to load
        self._lock = threading.Lock()

    def engine_for(self, profile_name: str) -> ServingEngine:
        """The profile's engine, loading its model first if this process has not yet (or again, when the
        engine stopped: its process died or its generation loop failed)."""
        if self.pinned_profile is not None and profile_name != self.pinned_profile:
            raise WrongProfileError(
                f"this worker serves profile {self.pinned_profile!r}, not {profile_name!r}; check the queues"
            )
        engine = self._engines.get(profile_name)  # every job asks: a running engine is returned unlocked
        if engine is not None and engine.is_running():
            return engine
        with self._lock:  # the first task threads wait here while the model loads
            engine = self._engines.get(profile_name)
            if engine is not None and not engine.is_running():
                log.error("profile %s: the engine stopped; loading it again", profile_name)
                self._engines.pop(profile_name)
                engine.shutdown()
                engine = None
            if engine is None:
                engine = self._engines[profile_name] = self._build(self.profiles[profile_name])
        return engine

    def warm_up(self) -> None:
        """Load the pinned profile's model now (called in a thread when the worker is ready)."""
        if self.pinned_profile is None:
            return
        try:
            self.engine_for(self.pinned_profile)
        except Exception:
            log.exception("loading the model of profile %s failed; jobs will retry it", self.pinned_profile)

    def loaded_engines(self) -> list[ServingEngine]:
        """The engines loaded so far, without waiting for one that is loading (metrics, heartbeats)."""
        return list(self._engines.copy().values())  # dict.copy is atomic; the lock is held while loading

    def shutdown(self) -> None:
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.shutdown()

    def _build(self, profile: Profile) -> ServingEngine:
        log.info("profile %s: loading model %s (%s)", profile.name, profile.model, profile.gpu_mode)
        engine = self._build_in_process(profile) if not self.engine_process else self._build_process(profile)
        seconds = self.load_seconds[profile.name]
        log.info("profile %s: serving %s in %.1f s", profile.name, engine.tags, seconds)
        if self.on_loaded is not None:
            try:
                self.on_loaded(engine)
            except Exception:
                log.exception("profile %s: on_loaded hook failed", profile.name)
        return engine

    def _build_in_process(self, profile: Profile) -> Engine | PacedEngine:
        # lazily: torch and transformers load with the model, not when the worker (or the API) imports this
        from engine.startup import start_profile_engine

        spec = profile.preflight_spec(self.profiles_file)
        engine, self.load_seconds[profile.name] = start_profile_engine(spec, self.model_cache_dir)
        return engine

    def _build_process(self, profile: Profile) -> EngineProcess:
        # lazily, like _build_in_process: this process never loads torch for a child-process engine
        from engine.cpu.priority import nice_from_env
        from engine.process import EngineProcess, EngineSpec

        spec = EngineSpec(
            model=profile.model,
            gpu_mode=profile.gpu_mode,
            profile=profile.name,
            max_batch=profile.max_batch,
            cache_dir=str(self.model_cache_dir),
            nice=nice_from_env(),
            max_tokens=profile.max_tokens,
            allow_demo=profile.allow_demo,
            profiles_file=str(self.profiles_file),
        )
        engine = EngineProcess(spec)
        self.load_seconds[profile.name] = engine.load_seconds
        return engine
