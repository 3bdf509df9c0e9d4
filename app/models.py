"""Typed SQLAlchemy models: a Job row holds the request, its status history and its result."""

from __future__ import annotations

import enum
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite drops the zone; we put it back)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def time_ordered_id(prefix: str, random_bytes: int = 8) -> str:
    """`prefix` + 12 hex digits of milliseconds + random hex digits: unique, and sorted by creation time.

    Every resource id (jobs, batches, files, gate runs) is one: a primary key range is a time range."""
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(random_bytes)}"


def new_job_id() -> str:
    return time_ordered_id("job_")


GATE_METADATA_KEY = "gptoss_gate"  # job metadata key that marks release-gate traffic (value: the run id)


def is_gate_request(request: dict[str, Any]) -> bool:
    """Whether a validated job request carries the release-gate tag in its metadata."""
    return GATE_METADATA_KEY in (request.get("metadata") or {})


class Base(orm.DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Job(Base):
    __tablename__ = "jobs"
    # A batch's jobs by status: "is any line still queued or running?" runs after every line and must
    # not walk the lines already finished (a probe on batch_id alone did: quadratic in the batch's size).
    __table_args__ = (sa.Index("ix_jobs_batch_id_status", "batch_id", "status"),)

    id: orm.Mapped[str] = orm.mapped_column(sa.String(40), primary_key=True, default=new_job_id)
    profile: orm.Mapped[str] = orm.mapped_column(sa.String(64), index=True)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(16), index=True, default=JobStatus.QUEUED)
    request: orm.Mapped[dict[str, Any]] = orm.mapped_column(sa.JSON)
    idempotency_key: orm.Mapped[str | None] = orm.mapped_column(sa.String(255), unique=True)
    request_hash: orm.Mapped[str] = orm.mapped_column(sa.String(64))  # sha256 of the canonical request
    task_id: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    worker_hostname: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    attempts: orm.Mapped[int] = orm.mapped_column(default=0, server_default="0")
    cancel_requested: orm.Mapped[bool] = orm.mapped_column(default=False, server_default=sa.false())
    # release-gate traffic (metadata key "gptoss_gate"), left out of /v1/stats unless asked for
    is_gate: orm.Mapped[bool] = orm.mapped_column(default=False, server_default=sa.false(), index=True)
    # the API key that made it (app/keys/caller.py); a batch line's is its batch's; None: nobody in particular
    owner: orm.Mapped[str | None] = orm.mapped_column(sa.String(40), index=True)

    # set on the jobs of a batch (POST /v1/batches): the batch, the line's custom_id and its line number
    batch_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(40))  # indexed with status, below
    custom_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(512))
    batch_line: orm.Mapped[int | None]

    # result
    content: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    reasoning: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    finish_reason: orm.Mapped[str | None] = orm.mapped_column(sa.String(16))
    error: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    # the function calls the answer made: [{"id", "name", "arguments", "error"?}] (engine.types.ToolCall)
    tool_calls: orm.Mapped[list[dict[str, Any]] | None] = orm.mapped_column(sa.JSON)
    prompt_tokens: orm.Mapped[int | None]
    completion_tokens: orm.Mapped[int | None]
    reasoning_tokens: orm.Mapped[int | None]  # of completion_tokens, the reasoning's (None before 0006)
    ttft_s: orm.Mapped[float | None]  # engine: submit to first token
    e2e_s: orm.Mapped[float | None]  # engine: submit to last token

    # profile "auto" (app/routing/auto.py): routed_from is "auto" and the reason the profile was chosen
    routed_from: orm.Mapped[str | None] = orm.mapped_column(sa.String(16))
    route_reason: orm.Mapped[str | None] = orm.mapped_column(sa.String(500))
    # served from the response cache (app/jobs/cached.py): the job whose answer this one copies
    cached_from: orm.Mapped[str | None] = orm.mapped_column(sa.String(40))
    # answer-quality signals of a succeeded job (app/quality.py)
    quality_harmony_ok: orm.Mapped[bool | None]
    quality_empty_answer: orm.Mapped[bool | None]
    quality_truncated: orm.Mapped[bool | None]
    quality_reasoning_share: orm.Mapped[float | None]
    quality_repetition: orm.Mapped[float | None]

    # the five tags of the model that really ran the job
    tag_engine: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    tag_model_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    tag_model_size: orm.Mapped[str | None] = orm.mapped_column(sa.String(32))
    tag_gpu_mode: orm.Mapped[str | None] = orm.mapped_column(sa.String(32))
    tag_profile: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))

    # one time per transition
    created_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime, default=utcnow)
    started_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
    first_token_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
    cancel_requested_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
    finished_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime, index=True)  # retention

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Job:
        """A detached job holding a row of the jobs table (every column), as the ORM's loader fills one:
        straight into its dict, without the 43 instrumented sets of `Job(**row)` (~1 ms, a worker's
        share of each job's CPU)."""
        job: Job = cls.__mapper__.class_manager.new_instance()
        job.__dict__.update(row._mapping)
        return job

    def tags(self) -> dict[str, str] | None:
        """The five tags, or None before a worker has run the job."""
        if self.tag_model_id is None:
            return None
        return {
            "engine": self.tag_engine or "",
            "model_id": self.tag_model_id,
            "model_size": self.tag_model_size or "",
            "gpu_mode": self.tag_gpu_mode or "",
            "profile": self.tag_profile or "",
        }


class Tombstone(Base):
    """What retention leaves of a purged job, file or batch: its id and when it expired, so a client
    asking for it learns it expired (404 saying so) rather than that it never was (app/retention.py)."""

    __tablename__ = "tombstones"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(40), primary_key=True)
    expired_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime)
    purged_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime, index=True)
    owner: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))  # the purged row's (app/keys/caller.py)
