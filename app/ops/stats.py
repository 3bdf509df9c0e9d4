"""Job statistics computed from the stored rows, so they survive restarts (GET /v1/stats).

Percentiles are computed in Python over the newest `max_jobs` jobs of the window, which works the
same on SQLite and Postgres. Each figure uses the jobs that have it: queue wait every started job,
TTFT/E2E/tokens per second every job the engine timed (a cancelled job's partial run included).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.models import Job, JobStatus
from app.quality import quality_summary

QUALITY_COLUMNS = (
    Job.quality_harmony_ok, Job.quality_empty_answer, Job.quality_truncated,
    Job.quality_reasoning_share, Job.quality_repetition,
)  # fmt: skip


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, Any]:
    """p50, p95 and how many jobs they come from."""
    p50, p95 = percentile(values, 0.50), percentile(values, 0.95)
    return {
        "p50": None if p50 is None else round(p50, 6),
        "p95": None if p95 is None else round(p95, 6),
        "samples": len(values),
    }


def decode_tokens_per_s(
    completion_tokens: int | None, ttft_s: float | None, e2e_s: float | None
) -> float | None:
    """Tokens after the first one per second of decoding: (completion_tokens - 1) / (e2e - ttft).

    Prefill and queueing are left out (TTFT and queue wait report them), so this is the speed a
    streaming reader sees; a job with fewer than two tokens has no decode phase.
    """
    if completion_tokens is None or ttft_s is None or e2e_s is None or completion_tokens < 2:
        return None
    decode_s = e2e_s - ttft_s
    return (completion_tokens - 1) / decode_s if decode_s > 0 else None


def window(profile: str | None, since: datetime | None, include_gate: bool) -> list[sa.ColumnElement[bool]]:
    """The jobs of the stats' window: the profile's, created since, release-gate jobs only on request."""
    conditions = []
    if profile is not None:
        conditions.append(Job.profile == profile)
    if since is not None:
        conditions.append(Job.created_at >= since)
    if not include_gate:  # the release gate's probes would otherwise pass for real users' traffic
        conditions.append(Job.is_gate.is_(False))
    return conditions


def stats_query(
    profile: str | None,
    since: datetime | None,
    max_jobs: int,
    include_gate: bool = False,
    visible: sa.ColumnElement[bool] | None = None,
) -> sa.Select:
    """The jobs the stats cover: newest first, in the window, bounded; release-gate jobs on request;
    only the `visible` ones (a non-admin key's own)."""
    query = sa.select(
        Job.status, Job.created_at, Job.started_at, Job.ttft_s, Job.e2e_s, Job.completion_tokens,
        Job.routed_from, Job.cached_from, Job.tool_calls, *QUALITY_COLUMNS,
    ).order_by(Job.id.desc())  # ids are time-ordered; the primary key index serves the order  # fmt: skip
    query = query.where(*window(profile, since, include_gate))
    if visible is not None:
        query = query.where(visible)
    return query.limit(max_jobs + 1)  # one more tells whether older jobs were left out


def job_stats(
    session: orm.Session,
    profile: str | None,
    since: datetime | None,
    max_jobs: int,
    include_gate: bool = False,
    visible: sa.ColumnElement[bool] | None = None,
) -> dict[str, Any]:
    """Counts by status, error rate and p50/p95 of queue wait, TTFT, E2E and decode tokens/s."""
    rows = session.execute(stats_query(profile, since, max_jobs, include_gate, visible)).all()
    truncated, rows = len(rows) > max_jobs, rows[:max_jobs]
    by_status = Counter(row.status for row in rows)
    succeeded, failed = by_status[JobStatus.SUCCEEDED], by_status[JobStatus.FAILED]
    queue_waits = [(r.started_at - r.created_at).total_seconds() for r in rows if r.started_at is not None]
    rates = [decode_tokens_per_s(r.completion_tokens, r.ttft_s, r.e2e_s) for r in rows]
    return {
        "object": "stats",
        "profile": profile,
        "since": None if since is None else since.timestamp(),
        "include_gate": include_gate,
        "count": len(rows),
        "truncated": truncated,  # older jobs of the window were left out
        "by_status": {status.value: by_status[status] for status in JobStatus},
        # cancelling is the user's choice, not an error: cancelled jobs count on neither side
        "error_rate": failed / (succeeded + failed) if succeeded + failed else None,
        "queue_wait_s": summary(queue_waits),
        "ttft_s": summary([r.ttft_s for r in rows if r.ttft_s is not None]),
        "e2e_s": summary([r.e2e_s for r in rows if r.e2e_s is not None]),
        "decode_tokens_per_s": summary([rate for rate in rates if rate is not None]),
        # answers the engines gave (a cache hit repeats one, so it is left out): rates and means
        "quality": quality_summary(r for r in rows if r.cached_from is None),
        "cache_hits": sum(r.cached_from is not None for r in rows),
        "routed_auto": sum(r.routed_from is not None for r in rows),
        "tool_calls": tool_call_counts(rows),
    }


def tool_call_counts(rows: Sequence[Any]) -> dict[str, int]:
    """Answers that called a function, the calls, and the calls that cannot run as written."""
    calls = [call for row in rows for call in row.tool_calls or ()]
    return {
        "jobs": sum(bool(row.tool_calls) for row in rows),
        "calls": len(calls),
        "invalid": sum(bool(call.get("error")) for call in calls),
    }
