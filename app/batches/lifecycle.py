"""A batch after ingest: cancel it, expire it, and finalize it (result files) once all its jobs ended."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import redis
import sqlalchemy as sa
from sqlalchemy import orm

from app.batches import store as batch_store
from app.batches.lease import finalize_lease
from app.batches.models import FINAL_BATCH_STATUSES, Batch, BatchStatus
from app.batches.results import discard_result_files, write_result_files
from app.batches.storage import FileStorage
from app.errors import ApiError
from app.jobs.cancel import cancel_batch_jobs
from app.keys.caller import Caller
from app.models import utcnow

log = logging.getLogger(__name__)


@dataclass
class LifecycleContext:
    """What checking a batch needs from the app or worker process."""

    sessions: orm.sessionmaker[orm.Session]
    files: FileStorage
    redis_client: redis.Redis
    cancel_ttl_s: int


def cancel_batch(
    session: orm.Session, batch_id: str, caller: Caller, redis_client: redis.Redis, ttl_s: int
) -> Batch:
    """validating | in_progress -> cancelling, stopping its jobs; 404 unknown (or another key's), 409
    when it already ended."""
    batch = batch_store.get_batch_or_404(session, batch_id, caller)
    now = utcnow()
    from_statuses = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
    if batch_store.transition(
        session, batch_id, from_statuses, status=BatchStatus.CANCELLING, cancelling_at=now
    ):
        try:
            cancel_batch_jobs(session, batch_id, redis_client, ttl_s, now)
        except redis.RedisError as exc:  # the batch watcher stops them again on its next check
            log.warning("could not signal the running jobs of %s yet: %s", batch_id, exc)
    session.refresh(batch)
    if batch.status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
        raise ApiError(
            409, f"Batch {batch_id} has status '{batch.status}' and can no longer be cancelled.",
            code="batch_not_cancellable",
        )  # fmt: skip
    return batch


def check_batch(ctx: LifecycleContext, batch_id: str, now: datetime | None = None) -> bool:
    """Expire, keep stopping, or finalize the batch as due; True once it needs no more checks. One check
    at a time finalizes a batch (its finalize lease, app/batches/lease.py)."""
    now = now or utcnow()
    with ctx.sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.status in FINAL_BATCH_STATUSES:
            return True
        if batch.status == BatchStatus.IN_PROGRESS and now >= batch.expires_at:
            to_finalizing = {"status": BatchStatus.FINALIZING, "finalizing_at": now, "expired_at": now}
            batch_store.transition(session, batch_id, (BatchStatus.IN_PROGRESS,), **to_finalizing)
            session.refresh(batch)
        if batch.status == BatchStatus.CANCELLING or batch.expired_at is not None:
            # again on every check: ingest may have inserted jobs after the first stop
            cancel_batch_jobs(session, batch_id, ctx.redis_client, ctx.cancel_ttl_s, now)
        if batch.status == BatchStatus.VALIDATING:
            return False
        counts = batch_store.live_request_counts(session, [batch])[batch_id]
        if counts.ended < batch.request_total:
            return False
        with finalize_lease(ctx.redis_client, batch_id) as leased:
            # not leased: another check is writing the result files; a later check sees the batch final
            return leased and finalize(ctx, session, batch, now)


def finalize(ctx: LifecycleContext, session: orm.Session, batch: Batch, now: datetime) -> bool:
    """Write the result files and move the batch to its final status; the loser of a race cleans up."""
    if batch.status == BatchStatus.IN_PROGRESS:
        moved = batch_store.transition(
            session, batch.id, (BatchStatus.IN_PROGRESS,), status=BatchStatus.FINALIZING, finalizing_at=now
        )
        if not moved:  # cancelled meanwhile: the next check finalizes it as cancelled
            return False
        session.refresh(batch)
    if batch.status == BatchStatus.CANCELLING:
        final, time_field, code = BatchStatus.CANCELLED, "cancelled_at", "batch_cancelled"
    elif batch.expired_at is not None:
        final, time_field, code = BatchStatus.EXPIRED, "expired_at", "batch_expired"
    else:
        final, time_field, code = BatchStatus.COMPLETED, "completed_at", "request_cancelled"
    result = write_result_files(session, ctx.files, batch.id, batch.owner, code)
    values = {
        "status": final,
        time_field: batch.expired_at or now,
        "output_file_id": result.output.id if result.output else None,
        "error_file_id": result.errors.id if result.errors else None,
        "request_completed": result.completed,
        "request_failed": result.failed,
    }
    update = sa.update(Batch).where(Batch.id == batch.id, Batch.status == batch.status).values(**values)
    if session.execute(update).rowcount:  # type: ignore[attr-defined]
        session.commit()
        log.info("batch %s %s: %d completed, %d failed", batch.id, final, result.completed, result.failed)
    else:
        session.rollback()
        discard_result_files(ctx.files, result)
    return True
