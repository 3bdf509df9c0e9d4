"""The retention purge: deletes what has expired (app/retention.py), PURGE_CHUNK rows per transaction.

Celery beat runs it every PURGE_INTERVAL_S on the batch worker's queue (it loads no model). Each
transaction deletes up to PURGE_CHUNK rows of one kind (DELETE ... WHERE id IN (...) AND still
purgeable, RETURNING the ids) and writes their tombstones; a file's bytes are removed once its row
is gone. Never purged, whatever their age:
- a job that has not finished, and a finished job of a batch still running (its output is made from it);
- a batch that has not finished;
- a file that a batch still running reads or writes (its input, output or error file).
Tombstones themselves are purged TOMBSTONE_KEEP after the row they stand for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from celery import shared_task
from flask import Flask, current_app
from sqlalchemy import orm

from app.batches.files import expired_files, file_expires_at
from app.batches.models import FINAL_BATCH_STATUSES, Batch, StoredFile
from app.batches.storage import FileStorage
from app.batches.store import batch_expires_at, expired_batches
from app.jobs.store import expired_jobs, job_expires_at
from app.models import Job, Tombstone, utcnow
from app.queue import PURGE_TASK
from app.retention import TOMBSTONE_KEEP
from app.services import services
from app.settings import RetentionSettings

log = logging.getLogger(__name__)

LOCK_KEY = "gptoss:retention:lock"  # one purge at a time, however many batch workers there are


@dataclass
class PurgeContext:
    sessions: orm.sessionmaker[orm.Session]
    files: FileStorage  # where the purged files' bytes are removed from
    retention: RetentionSettings


@dataclass
class PurgeReport:
    jobs: int = 0
    batches: int = 0
    files: int = 0
    tombstones: int = 0  # tombstones older than TOMBSTONE_KEEP, removed in turn
    transactions: int = 0

    def __bool__(self) -> bool:
        return any(asdict(self).values())


@dataclass(frozen=True)
class Kind:
    """One kind of purgeable row: which rows may go now, and when one expired (for its tombstone)."""

    model: type[Any]
    purgeable: sa.ColumnElement[bool]
    expires_at: Callable[[Any], datetime | None]
    columns: tuple[Any, ...]  # what expires_at reads, loaded without the rest of the row


def purge_expired(ctx: PurgeContext, now: datetime | None = None) -> PurgeReport:
    """Delete every expired job, batch and file, and every tombstone past its keep; a report of counts."""
    now = now or utcnow()
    report = PurgeReport()
    kinds = purgeable_kinds(ctx.retention, now)
    if "jobs" in kinds:
        report.jobs = purge_kind(ctx, kinds["jobs"], now, report)
    if "batches" in kinds:
        report.batches = purge_kind(ctx, kinds["batches"], now, report)
    report.files = purge_kind(ctx, kinds["files"], now, report, after_commit=ctx.files.delete)
    report.tombstones = purge_tombstones(ctx, now, report)
    return report


def purgeable_kinds(retention: RetentionSettings, now: datetime) -> dict[str, Kind]:
    """Each kind with something that can expire: what may be purged of it at `now`."""
    unfinished_batch = Batch.status.not_in(FINAL_BATCH_STATUSES)
    kinds = {}
    if (jobs := expired_jobs(retention, now)) is not None:
        of_running_batch = sa.exists().where(Batch.id == Job.batch_id, unfinished_batch)
        kinds["jobs"] = Kind(
            Job, sa.and_(jobs, ~of_running_batch), partial(job_expires_at, retention=retention),
            (Job.status, Job.finished_at, Job.owner),
        )  # fmt: skip
    if (batches := expired_batches(retention, now)) is not None:
        times = (Batch.completed_at, Batch.failed_at, Batch.cancelled_at, Batch.expired_at)
        kinds["batches"] = Kind(
            Batch,
            batches,
            partial(batch_expires_at, retention=retention),
            (Batch.status, Batch.owner, *times),
        )
    used = sa.exists().where(
        unfinished_batch,
        sa.or_(
            Batch.input_file_id == StoredFile.id,
            Batch.output_file_id == StoredFile.id,
            Batch.error_file_id == StoredFile.id,
        ),
    )
    files = sa.and_(expired_files(retention, now), ~used)
    kinds["files"] = Kind(
        StoredFile, files, partial(file_expires_at, retention=retention),
        (StoredFile.purpose, StoredFile.created_at, StoredFile.expires_at, StoredFile.owner),
    )  # fmt: skip
    return kinds


def purge_kind(
    ctx: PurgeContext,
    kind: Kind,
    now: datetime,
    report: PurgeReport,
    after_commit: Callable[[list[str]], None] | None = None,
) -> int:
    """Purge a kind's purgeable rows, PURGE_CHUNK per transaction; how many went."""
    purged = 0
    while ids := purge_chunk(ctx, kind, now):
        report.transactions += 1
        purged += len(ids)
        if after_commit is not None:
            after_commit(ids)
    return purged


def purge_chunk(ctx: PurgeContext, kind: Kind, now: datetime) -> list[str]:
    """One transaction: delete up to PURGE_CHUNK purgeable rows (checked again as they are deleted)
    and write their tombstones; the ids deleted."""
    model = kind.model
    with ctx.sessions() as session:
        query = sa.select(model).options(orm.load_only(*kind.columns)).where(kind.purgeable)
        rows = session.scalars(query.order_by(model.id).limit(ctx.retention.purge_chunk)).all()
        if not rows:
            return []
        expiry = {row.id: kind.expires_at(row) or now for row in rows}
        delete = sa.delete(model).where(model.id.in_(list(expiry)), kind.purgeable).returning(model.id)
        deleted = list(session.scalars(delete.execution_options(synchronize_session=False)))
        if deleted:
            owners = {row.id: row.owner for row in rows}
            tombstones = [
                {"id": id_, "expired_at": expiry[id_], "purged_at": now, "owner": owners[id_]}
                for id_ in deleted
            ]
            session.execute(sa.insert(Tombstone), tombstones)
        session.commit()
    return deleted


def purge_tombstones(ctx: PurgeContext, now: datetime, report: PurgeReport) -> int:
    """Remove the tombstones older than TOMBSTONE_KEEP, PURGE_CHUNK per transaction."""
    old = Tombstone.purged_at <= now - TOMBSTONE_KEEP
    purged = 0
    while True:
        with ctx.sessions() as session:
            ids = list(session.scalars(sa.select(Tombstone.id).where(old).limit(ctx.retention.purge_chunk)))
            if not ids:
                return purged
            session.execute(sa.delete(Tombstone).where(Tombstone.id.in_(ids)))
            session.commit()
        report.transactions += 1
        purged += len(ids)


def purge_context(app: Flask) -> PurgeContext:
    found = services(app)
    return PurgeContext(found.sessions, found.files, found.settings.retention)


# Acked on receipt, like the reconciler: a lost pass costs nothing, beat sends the next one.
@shared_task(name=PURGE_TASK, ignore_result=True, acks_late=False)
def purge() -> None:
    """One purge of what expired, unless another one is running."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    client = services(app).redis
    hold_s = max(60, int(services(app).settings.retention.purge_interval_s))
    if not client.set(LOCK_KEY, "1", nx=True, ex=hold_s):
        log.info("another retention purge is running; skipping this one")
        return
    try:
        report = purge_expired(purge_context(app))
    finally:
        client.delete(LOCK_KEY)
    if report:
        log.info("retention purged: %s", asdict(report))
