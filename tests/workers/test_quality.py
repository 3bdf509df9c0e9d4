"""Answer-quality signals on crafted tiny-gpt-oss outputs, their summary, and gate thresholds on it."""

from __future__ import annotations

import pytest

from app.quality import (
    QUALITY_THRESHOLDS,
    QualitySignals,
    quality_json,
    quality_signals,
    quality_summary,
    quality_violations,
    reasoning_share,
    repetition_score,
    signals_of_row,
)
from engine.harmony import parse_harmony
from engine.tiny import build_harmony_tokenizer
from engine.types import GenerationResult

# What the harmony tiny model (tests/fixtures/tiny-gptoss-harmony) answers, and broken variants of it.
GOOD = (
    "<|channel|>analysis<|message|>Greet back.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>Hello, friend!"
)
CUT_IN_REASONING = "<|channel|>analysis<|message|>Greet back. Greet back. Greet"
NO_CHANNELS = "Hello, friend!<|end|>stray<|message|>"


def result_of(raw: str, finish_reason: str = "stop") -> GenerationResult:
    """The engine's result for a raw harmony output, split by the same parser the engine uses."""
    tokenizer = build_harmony_tokenizer()
    parsed = parse_harmony(tokenizer, tokenizer(raw, add_special_tokens=False)["input_ids"])
    content, reasoning, ok = parsed.content, parsed.reasoning, parsed.ok
    return GenerationResult("r", content, reasoning, finish_reason, 5, 20, 0.1, 0.5, harmony_ok=ok)  # type: ignore[arg-type]


def test_a_well_formed_answer_scores_clean() -> None:
    signals = quality_signals(result_of(GOOD))
    assert signals == QualitySignals(
        harmony_ok=True,
        empty_answer=False,
        truncated=False,
        reasoning_share=round(len("Greet back.") / len("Greet back.Hello, friend!"), 4),
        repetition=0.0,
    )


def test_output_cut_off_in_the_analysis_channel_is_empty_and_truncated() -> None:
    signals = quality_signals(result_of(CUT_IN_REASONING, finish_reason="length"))
    assert signals.empty_answer and signals.truncated and not signals.harmony_ok
    assert signals.reasoning_share == 1.0


def test_malformed_harmony_is_flagged() -> None:
    assert not quality_signals(result_of(NO_CHANNELS)).harmony_ok


def test_repetition_score_grows_with_looping_text() -> None:
    assert repetition_score("The capital of France is Paris.") == 0.0
    assert repetition_score("") == 0.0 and repetition_score("ok") == 0.0
    looping = "I am a model. " * 20
    assert repetition_score(looping) > 0.9
    half = "one two three four five six seven eight " + "nine ten eleven " * 4
    assert 0.2 < repetition_score(half) < 0.7


def test_reasoning_share_is_a_character_ratio() -> None:
    assert reasoning_share("", "") == 0.0
    assert reasoning_share("abc", "") == 0.0
    assert reasoning_share("ab", "ab") == 0.5


def test_signals_round_trip_through_job_columns_and_job_json() -> None:
    signals = quality_signals(result_of(GOOD))
    columns = signals.as_columns()
    assert set(columns) == {
        "quality_harmony_ok",
        "quality_empty_answer",
        "quality_truncated",
        "quality_reasoning_share",
        "quality_repetition",
    }
    assert signals_of_row(columns) == signals
    assert quality_json(columns) == {name.removeprefix("quality_"): value for name, value in columns.items()}
    assert signals_of_row({"quality_harmony_ok": True}) is None  # an unscored job


def test_summary_gives_rates_and_means_over_scored_jobs() -> None:
    good = quality_signals(result_of(GOOD)).as_columns()
    empty = quality_signals(result_of(CUT_IN_REASONING, "length")).as_columns()
    rows = [good, good, good, empty, {"quality_harmony_ok": None}]  # the last one was never scored
    summary = quality_summary(rows)
    assert summary["samples"] == 4
    assert summary["empty_answer_rate"] == 0.25 and summary["truncated_rate"] == 0.25
    assert summary["harmony_ok_rate"] == 0.75  # the cut-off message never closed
    assert 0 < summary["reasoning_share_mean"] < 1
    assert quality_summary([])["empty_answer_rate"] is None


def test_a_quality_threshold_fails_when_crossed() -> None:
    good = quality_signals(result_of(GOOD)).as_columns()
    empty = quality_signals(result_of(CUT_IN_REASONING, "length")).as_columns()
    healthy = quality_summary([good] * 99 + [empty])  # 1 % empty answers
    limits = {"max_empty_answer_rate": 0.01, "min_harmony_ok_rate": 0.9, "max_repetition_mean": None}
    assert quality_violations(healthy, limits) == []
    sick = quality_summary([good] * 97 + [empty] * 3)
    assert quality_violations(sick, limits) == ["empty_answer_rate 0.03 is above max_empty_answer_rate 0.01"]
    assert quality_violations(quality_summary([]), limits) == []  # nothing measured, nothing broken
    with pytest.raises(ValueError, match="unknown quality threshold"):
        quality_violations(healthy, {"max_typos": 0.1})
    assert set(QUALITY_THRESHOLDS) >= {"max_empty_answer_rate", "max_truncated_rate", "min_harmony_ok_rate"}


def test_a_gate_with_a_quality_threshold_fails_when_it_is_crossed() -> None:
    from gate.driver import RequestSample
    from gate.figures import compute_figures
    from gate.slo import Slo, check_slo

    good = quality_json(quality_signals(result_of(GOOD)).as_columns())
    empty = quality_json(quality_signals(result_of(CUT_IN_REASONING, "length")).as_columns())

    def run(answers: list[dict | None]) -> dict:
        samples = [
            RequestSample(
                i, "short_chat", i, i, ttft_s=0.5, e2e_s=1.0, ok=True, completion_tokens=9, quality=q
            )
            for i, q in enumerate(answers)
        ]
        return compute_figures(samples, window_s=10.0, run_s=10.0)

    slo = Slo(
        name="q", min_qps=0.1, p95_ttft_s=10, p95_e2e_s=30, max_error_rate=0.01, max_empty_answer_rate=0.1
    )
    healthy = check_slo(run([good] * 10), slo)
    assert all(check.passed for check in healthy) and healthy[-1].metric == "empty_answer_rate"
    failing = [check for check in check_slo(run([good] * 8 + [empty] * 2), slo) if not check.passed]
    assert [check.message for check in failing] == ["empty_answer_rate 0.2 > 0.1 (+100%)"]
    plain = slo.model_copy(update={"max_empty_answer_rate": None})
    assert len(check_slo(run([empty] * 10), plain)) == 4  # no quality threshold set: none checked
