"""The API's JSON view of a Job row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.models import Job
from app.quality import quality_json


def _unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 6) if start is not None and end is not None else None


def job_json(job: Job) -> dict[str, Any]:
    """The job object of the v1 API (times in unix seconds, durations in float seconds)."""
    usage = None
    if job.completion_tokens is not None:
        prompt_tokens = job.prompt_tokens or 0
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": job.completion_tokens,
            "total_tokens": prompt_tokens + job.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": job.reasoning_tokens or 0},
        }
    result = None
    if job.finish_reason is not None and job.status != "queued":
        result = {
            "content": job.content,
            "reasoning": job.reasoning,
            "finish_reason": job.finish_reason,
            "tool_calls": job.tool_calls or [],
        }
    return {
        "id": job.id,
        "object": "job",
        "status": job.status,
        "profile": job.profile,
        "created_at": _unix(job.created_at),
        "started_at": _unix(job.started_at),
        "first_token_at": _unix(job.first_token_at),
        "finished_at": _unix(job.finished_at),
        "cancel_requested": job.cancel_requested,
        "attempts": job.attempts,
        "request": job.request,
        "metadata": job.request.get("metadata"),
        "result": result,
        "error": {"message": job.error} if job.error else None,
        "usage": usage,
        "tags": job.tags(),
        "worker": job.worker_hostname,
        "routed_from": job.routed_from,  # "auto" when the router chose `profile`
        "route_reason": job.route_reason,
        "cached": job.cached_from is not None,  # answered from the response cache, by no worker
        "cached_from": job.cached_from,  # the job whose answer (and tags) this one copies
        "quality": quality_json(job),
        "timings": {
            "queue_s": _seconds_between(job.created_at, job.started_at),
            "ttft_s": job.ttft_s,
            "e2e_s": job.e2e_s,
            "total_s": _seconds_between(job.created_at, job.finished_at),
        },
    }
