"""A job's sampling defaults and date, filled in at submit once its profile is known, stored with the job.

Where a request names no `temperature`, `top_p` or `reasoning_effort`, its profile's keys in
profiles.toml answer; where the profile has none, the model's own generation_config.json, in the
directory its worker loads (engine.loader.local_model_dir; `do_sample: false` there means greedy,
temperature 0); where neither says, OpenAI's defaults (temperature 1, top_p 1) and reasoning effort
"medium". Each job also gets the UTC date of its submit (`current_date`: harmony's "Current date:"
line), so its prompt renders the same whenever a worker runs it. The stored request shows exactly
what ran, and the worker looks nothing up.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.profiles import Profile
from engine.loader import local_model_dir
from engine.types import ReasoningEffort

log = logging.getLogger(__name__)

OPENAI_TEMPERATURE = 1.0  # OpenAI's API defaults, where neither the profile nor the model says
OPENAI_TOP_P = 1.0
DEFAULT_REASONING_EFFORT: ReasoningEffort = "medium"  # gpt-oss's own default


@dataclass(frozen=True)
class SamplingDefaults:
    """What a job of one profile samples with where its request names nothing."""

    temperature: float
    top_p: float
    reasoning_effort: ReasoningEffort


def model_sampling(directory: Path) -> dict[str, float]:
    """The temperature and top_p a model dir's generation_config.json sets (valid values only)."""
    try:
        config: Any = json.loads((directory / "generation_config.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(config, dict):
        return {}
    found: dict[str, float] = {}
    if config.get("do_sample") is False:  # the model asks for greedy decoding
        found["temperature"] = 0.0
    elif _number_within(config.get("temperature"), 0.0, 2.0):
        found["temperature"] = float(config["temperature"])
    if _number_within(config.get("top_p"), 0.0, 1.0) and config["top_p"] > 0:
        found["top_p"] = float(config["top_p"])
    return found


def _number_within(value: Any, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


class ProfileDefaults:
    """Each profile's SamplingDefaults. A model's file is read once its dir is found, and looked for
    again until then (the demo model may still be converting)."""

    def __init__(self, profiles: dict[str, Profile], model_cache_dir: Path) -> None:
        self.profiles = profiles
        self.model_cache_dir = model_cache_dir
        self._model_values: dict[str, dict[str, float]] = {}  # profile -> what its model's file says

    def __call__(self, profile: str) -> SamplingDefaults:
        configured = self.profiles[profile]
        model = {"temperature": OPENAI_TEMPERATURE, "top_p": OPENAI_TOP_P} | self._model_sampling(profile)
        temperature, top_p = configured.temperature, configured.top_p
        return SamplingDefaults(
            temperature=temperature if temperature is not None else model["temperature"],
            top_p=top_p if top_p is not None else model["top_p"],
            reasoning_effort=configured.reasoning_effort or DEFAULT_REASONING_EFFORT,
        )

    def _model_sampling(self, profile: str) -> dict[str, float]:
        found = self._model_values.get(profile)
        if found is not None:
            return found
        directory = local_model_dir(self.profiles[profile].model, self.model_cache_dir)
        if directory is None:
            return {}
        found = self._model_values[profile] = model_sampling(directory)
        log.info("profile %s: sampling defaults from %s: %s", profile, directory, found or "none")
        return found
