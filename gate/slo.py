"""SLOs: load them from TOML files and check a run's figures against one."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.quality import QUALITY_THRESHOLDS


class Slo(BaseModel):
    """One named SLO: the throughput, latency and error thresholds a run must meet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    min_qps: float = Field(ge=0)
    p95_ttft_s: float = Field(gt=0)
    p95_e2e_s: float = Field(gt=0)
    max_error_rate: float = Field(ge=0, le=1)
    # optional answer-quality thresholds (app/quality.py), checked only when set
    max_empty_answer_rate: float | None = Field(default=None, ge=0, le=1)
    max_truncated_rate: float | None = Field(default=None, ge=0, le=1)
    min_harmony_ok_rate: float | None = Field(default=None, ge=0, le=1)
    max_repetition_mean: float | None = Field(default=None, ge=0, le=1)
    max_reasoning_share_mean: float | None = Field(default=None, ge=0, le=1)


class SloFileError(ValueError):
    """An SLO file that cannot be read, or an SLO name it does not define."""


def builtin_slos_text() -> str:
    return resources.files("gate").joinpath("slos.toml").read_text()


def parse_slos(text: str, source: str) -> dict[str, Slo]:
    """The SLOs of one TOML document (one table per SLO); errors name the file and the field."""
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SloFileError(f"{source}: not valid TOML: {exc}") from exc
    slos = {}
    for name, fields in tables.items():
        if not isinstance(fields, dict):
            raise SloFileError(f"{source}: '{name}' must be a table like [{name}]")
        try:
            slos[name] = Slo(name=name, **fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SloFileError(f"{source}: SLO '{name}': {problems}") from exc
    return slos


def load_slos(extra_file: str | Path | None = None) -> dict[str, Slo]:
    """The built-in SLOs, then those of `extra_file` (which may add new ones or override them)."""
    slos = parse_slos(builtin_slos_text(), "gate/slos.toml")
    if extra_file:
        path = Path(extra_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SloFileError(f"cannot read the SLO file {path}: {exc.strerror}") from exc
        slos |= parse_slos(text, str(path))
    return slos


def find_slo(name: str, extra_file: str | Path | None = None) -> Slo:
    slos = load_slos(extra_file)
    if name not in slos:
        raise SloFileError(f"unknown SLO '{name}'; known: {', '.join(sorted(slos))}")
    return slos[name]


@dataclass(frozen=True)
class Check:
    """One threshold of an SLO applied to a measured figure."""

    metric: str
    value: float | None
    limit: float
    comparison: Literal["<=", ">="]
    passed: bool
    message: str  # e.g. "p95_ttft_s 12.3 > 10.0 (+23%)"

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "limit": self.limit,
            "comparison": self.comparison,
            "passed": self.passed,
            "message": self.message,
        }


def format_number(value: float) -> str:
    """Three significant digits, never in exponent form, always with a decimal point (10.0, 0.0556)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:.1f}"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    digits = max(1, 2 - math.floor(math.log10(abs(value))))
    text = f"{value:.{digits}f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def check_threshold(metric: str, value: float | None, limit: float, comparison: Literal["<=", ">="]) -> Check:
    """Apply one threshold; a missing figure (no successful request) fails."""
    if value is None:
        message = f"{metric} n/a (no successful request) must be {comparison} {format_number(limit)}"
        return Check(metric, None, limit, comparison, False, message)
    passed = value <= limit if comparison == "<=" else value >= limit
    shown = f"{metric} {format_number(value)}"
    if passed:
        return Check(metric, value, limit, comparison, True, f"{shown} {comparison} {format_number(limit)}")
    broken = ">" if comparison == "<=" else "<"
    over = f"({(value - limit) / limit * 100:+.0f}%)" if limit else "(the limit is 0)"
    return Check(metric, value, limit, comparison, False, f"{shown} {broken} {format_number(limit)} {over}")


def check_slo(figures: Mapping[str, Any], slo: Slo) -> list[Check]:
    """Every threshold of the SLO against the run's figures (see gate/figures.py)."""
    return [
        check_threshold("achieved_qps", figures["achieved_qps"], slo.min_qps, ">="),
        check_threshold("p95_ttft_s", figures["ttft_s"]["p95"], slo.p95_ttft_s, "<="),
        check_threshold("p95_e2e_s", figures["e2e_s"]["p95"], slo.p95_e2e_s, "<="),
        check_threshold("error_rate", figures["error_rate"], slo.max_error_rate, "<="),
        *check_quality(figures.get("quality") or {}, slo),
    ]


def check_quality(quality: Mapping[str, Any], slo: Slo) -> list[Check]:
    """The SLO's quality thresholds that are set, against the run's quality summary."""
    checks = []
    for name, figure in QUALITY_THRESHOLDS.items():
        limit = getattr(slo, name)
        if limit is not None:
            checks.append(
                check_threshold(figure, quality.get(figure), limit, ">=" if name[:4] == "min_" else "<=")
            )
    return checks
