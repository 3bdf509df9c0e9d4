"""Answer-quality signals of a finished generation, their summary over many jobs, and gate thresholds.

Signals, computed once per succeeded job (finish_reason stop or length) and stored in its row:
- harmony_ok: the output parsed as well-formed harmony (the engine's parser says so);
- empty_answer: the final channel (content) is blank and no function was called, e.g. all tokens
  went to reasoning;
- truncated: the job hit max_tokens (finish_reason "length");
- reasoning_share: reasoning / (reasoning + answer), in characters. Characters stand in for tokens:
  both channels are text of one tokenizer (~4 characters a token in English for o200k), so the
  share is close to the token share without re-tokenizing in the worker; 0 when both are empty;
- repetition: the fraction of repeated word 3-grams in the answer, 0 (none) .. 1 (one phrase looped).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

REPETITION_NGRAM = 3
_TOKEN = re.compile(r"\w+|[^\w\s]")  # words and single punctuation marks

# Gate thresholds an SLO file may set, and the summary figure each one bounds (max_*: upper bound).
QUALITY_THRESHOLDS = {
    "max_empty_answer_rate": "empty_answer_rate",
    "max_truncated_rate": "truncated_rate",
    "min_harmony_ok_rate": "harmony_ok_rate",
    "max_repetition_mean": "repetition_mean",
    "max_reasoning_share_mean": "reasoning_share_mean",
}


class GenerationLike(Protocol):
    """What the signals need from a result (workers/engine_types.GenerationResult fits)."""

    @property
    def content(self) -> str: ...
    @property
    def reasoning(self) -> str: ...
    @property
    def finish_reason(self) -> str: ...
    @property
    def harmony_ok(self) -> bool: ...
    @property
    def tool_calls(self) -> Any: ...


@dataclass(frozen=True)
class QualitySignals:
    harmony_ok: bool
    empty_answer: bool
    truncated: bool
    reasoning_share: float
    repetition: float

    def as_dict(self) -> dict[str, Any]:
        """The signals by name. Not dataclasses.asdict, which copies each value recursively: a third of
        the time a 50,000-line batch took to write its output file went there."""
        return {name: getattr(self, name) for name in SIGNAL_NAMES}

    def as_columns(self) -> dict[str, Any]:
        """The Job columns that store these signals (quality_<name>)."""
        return {f"quality_{name}": value for name, value in self.as_dict().items()}


SIGNAL_NAMES = tuple(QualitySignals.__dataclass_fields__)


def repetition_score(text: str, n: int = REPETITION_NGRAM) -> float:
    """Fraction of the text's word n-grams that repeat an earlier one: 0 for fresh text, near 1 for loops."""
    tokens = _TOKEN.findall(text.lower())
    ngrams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if len(ngrams) < 2:
        return 0.0
    return round(1 - len(set(ngrams)) / len(ngrams), 4)


def reasoning_share(content: str, reasoning: str) -> float:
    """reasoning / (reasoning + answer) in characters (see the module docstring); 0 when both are empty."""
    total = len(content) + len(reasoning)
    return round(len(reasoning) / total, 4) if total else 0.0


def quality_signals(result: GenerationLike) -> QualitySignals:
    """The signals of one finished generation."""
    return QualitySignals(
        harmony_ok=bool(result.harmony_ok),
        empty_answer=not result.content.strip() and not result.tool_calls,
        truncated=result.finish_reason == "length",
        reasoning_share=reasoning_share(result.content, result.reasoning),
        repetition=repetition_score(result.content),
    )


def signals_of_row(row: Any) -> QualitySignals | None:
    """The signals of a job row (quality_* attributes) or a job JSON's `quality` dict; None if unscored."""
    names = SIGNAL_NAMES
    if isinstance(row, Mapping):
        values = {name: row.get(f"quality_{name}", row.get(name)) for name in names}
    else:
        values = {name: getattr(row, f"quality_{name}", None) for name in names}
    if any(value is None for value in values.values()):
        return None
    return QualitySignals(**values)


def quality_json(row: Any) -> dict[str, Any] | None:
    """The `quality` object of the job JSON."""
    signals = signals_of_row(row)
    return signals.as_dict() if signals is not None else None


def _rate(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def quality_summary(rows: Iterable[Any]) -> dict[str, Any]:
    """Rates and means of the signals over rows: job rows, DB result rows, or job JSON `quality` dicts.

    Rows without signals (queued, failed, cancelled, or finished before scoring existed) are skipped;
    `samples` says how many counted. Every figure is None when no row has signals.
    """
    scored = [s for s in (signals_of_row(row) for row in rows) if s is not None]
    return {
        "samples": len(scored),
        "harmony_ok_rate": _rate([s.harmony_ok for s in scored]),
        "empty_answer_rate": _rate([s.empty_answer for s in scored]),
        "truncated_rate": _rate([s.truncated for s in scored]),
        "reasoning_share_mean": _mean([s.reasoning_share for s in scored]),
        "repetition_mean": _mean([s.repetition for s in scored]),
    }


def quality_violations(summary: Mapping[str, Any], thresholds: Mapping[str, float | None]) -> list[str]:
    """The thresholds (see QUALITY_THRESHOLDS) the summary breaks, as sentences; [] when all hold.

    A threshold set to None is off; a summary without samples breaks none (nothing was measured).
    """
    violations = []
    for name, limit in thresholds.items():
        if name not in QUALITY_THRESHOLDS:
            raise ValueError(f"unknown quality threshold {name!r}; known: {sorted(QUALITY_THRESHOLDS)}")
        value = summary.get(QUALITY_THRESHOLDS[name])
        if limit is None or value is None:
            continue
        broken = value < limit if name.startswith("min_") else value > limit
        if broken:
            relation = "below" if name.startswith("min_") else "above"
            violations.append(f"{QUALITY_THRESHOLDS[name]} {value:g} is {relation} {name} {limit:g}")
    return violations
