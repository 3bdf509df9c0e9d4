"""The rules of profile `auto`: the `[routing]` table of the profiles file, with working defaults.

Every key is optional; a file without the table routes with the defaults below. Example:

    [routing]
    quality_threshold = 2.0        # difficulty at which a request goes to the strong profile
    slo_s = 30.0                   # a profile expected to answer slower than this sheds new work
    math_keywords = ["integral", "prove"]   # replaces the default list

    [routing.weights]
    code = 2.5
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.profiles import ProfileConfigError

DEFAULT_CODE_KEYWORDS = (
    "code", "function", "python", "javascript", "typescript", "java", "rust", "golang", "c++", "sql",
    "regex", "bash", "script", "compile", "compiler", "debug", "bug", "stack trace", "traceback",
    "exception", "refactor", "implement", "algorithm", "api", "class", "unit test", "dockerfile",
)  # fmt: skip
DEFAULT_MATH_KEYWORDS = (
    "prove", "proof", "theorem", "lemma", "integral", "integrate", "derivative", "differentiate",
    "equation", "solve for", "probability", "expected value", "matrix", "eigenvalue", "polynomial",
    "calculate", "compute", "how many ways", "optimize", "minimize", "maximize", "limit of",
)  # fmt: skip
DEFAULT_MULTI_STEP_KEYWORDS = (
    "step by step", "step-by-step", "explain why", "explain how", "walk me through", "compare",
    "contrast", "analyze", "analyse", "pros and cons", "trade-off", "tradeoff", "design", "plan",
    "in detail", "derive", "justify", "evaluate", "outline", "break down", "strategy",
)  # fmt: skip
DEFAULT_SEQUENCE_WORDS = ("first", "second", "then", "next", "after that", "afterwards", "finally", "lastly")


class RoutingWeights(BaseModel):
    """What each feature adds to a request's difficulty score."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    long_prompt: float = 1.0  # the request text is at least long_prompt_chars long
    code: float = 2.0  # a code block, code keywords or code-like syntax
    math: float = 2.0  # math keywords, formulas or arithmetic
    multi_step: float = 2.0  # multi-step instructions, numbered steps or several questions
    reasoning_high: float = 2.0  # reasoning_effort "high"
    reasoning_low: float = -1.0  # reasoning_effort "low"


class RoutingRules(BaseModel):
    """How `auto` picks between a fast and a strong profile (see app/routing/auto.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fast_profile: str = "latency_first"
    strong_profile: str = "quality_first"
    quality_threshold: float = 2.0  # difficulty at or above which the strong profile answers
    idle_threshold: float = 1.0  # ... or at or above this, when the strong profile has no backlog
    slo_s: float = Field(default=30.0, gt=0)  # expected response time above which a profile sheds work
    long_prompt_chars: int = Field(default=1200, ge=1)
    weights: RoutingWeights = RoutingWeights()
    code_keywords: tuple[str, ...] = DEFAULT_CODE_KEYWORDS
    math_keywords: tuple[str, ...] = DEFAULT_MATH_KEYWORDS
    multi_step_keywords: tuple[str, ...] = DEFAULT_MULTI_STEP_KEYWORDS
    sequence_words: tuple[str, ...] = DEFAULT_SEQUENCE_WORDS  # two or more of these: multi-step
    # a profile's typical seconds per job before it has recent jobs to measure
    default_latency_s: dict[str, float] = Field(
        default_factory=lambda: {"latency_first": 5.0, "quality_first": 15.0}
    )
    fallback_latency_s: float = 10.0  # for a profile missing from default_latency_s
    recent_jobs: int = Field(default=20, ge=1)  # recent latency: median e2e of this many newest jobs
    recent_window_s: float = Field(default=600.0, gt=0)  # ... submitted within this window
    load_refresh_s: float = Field(default=1.0, ge=0)  # queue depths and latencies are reread this often

    def default_latency(self, profile: str) -> float:
        return self.default_latency_s.get(profile, self.fallback_latency_s)


def load_routing_rules(path: str | Path) -> RoutingRules:
    """The `[routing]` table of the profiles file; defaults when the table is absent."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileConfigError(f"cannot read profiles file {path}: {exc}") from exc
    try:
        return RoutingRules.model_validate(document.get("routing", {}))
    except ValidationError as exc:
        raise ProfileConfigError(f"{path}: [routing] is invalid: {exc}") from exc
