"""Profile `auto`: pick the fast or the strong profile from the request itself and from current load.

The request gives a difficulty score (app/routing/rules.py: weights of long text, code, math,
multi-step instructions and reasoning_effort); at or above `quality_threshold` the strong profile
answers. An explicit hint (metadata {"route": "quality" | "latency" | <profile>}) wins. Load then
adjusts: a profile expected to answer slower than `slo_s` (recent latency x its backlog in rounds
of max_batch) sheds the job to the other one when that one is faster, and an idle strong profile
takes medium-difficulty work (score >= `idle_threshold`). `choose_profile` is a pure function;
`ProfileRouter` feeds it the load snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from app.profiles import Profile
from app.routing.rules import RoutingRules

AUTO_PROFILE = "auto"
HINT_KEY = "route"  # metadata key of an explicit hint
MAX_ROUTE_REASON_CHARS = 500  # the jobs.route_reason column
HINT_ALIASES = {"quality": "strong", "strong": "strong", "latency": "fast", "fast": "fast"}

CODE_PATTERNS = re.compile(
    r"```|^\s*(def|class|import|from|#include|function|const|let|var|public|SELECT|CREATE)\b"
    r"|[;{}]\s*$|=>|\w+\([^)]*\)\s*[{:]|</?\w+>",
    re.MULTILINE,
)
MATH_PATTERNS = re.compile(
    r"\d\s*[-+*/^=<>]\s*\(?\d|\\(frac|sum|int|sqrt|cdot)|[∑∫√≤≥≠π∞]|\b[a-z]\s*\^\s*\d|\b[a-z]\s*=\s*\d",
    re.IGNORECASE,
)
LIST_ITEM = re.compile(r"^\s*(\d+[.)]|[-*•])\s+\S", re.MULTILINE)


@dataclass(frozen=True)
class RouteRequest:
    """What routing looks at: the request's text and a few of its parameters."""

    text: str  # every message's content (or the prompt), joined
    reasoning_effort: str | None = None
    hint: str | None = None  # metadata["route"]
    max_tokens: int | None = None  # as asked; None takes the default

    @classmethod
    def of(cls, messages: Sequence[Any] | None, prompt: str | None, **fields: Any) -> RouteRequest:
        text = prompt or "\n".join(message.content for message in messages or ())
        return cls(text=text, **fields)


@dataclass(frozen=True)
class RouteDecision:
    profile: str
    reason: str  # short and human-readable; stored with the job


@dataclass(frozen=True)
class ProfileLoad:
    backlog: int  # jobs waiting in the profile's queue (not yet taken by a worker)
    latency_s: float  # typical engine seconds of one recent job (or the configured default)
    measured: bool = False  # latency_s comes from recent jobs, not the default


@dataclass(frozen=True)
class Difficulty:
    score: float
    features: tuple[str, ...] = field(default=())  # e.g. ("code +2", "multi-step +2")

    def describe(self) -> str:
        detail = f" ({', '.join(self.features)})" if self.features else ""
        return f"difficulty {self.score:g}{detail}"


@cache
def _keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    if not keywords:
        return None
    alternatives = "|".join(re.escape(k.lower()) for k in sorted(keywords, key=len, reverse=True))
    return re.compile(rf"(?<![\w+#])(?:{alternatives})(?![\w+#])")


def _mentions(text: str, keywords: tuple[str, ...]) -> bool:
    pattern = _keyword_pattern(keywords)
    return pattern is not None and pattern.search(text) is not None


def _is_multi_step(text: str, lowered: str, rules: RoutingRules) -> bool:
    sequence_pattern = _keyword_pattern(rules.sequence_words)
    sequence_words = set(sequence_pattern.findall(lowered)) if sequence_pattern else set()
    return (
        _mentions(lowered, rules.multi_step_keywords)
        or len(sequence_words) >= 2
        or len(LIST_ITEM.findall(text)) >= 2
        or text.count("?") >= 2
    )


def difficulty(request: RouteRequest, rules: RoutingRules) -> Difficulty:
    """Score the request: the sum of the weights of the features it shows."""
    text, lowered, weights = request.text, request.text.lower(), rules.weights
    found = {
        "long": (len(text) >= rules.long_prompt_chars, weights.long_prompt),
        "code": (_mentions(lowered, rules.code_keywords) or bool(CODE_PATTERNS.search(text)), weights.code),
        "math": (_mentions(lowered, rules.math_keywords) or bool(MATH_PATTERNS.search(text)), weights.math),
        "multi-step": (_is_multi_step(text, lowered, rules), weights.multi_step),
        "effort high": (request.reasoning_effort == "high", weights.reasoning_high),
        "effort low": (request.reasoning_effort == "low", weights.reasoning_low),
    }
    present = [(name, weight) for name, (shown, weight) in found.items() if shown and weight]
    return Difficulty(sum(w for _, w in present), tuple(f"{name} {w:+g}" for name, w in present))


