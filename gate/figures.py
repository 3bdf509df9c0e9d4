"""A run's figures: achieved QPS, latency percentiles, error rate and tokens/s, from the client's samples.

achieved_qps is the requests that succeeded divided by the load window (the run's set duration):
requests sent in the window count when they finish, within the request timeout, after it. A service
that keeps up thus reaches exactly the offered rate; one that falls behind shows it as E2E latency
and, past the timeout, as errors. TTFT and E2E percentiles are over the requests that succeeded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from app.ops.stats import percentile
from app.quality import quality_summary
from gate.driver import RequestSample


def latency_summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50, p95, p99 and max in seconds (None without samples), and the sample count."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "p50": rounded(percentile(values, 0.50)),
        "p95": rounded(percentile(values, 0.95)),
        "p99": rounded(percentile(values, 0.99)),
        "max": rounded(max(values)) if values else None,
        "samples": len(values),
    }


def stream_tokens_per_s(sample: RequestSample) -> float | None:
    """Tokens after the first per second of streaming, as this client received them."""
    tokens, ttft, e2e = sample.completion_tokens, sample.ttft_s, sample.e2e_s
    if not sample.ok or tokens is None or tokens < 2 or ttft is None or e2e is None or e2e <= ttft:
        return None
    return (tokens - 1) / (e2e - ttft)


def error_kind(error: str) -> str:
    """What groups errors in the report: "HTTP 503", "job failed", "timed out after 120 s", ..."""
    return error.split(":", 1)[0]


def compute_figures(samples: Sequence[RequestSample], window_s: float, run_s: float) -> dict[str, Any]:
    """Every figure of the report; the SLO checks read achieved_qps, ttft_s.p95, e2e_s.p95, error_rate."""
    succeeded = [s for s in samples if s.ok]
    failed = [s for s in samples if not s.ok]
    tokens = sum(s.completion_tokens or 0 for s in succeeded)
    rates = [rate for rate in map(stream_tokens_per_s, succeeded) if rate is not None]
    return {
        "requests": len(samples),
        "succeeded": len(succeeded),
        "failed": len(failed),
        "window_s": round(window_s, 3),
        "run_s": round(run_s, 3),
        "offered_qps": round(len(samples) / window_s, 4),
        "achieved_qps": round(len(succeeded) / window_s, 4),
        "error_rate": round(len(failed) / len(samples), 4) if samples else None,
        "ttft_s": latency_summary([s.ttft_s for s in succeeded if s.ttft_s is not None]),
        "e2e_s": latency_summary([s.e2e_s for s in succeeded if s.e2e_s is not None]),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / run_s, 2) if run_s > 0 else None,
        "stream_tokens_per_s": latency_summary(rates),
        "errors": dict(Counter(error_kind(s.error or "unknown error") for s in failed).most_common()),
        "by_prompt": figures_by_prompt(samples),
        "quality": quality_summary(s.quality for s in succeeded if s.quality),  # rates and means
    }


def figures_by_prompt(samples: Sequence[RequestSample]) -> dict[str, dict[str, Any]]:
    """Requests, successes and median latencies of each prompt of the suite."""
    by_prompt: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(s.prompt for s in samples):
        mine = [s for s in samples if s.prompt == name]
        ok = [s for s in mine if s.ok]
        by_prompt[name] = {
            "requests": len(mine),
            "succeeded": len(ok),
            "p50_ttft_s": latency_summary([s.ttft_s for s in ok if s.ttft_s is not None])["p50"],
            "p50_e2e_s": latency_summary([s.e2e_s for s in ok if s.e2e_s is not None])["p50"],
            "mean_completion_tokens": round(sum(s.completion_tokens or 0 for s in ok) / len(ok), 1)
            if ok
            else None,
        }
    return by_prompt
