"""Batch rows, their guarded transitions, live request counts, and bulk changes to a batch's jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.batches.models import FINAL_BATCH_STATUSES, Batch, BatchStatus
from app.db import id_page
from app.errors import ApiError
from app.keys.caller import Caller
from app.models import Job, JobStatus, utcnow
from app.queue import QueuedJob, job_queue
from app.retention import after as expiry_after
from app.retention import cutoff, get_unexpired_or_404
from app.services import services
from app.settings import RetentionSettings

COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
ACTIVE_STATUSES = (
    BatchStatus.VALIDATING,
    BatchStatus.IN_PROGRESS,
    BatchStatus.FINALIZING,
    BatchStatus.CANCELLING,
)


@dataclass(frozen=True)
class RequestCounts:
    total: int
    completed: int  # succeeded
    failed: int  # failed, cancelled or expired: the error file's lines

    @property
    def ended(self) -> int:
        return self.completed + self.failed

    def as_json(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed}


def create_batch(
    session: orm.Session,
    *,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: Any,
    owner: str | None,
) -> Batch:
    now = utcnow()
    batch = Batch(
        input_file_id=input_file_id,
        endpoint=endpoint,
        completion_window=completion_window,
        batch_metadata=metadata,
        owner=owner,
        status=BatchStatus.VALIDATING,
        created_at=now,
        expires_at=now + COMPLETION_WINDOWS[completion_window],
    )
    session.add(batch)
    session.commit()
    return batch


def delete_batch(session: orm.Session, batch_id: str) -> None:
    """Remove a batch whose ingest could not be queued."""
    session.execute(sa.delete(Batch).where(Batch.id == batch_id))
    session.commit()


def visible_batches(caller: Caller) -> sa.ColumnElement[bool]:
    """The batches this caller may see and touch: its own, or every batch for an admin."""
    return caller.sees(Batch.owner)


def get_batch_or_404(session: orm.Session, batch_id: str, caller: Caller) -> Batch:
    """The batch, if this caller may see it and it has not expired (app/retention.py); else 404 (the
    same as for an id that never existed, when it is another key's)."""
    error = ApiError(404, f"No batch with id '{batch_id}'.", param="batch_id", code="batch_not_found")
    expiry = partial(batch_expires_at, retention=services().settings.retention)
    return get_unexpired_or_404(session, Batch, batch_id, error, expiry, "Batch", caller)


def ended_at(batch: Batch) -> datetime | None:
    """When the batch reached its final status (None while it runs)."""
    if batch.status not in FINAL_BATCH_STATUSES:
        return None
    return batch.completed_at or batch.failed_at or batch.cancelled_at or batch.expired_at


def batch_expires_at(batch: Batch, retention: RetentionSettings) -> datetime | None:
    """When a finished batch expires (RETENTION_BATCHES_S after it ended); a running one never does.
    Not the batch object's `expires_at`, which is the end of its completion window."""
    return expiry_after(ended_at(batch), retention.batches_s)


def expired_batches(retention: RetentionSettings, now: datetime) -> sa.ColumnElement[bool] | None:
    """The finished batches past their expiry at `now`; None when batches are kept for ever."""
    before = cutoff(retention.batches_s, now)
    if before is None:
        return None
    ended = sa.func.coalesce(Batch.completed_at, Batch.failed_at, Batch.cancelled_at, Batch.expired_at)
    ended_before = sa.and_(ended.is_not(None), ended <= before)
    return sa.and_(Batch.status.in_(FINAL_BATCH_STATUSES), ended_before)  # never NULL: NOT of it is sound


def list_batches(
    session: orm.Session, caller: Caller, *, after: str | None, limit: int
) -> tuple[list[Batch], bool]:
    """The caller's unexpired batches newest first after the cursor `after` (a batch id); returns
    (page, has_more)."""
    expired = expired_batches(services().settings.retention, utcnow())
    unexpired = sa.not_(expired) if expired is not None else None
    return id_page(session, Batch, after, limit, unexpired, visible_batches(caller))


def batch_reading_file(session: orm.Session, file_id: str) -> str | None:
    """The id of a batch that still reads this input file (validating or creating jobs), if any."""
    reading = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
    query = sa.select(Batch.id).where(Batch.input_file_id == file_id, Batch.status.in_(reading)).limit(1)
    return session.scalar(query)


def transition(session: orm.Session, batch_id: str, from_statuses: tuple[str, ...], **values: Any) -> bool:
    """UPDATE the batch WHERE its status is one of from_statuses; commit; True when this call changed it."""
    query = sa.update(Batch).where(Batch.id == batch_id, Batch.status.in_(from_statuses)).values(**values)
    result = session.execute(query)
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def job_status_counts(session: orm.Session, batch_ids: list[str]) -> dict[str, dict[str, int]]:
    """{batch_id: {job status: count}} in one GROUP BY query."""
    if not batch_ids:
        return {}
    query = (
        sa.select(Job.batch_id, Job.status, sa.func.count())
        .where(Job.batch_id.in_(batch_ids))
        .group_by(Job.batch_id, Job.status)
    )
    counts: dict[str, dict[str, int]] = {batch_id: {} for batch_id in batch_ids}
    for batch_id, status, count in session.execute(query):
        counts[str(batch_id)][status] = count
    return counts


def request_counts(batch: Batch, by_status: dict[str, int] | None) -> RequestCounts:
    """Stored counts for an ended batch, else counted live from its jobs' statuses."""
    if by_status is None or batch.status not in ACTIVE_STATUSES:
        return RequestCounts(batch.request_total, batch.request_completed, batch.request_failed)
    completed = by_status.get(JobStatus.SUCCEEDED, 0)
    failed = sum(by_status.get(status, 0) for status in (JobStatus.FAILED, JobStatus.CANCELLED))
    return RequestCounts(batch.request_total, completed, failed)


def live_request_counts(session: orm.Session, batches: list[Batch]) -> dict[str, RequestCounts]:
    active = [batch.id for batch in batches if batch.status in ACTIVE_STATUSES]
    by_batch = job_status_counts(session, active)
    return {batch.id: request_counts(batch, by_batch.get(batch.id)) for batch in batches}


def inserted_lines(session: orm.Session, batch_id: str) -> int:
    """The last input line that already has its job (0 when none): ingest resumes after it."""
    return session.scalar(sa.select(sa.func.max(Job.batch_line)).where(Job.batch_id == batch_id)) or 0


def has_unfinished_jobs(session: orm.Session, batch_id: str) -> bool:
    """Whether any job of the batch is still queued or running (one indexed probe)."""
    unfinished = sa.select(Job.id).where(
        Job.batch_id == batch_id, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING))
    )
    return session.execute(unfinished.limit(1)).first() is not None


def queued_jobs(session: orm.Session, batch_id: str) -> list[QueuedJob]:
    """The batch's queued jobs, to enqueue them again on resume."""
    query = sa.select(Job.id, Job.profile, Job.task_id, Job.owner).where(
        Job.batch_id == batch_id, Job.status == JobStatus.QUEUED
    )
    return [
        QueuedJob(job_id, profile, task_id, job_queue(profile, batch_id, {}, owner))
        for job_id, profile, task_id, owner in session.execute(query)
    ]