def expected_response_s(load: ProfileLoad, max_batch: int) -> float:
    """Recent latency times the rounds of max_batch the backlog needs before a new job runs, plus its own."""
    return load.latency_s * (1 + load.backlog / max(1, max_batch))


def choose_profile(
    request: RouteRequest,
    rules: RoutingRules,
    profiles: Mapping[str, Profile],
    load: Mapping[str, ProfileLoad] | None = None,
) -> RouteDecision:
    """The profile for an `auto` request and why. Without `load`, the request alone decides."""
    fast, strong = rules.fast_profile, rules.strong_profile
    fitting = [p for p in (fast, strong) if p in profiles and _fits(request, profiles[p])]
    if not fitting:
        raise ValueError(f"no profile auto may choose fits max_tokens {request.max_tokens}")
    if len(fitting) == 1:
        reason = f"max_tokens {request.max_tokens} fits only {fitting[0]}"
        if fast not in profiles or strong not in profiles:
            reason = f"only {fitting[0]} is configured"
        return RouteDecision(fitting[0], reason)
    hinted = _hinted_profile(request.hint, rules, profiles)
    if hinted is not None:
        return RouteDecision(hinted, f"hint {HINT_KEY}={request.hint}")
    score = difficulty(request, rules)
    if score.score >= rules.quality_threshold:
        chosen, reason = strong, f"{score.describe()} >= {rules.quality_threshold:g}"
    else:
        chosen, reason = fast, f"{score.describe()} < {rules.quality_threshold:g}"
    if load is None or fast not in load or strong not in load:
        return RouteDecision(chosen, reason)
    return _adjust_for_load(chosen, reason, score, rules, profiles, load)


def _fits(request: RouteRequest, profile: Profile) -> bool:
    return request.max_tokens is None or request.max_tokens <= profile.max_tokens


def _hinted_profile(hint: str | None, rules: RoutingRules, profiles: Mapping[str, Profile]) -> str | None:
    if not hint:
        return None
    alias = HINT_ALIASES.get(hint.lower())
    if alias is not None:
        return rules.strong_profile if alias == "strong" else rules.fast_profile
    return hint if hint in (rules.fast_profile, rules.strong_profile) else None


def _adjust_for_load(
    chosen: str,
    reason: str,
    score: Difficulty,
    rules: RoutingRules,
    profiles: Mapping[str, Profile],
    load: Mapping[str, ProfileLoad],
) -> RouteDecision:
    """Shed work from a profile expected to miss the SLO; let an idle strong profile take medium work."""
    pair = (rules.fast_profile, rules.strong_profile)
    expected = {p: expected_response_s(load[p], profiles[p].max_batch) for p in pair}
    other = rules.strong_profile if chosen == rules.fast_profile else rules.fast_profile
    if expected[chosen] > rules.slo_s and expected[other] < expected[chosen]:
        return RouteDecision(
            other,
            f"{reason}, but {chosen} expects ~{expected[chosen]:.0f} s (backlog {load[chosen].backlog})"
            f" > SLO {rules.slo_s:g} s: shed to {other} (~{expected[other]:.0f} s)",
        )
    strong = rules.strong_profile
    idle_strong = load[strong].backlog == 0 and expected[strong] <= rules.slo_s
    if chosen != strong and idle_strong and score.score >= rules.idle_threshold:
        return RouteDecision(
            strong, f"{score.describe()} >= idle threshold {rules.idle_threshold:g} and {strong} is idle"
        )
    return RouteDecision(chosen, reason)


class ProfileRouter:
    """Routes `auto` requests with the current load (see app/routing/load.py); built when the app starts."""

    def __init__(
        self,
        rules: RoutingRules,
        profiles: Mapping[str, Profile],
        load_snapshot: Callable[[], Mapping[str, ProfileLoad] | None] | None = None,
    ) -> None:
        self.rules = rules
        self.profiles = profiles
        self.load_snapshot = load_snapshot
        self.candidates = tuple(p for p in (rules.fast_profile, rules.strong_profile) if p in profiles)

    def max_tokens_limits(self) -> dict[str, int]:
        """The max_tokens limit of each profile auto may choose."""
        return {name: self.profiles[name].max_tokens for name in self.candidates}

    def __call__(self, request: RouteRequest) -> RouteDecision:
        load = self.load_snapshot() if self.load_snapshot is not None else None
        decision = choose_profile(request, self.rules, self.profiles, load)
        if load is None and self.load_snapshot is not None and len(self.candidates) > 1:
            return RouteDecision(decision.profile, f"{decision.reason} (load unknown)")
        return decision
