"""Serving profiles, read from the user-edited TOML file when the app or a worker starts."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.preflight import ProfileSpec
from engine.types import ReasoningEffort


class ProfileConfigError(ValueError):
    """The profiles file is missing, malformed, or describes an impossible profile."""


class Profile(BaseModel):
    """One serving profile: which model runs, how it is split over GPUs, and its limits."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str
    model: str  # local dir, HF-cache id (offline) or .gguf file
    model_size: str  # the size tag of `model` ("20b", "120b")
    gpu_mode: Literal["pipeline", "tensor"]
    max_batch: int = Field(ge=1)  # requests decoded together = worker threads
    max_tokens: int = Field(ge=1)  # the largest max_tokens a job may ask for
    # a job's defaults where it names none; absent: the model's generation_config.json (app/jobs/defaults.py)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    reasoning_effort: ReasoningEffort | None = None
    # may the demo model serve where `model` is absent? Absent: yes without CUDA GPUs, no with them
    allow_demo: bool | None = None

    def preflight_spec(self, profiles_file: str | Path) -> ProfileSpec:
        """What the worker checks against the machine before it takes work (engine/preflight.py)."""
        limits = (self.max_batch, self.max_tokens)
        return ProfileSpec(self.name, self.model, self.gpu_mode, *limits, self.allow_demo, str(profiles_file))

    def as_api_dict(self) -> dict[str, Any]:
        return {"id": self.name, "object": "profile", **self.model_dump(exclude={"name"}, exclude_none=True)}


def load_profiles(path: str | Path) -> dict[str, Profile]:
    """Read the `[profiles.<name>]` tables of a TOML file; raise ProfileConfigError on bad input."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileConfigError(f"cannot read profiles file {path}: {exc}") from exc
    tables = document.get("profiles")
    if not isinstance(tables, dict) or not tables:
        raise ProfileConfigError(f"{path}: expected at least one [profiles.<name>] table")
    profiles = {}
    for name, table in tables.items():
        try:
            profiles[name] = Profile.model_validate({**table, "name": name})
        except (ValidationError, TypeError) as exc:
            raise ProfileConfigError(f"{path}: [profiles.{name}] is invalid: {exc}") from exc
    return profiles
