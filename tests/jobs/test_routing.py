"""Profile `auto` as a pure function: a labelled prompt set, hints, max_tokens, load, the rules file."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.profiles import Profile, ProfileConfigError
from app.routing.auto import ProfileLoad, ProfileRouter, RouteRequest, choose_profile, difficulty
from app.routing.rules import RoutingRules, load_routing_rules
from tests.support.paths import REPO_ROOT

PROFILES = {
    "latency_first": Profile(
        name="latency_first", model="m20", model_size="20b", gpu_mode="pipeline", max_batch=32, max_tokens=512
    ),
    "quality_first": Profile(
        name="quality_first", model="m120", model_size="120b", gpu_mode="tensor", max_batch=8, max_tokens=2048
    ),
}
RULES = RoutingRules()
FAST, STRONG = "latency_first", "quality_first"

SIMPLE = [
    "What is the capital of France?",
    "Who wrote Pride and Prejudice?",
    "How tall is Mount Everest?",
    "What year did World War II end?",
    "Translate 'good morning' into Spanish.",
    "What is the boiling point of water at sea level?",
    "Who was the first person to walk on the Moon?",
    "What does DNA stand for?",
    "Name the largest ocean on Earth.",
    "What's the chemical symbol for gold?",
    "Give me a synonym for happy.",
    "Which planet is known as the Red Planet?",
    "What language is spoken in Brazil?",
    "When was the Eiffel Tower built?",
    "hello!",
    "Tell me a short joke about cats.",
    "What is the currency of Japan?",
    "Who painted the Mona Lisa?",
]
HARD = [
    "Write a Python function that merges two sorted linked lists and explain its complexity.",
    "Debug this code:\n```js\nconst x = [1,2,3].map(n => n * 2)\nconsole.log(x[3].toFixed())\n```",
    "Implement an LRU cache in Rust with O(1) get and put.",
    "Prove that the square root of 2 is irrational.",
    "Compute the integral of x^2 * sin(x) from 0 to pi.",
    "Solve for x: 3x + 7 = 2x^2 - 5, and check both roots.",
    "What is the probability of getting at least two heads in five fair coin flips?",
    "Explain step by step how TCP congestion control reacts to packet loss.",
    "Compare PostgreSQL and MongoDB for an analytics workload, with pros and cons.",
    "Design a rate limiter for a distributed API and justify the trade-offs.",
    "First summarise the article, then list its three main claims, and finally critique each one.",
    "Plan a migration to microservices:\n1. inventory services\n2. split the database\n3. cut over",
    "Why does the sky look blue? And why are sunsets red? How do clouds change this?",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 5; why is it slow?",
    "Write a bash script that rotates log files older than 7 days and compresses them.",
    "Analyze the time complexity of quicksort in the worst case and how to avoid it.",
]


def route(text: str, **fields: object) -> str:
    return choose_profile(RouteRequest(text=text, **fields), RULES, PROFILES).profile  # type: ignore[arg-type]


def test_a_labelled_prompt_set_is_routed_as_labelled() -> None:
    labelled = [(text, FAST) for text in SIMPLE] + [(text, STRONG) for text in HARD]
    assert len(labelled) >= 30
    wrong = [(text, label) for text, label in labelled if route(text) != label]
    assert len(wrong) <= 0.1 * len(labelled), wrong


def test_reasoning_effort_and_length_move_the_score() -> None:
    assert route("Who painted the Mona Lisa?", reasoning_effort="high") == STRONG
    assert route("Explain step by step how tides work.", reasoning_effort="low") == FAST  # 2 - 1 < 2
    long_question = "Summarise this: " + "The committee met and discussed the budget. " * 40
    score = difficulty(RouteRequest(text=long_question), RULES)
    assert "long +1" in score.features


def test_an_explicit_hint_wins_over_the_text() -> None:
    decision = choose_profile(RouteRequest(text="hi", hint="quality"), RULES, PROFILES)
    assert (decision.profile, decision.reason) == (STRONG, "hint route=quality")
    assert route("Prove Fermat's little theorem.", hint="latency") == FAST
    assert route("hi", hint=STRONG) == STRONG
    assert route("hi", hint="nonsense") == FAST  # an unknown hint is ignored


def test_max_tokens_above_the_fast_limit_leaves_only_the_strong_profile() -> None:
    decision = choose_profile(RouteRequest(text="hi", hint="latency", max_tokens=1000), RULES, PROFILES)
    assert decision.profile == STRONG and "fits only quality_first" in decision.reason
    with pytest.raises(ValueError):
        choose_profile(RouteRequest(text="hi", max_tokens=4096), RULES, PROFILES)


def test_a_flooded_profile_sheds_work_to_the_other_within_the_slo() -> None:
    hard = RouteRequest(text="Prove that there are infinitely many primes.")
    idle = {FAST: ProfileLoad(0, 4.0), STRONG: ProfileLoad(0, 12.0)}
    assert choose_profile(hard, RULES, PROFILES, idle).profile == STRONG
    flooded = {FAST: ProfileLoad(0, 4.0), STRONG: ProfileLoad(40, 12.0)}  # 12 * (1 + 40/8) = 72 s > 30 s
    decision = choose_profile(hard, RULES, PROFILES, flooded)
    assert decision.profile == FAST
    assert "backlog 40" in decision.reason and "shed to latency_first" in decision.reason
    both_flooded = {FAST: ProfileLoad(640, 4.0), STRONG: ProfileLoad(40, 12.0)}  # 84 s vs 72 s: stay
    assert choose_profile(hard, RULES, PROFILES, both_flooded).profile == STRONG


def test_an_idle_strong_profile_takes_medium_work_but_not_simple_facts() -> None:
    medium = RouteRequest(text="Explain step by step how tides work.", reasoning_effort="low")  # score 1
    idle = {FAST: ProfileLoad(3, 4.0), STRONG: ProfileLoad(0, 12.0)}
    decision = choose_profile(medium, RULES, PROFILES, idle)
    assert decision.profile == STRONG and "is idle" in decision.reason
    busy = {FAST: ProfileLoad(3, 4.0), STRONG: ProfileLoad(1, 12.0)}
    assert choose_profile(medium, RULES, PROFILES, busy).profile == FAST
    assert choose_profile(RouteRequest(text="hello"), RULES, PROFILES, idle).profile == FAST


def test_the_router_says_when_it_could_not_read_the_load() -> None:
    router = ProfileRouter(RULES, PROFILES, load_snapshot=lambda: None)
    assert router.candidates == (FAST, STRONG)
    assert router(RouteRequest(text="hello")).reason.endswith("(load unknown)")
    assert router.max_tokens_limits() == {FAST: 512, STRONG: 2048}


def test_rules_come_from_the_routing_table_with_defaults_for_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(
        '[profiles.a]\nmodel = "x"\n\n[routing]\nquality_threshold = 5.0\nmath_keywords = ["zeta"]\n'
    )
    rules = load_routing_rules(path)
    assert rules.quality_threshold == 5.0 and rules.math_keywords == ("zeta",)
    assert rules.slo_s == RoutingRules().slo_s and rules.weights.code == 2.0
    path.write_text('[profiles.a]\nmodel = "x"\n')
    assert load_routing_rules(path) == RoutingRules()
    path.write_text('[routing]\nquality_threshold = "high"\n')
    with pytest.raises(ProfileConfigError, match="routing"):
        load_routing_rules(path)


def test_the_shipped_profiles_file_has_valid_routing_rules() -> None:
    rules = load_routing_rules(REPO_ROOT / "profiles.toml")
    assert (rules.fast_profile, rules.strong_profile) == (FAST, STRONG)
