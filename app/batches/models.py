"""Typed SQLAlchemy models of the OpenAI Batch API: uploaded/produced files and batches."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.models import Base, UTCDateTime, time_ordered_id, utcnow


class BatchStatus(enum.StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


FINAL_BATCH_STATUSES = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.CANCELLED, BatchStatus.EXPIRED}
)


class FilePurpose(enum.StrEnum):
    BATCH = "batch"  # uploaded batch input
    BATCH_OUTPUT = "batch_output"  # a batch's output or error file


def new_file_id() -> str:
    return time_ordered_id("file-", 6)


def new_batch_id() -> str:
    return time_ordered_id("batch_", 8)


class StoredFile(Base):
    """A stored file (its bytes: app/batches/storage.py); the uploaded name is shown, never used as a path."""

    __tablename__ = "files"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(40), primary_key=True, default=new_file_id)
    filename: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    purpose: orm.Mapped[str] = orm.mapped_column(sa.String(32), index=True)
    size_bytes: orm.Mapped[int] = orm.mapped_column("bytes", sa.BigInteger)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(16), default="processed")
    # the key that uploaded it (a batch's output and error files: the batch's)
    owner: orm.Mapped[str | None] = orm.mapped_column(sa.String(40), index=True)
    created_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime, default=utcnow)
    # OpenAI's expires_after on upload; None: the retention setting of its purpose decides (app/retention.py)
    expires_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)


class FileChunk(Base):
    """A piece of a file's bytes, in order by seq, where GPTOSS_FILE_STORAGE=database
    (app/batches/storage.py); written before the file's row, so it has no foreign key to it."""

    __tablename__ = "file_chunks"

    file_id: orm.Mapped[str] = orm.mapped_column(sa.String(40), primary_key=True)
    seq: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True)
    data: orm.Mapped[bytes] = orm.mapped_column(sa.LargeBinary)


class Batch(Base):
    """A batch of chat completion requests, one job per input line."""

    __tablename__ = "batches"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(40), primary_key=True, default=new_batch_id)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(16), index=True, default=BatchStatus.VALIDATING)
    endpoint: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    input_file_id: orm.Mapped[str] = orm.mapped_column(sa.String(40))
    completion_window: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    output_file_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(40))
    error_file_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(40))
    errors: orm.Mapped[list[dict[str, Any]] | None] = orm.mapped_column(sa.JSON)  # validation errors
    # `metadata` is taken by SQLAlchemy's declarative base, hence the attribute name
    batch_metadata: orm.Mapped[dict[str, str] | None] = orm.mapped_column("metadata", sa.JSON)
    owner: orm.Mapped[str | None] = orm.mapped_column(sa.String(40), index=True)  # the key that made it

    # request_total is set when validation passes; completed/failed are stored when the batch ends
    # (while it runs they are counted from its jobs, so they are always live)
    request_total: orm.Mapped[int] = orm.mapped_column(default=0, server_default="0")
    request_completed: orm.Mapped[int] = orm.mapped_column(default=0, server_default="0")
    request_failed: orm.Mapped[int] = orm.mapped_column(default=0, server_default="0")

    created_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime, default=utcnow)
    expires_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime)
    in_progress_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
    finalizing_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
    completed_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
    failed_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
    expired_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
    cancelling_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
    cancelled_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
