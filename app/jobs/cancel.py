"""The Redis key that tells a worker to cancel a running job (the API sets it, workers poll it)."""

from __future__ import annotations

import redis

CANCEL_KEY_PREFIX = "gptoss:cancel:"


def cancel_key(job_id: str) -> str:
    return f"{CANCEL_KEY_PREFIX}{job_id}"


def signal_cancel(client: redis.Redis, job_id: str, ttl_s: int) -> None:
    """Set the job's cancel key; it expires after ttl_s so stale keys do not pile up."""
    client.set(cancel_key(job_id), "1", ex=ttl_s)


def cancelled_job_ids(client: redis.Redis, job_ids: list[str]) -> list[str]:
    """Which of these jobs have their cancel key set (one round trip)."""
    if not job_ids:
        return []
    values = client.mget([cancel_key(job_id) for job_id in job_ids])
    return [job_id for job_id, value in zip(job_ids, values, strict=True) if value is not None]
