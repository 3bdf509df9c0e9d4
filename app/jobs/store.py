"""Job rows and their transitions. Each transition is one guarded UPDATE, so repeats are no-ops."""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.db import id_page
from app.errors import ApiError
from app.jobs.schemas import JobCreate
from app.keys.caller import Caller
from app.models import FINISHED_STATUSES, Job, JobStatus, is_gate_request, new_job_id, utcnow
from app.retention import after as expiry_after
from app.retention import cutoff, get_unexpired_or_404
from app.services import services
from app.settings import RetentionSettings


def request_hash(request: dict[str, Any]) -> str:
    """A stable hash of a validated request, to tell a replayed submit from a different one."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def job_row(body: JobCreate, **columns: Any) -> dict[str, Any]:
    """The columns of a new queued job from its validated request: the one place a job row is made
    (submit, the response cache, batch ingest). `columns` add to or override them."""
    request = body.model_dump(mode="json", exclude_none=True)
    row: dict[str, Any] = {
        "id": new_job_id(),
        "profile": body.queue_profile,
        **body.routing_columns(),
        "status": JobStatus.QUEUED,
        "request": request,
        "request_hash": request_hash(body.replay_request()),
        "task_id": str(uuid.uuid4()),
        "is_gate": is_gate_request(request),
        "created_at": utcnow(),
        "attempts": 0,
        "cancel_requested": False,
        "cancel_requested_at": None,
        "finished_at": None,
        "finish_reason": None,
    }
    return row | columns


def visible_jobs(caller: Caller) -> sa.ColumnElement[bool]:
    """The jobs (and responses) this caller may see and touch: its own, or every job for an admin."""
    return caller.sees(Job.owner)


def find_job(session: orm.Session, job_id: str, caller: Caller) -> Job | None:
    return session.scalar(sa.select(Job).where(Job.id == job_id, visible_jobs(caller)))


def get_job_or_404(session: orm.Session, job_id: str, caller: Caller) -> Job:
    """The job, if this caller may see it and it has not expired (app/retention.py); else 404 (the
    same as for an id that never existed, when it is another key's)."""
    error = ApiError(404, f"No job with id '{job_id}'.", param="id", code="job_not_found")
    retention = services().settings.retention
    return get_unexpired_or_404(
        session, Job, job_id, error, lambda job: job_expires_at(job, retention), "Job", caller
    )


def job_expires_at(job: Job, retention: RetentionSettings) -> datetime | None:
    """When a finished job expires (RETENTION_JOBS_S after it ended); an unfinished one never does."""
    if job.status not in FINISHED_STATUSES:
        return None
    return expiry_after(job.finished_at, retention.jobs_s)


def expired_jobs(retention: RetentionSettings, now: datetime) -> sa.ColumnElement[bool] | None:
    """The finished jobs past their expiry at `now`; None when jobs are kept for ever."""
    before = cutoff(retention.jobs_s, now)
    if before is None:
        return None
    ended = sa.and_(Job.finished_at.is_not(None), Job.finished_at <= before)
    return sa.and_(Job.status.in_(FINISHED_STATUSES), ended)  # never NULL, so that NOT of it is sound


def delete_job(session: orm.Session, job_id: str) -> None:
    """Remove a job that never reached the queue (its enqueue failed)."""
    session.execute(sa.delete(Job).where(Job.id == job_id))
    session.commit()


def owned_idempotency_key(key: str | None, owner: str | None) -> str | None:
    """The Idempotency-Key as stored: a key's own, so two API keys may use the same one and a replay
    never returns another key's job (a digest keeps it in the column's 255 characters)."""
    if key is None or owner is None:
        return key
    return f"{owner}:{hashlib.sha256(key.encode()).hexdigest()}"


def find_job_by_idempotency_key(session: orm.Session, stored_key: str) -> Job | None:
    return session.scalar(sa.select(Job).where(Job.idempotency_key == stored_key))


def list_jobs(
    session: orm.Session,
    caller: Caller,
    *,
    status: str | None,
    profile: str | None,
    after: str | None,
    limit: int,
    owner: str | None = None,
    since: datetime | None = None,
) -> tuple[list[Job], bool]:
    """The caller's jobs newest first, after the cursor `after` (a job id); returns (page, has_more).
    `owner` narrows them to one key's (what an admin may ask), `since` to those submitted since then."""
    by_status = Job.status == status if status else None
    by_profile = Job.profile == profile if profile else None
    by_owner = Job.owner == owner if owner else None
    by_time = Job.created_at >= since if since else None
    expired = expired_jobs(services().settings.retention, utcnow())
    unexpired = sa.not_(expired) if expired is not None else None
    narrowing = by_status, by_profile, by_owner, by_time, unexpired
    return id_page(session, Job, after, limit, *narrowing, visible_jobs(caller))


def _guarded_update(job_id: str, guard: sa.ColumnElement[bool], **values: Any) -> sa.Update:
    """UPDATE the job WHERE guard holds: every transition, so that a repeat is a no-op."""
    return sa.update(Job).where(Job.id == job_id, guard).values(**values)


def _transition(session: orm.Session, job_id: str, guard: sa.ColumnElement[bool], **values: Any) -> bool:
    """UPDATE the job WHERE guard holds; commit; True when this call made the change."""
    result = session.execute(_guarded_update(job_id, guard, **values))
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _transition_returning(
    session: orm.Session, job_id: str, guard: sa.ColumnElement[bool], **values: Any
) -> Job | None:
    """UPDATE the job WHERE guard holds; commit; the updated job, or None when the guard did not hold."""
    job = session.scalar(_guarded_update(job_id, guard, **values).returning(Job))
    session.commit()
    return job


def _commit(session: orm.Session, update: JobUpdate) -> Job | None:
    """Run a prepared job update and commit; the job it returned, if any."""
    job = update.run(session)
    session.commit()
    return job


def cancelled_columns(now: datetime) -> dict[str, Any]:
    """What a job cancelled before it ran holds: one cancel, whether asked for alone or with its batch."""
    return {
        "status": JobStatus.CANCELLED,
        "cancel_requested": True,
        "cancel_requested_at": now,
        "finished_at": now,
        "finish_reason": "cancelled",
    }


def cancel_queued_job(session: orm.Session, job_id: str) -> bool:
    """queued -> cancelled, now; False when the job is no longer queued."""
    return _transition(session, job_id, Job.status == JobStatus.QUEUED, **cancelled_columns(utcnow()))


def cancel_queued_jobs_of_batch(session: orm.Session, batch_id: str, now: datetime) -> int:
    """queued -> cancelled for all the batch's queued jobs (their tasks become no-ops); returns how many.
    Their rows are locked in id order first, the order a worker's group of claims takes them in
    (workers/grouped_writes.py): two transactions that lock rows in one order cannot deadlock."""
    queued = Job.batch_id == batch_id, Job.status == JobStatus.QUEUED
    session.execute(sa.select(Job.id).where(*queued).order_by(Job.id).with_for_update())
    query = sa.update(Job).where(*queued).values(**cancelled_columns(now))
    result = session.execute(query)
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def flag_running_jobs_of_batch(session: orm.Session, batch_id: str, now: datetime) -> list[str]:
    """Mark the batch's running jobs for cancellation; returns their ids, for the worker signal."""
    running = Job.batch_id == batch_id, Job.status == JobStatus.RUNNING
    job_ids = list(session.scalars(sa.select(Job.id).where(*running).order_by(Job.id).with_for_update()))
    if job_ids:
        flagged = sa.update(Job).where(Job.id.in_(job_ids), *running)
        session.execute(
            flagged.values(
                cancel_requested=True, cancel_requested_at=sa.func.coalesce(Job.cancel_requested_at, now)
            )
        )
        session.commit()
    return job_ids


def request_cancel_of_running_job(session: orm.Session, job_id: str) -> bool:
    """Flag a running job for cancellation; False when it is not running."""
    return _transition(
        session,
        job_id,
        Job.status == JobStatus.RUNNING,
        cancel_requested=True,
        cancel_requested_at=sa.func.coalesce(Job.cancel_requested_at, utcnow()),
    )


# The transitions a worker makes for every job (claim, first token, finish) are prepared statements of
# the jobs table run with their parameters: no statement is built per job, and none goes through the
# ORM's bulk UPDATE (together about 2 ms of a worker's CPU per job). A worker commits many jobs' at
# once (workers/grouped_writes.py).
_JOBS: sa.Table = Job.__table__  # type: ignore[assignment]  # a declarative class maps a Table
_BY_ID = _JOBS.c.id == sa.bindparam("b_id")


@dataclass(frozen=True)
class JobUpdate:
    """A guarded UPDATE of one job, prepared once per shape, and its parameters."""

    statement: sa.Update
    params: dict[str, Any]
    returns_job: bool

    def run(self, session: orm.Session) -> Job | None:
        """Execute it (the caller commits); the updated job when it returns one and its guard held."""
        result = session.connection().execute(self.statement, self.params)  # Core: no ORM layer
        row = result.first() if self.returns_job else None
        return Job.from_row(row) if row is not None else None


_CLAIM = (
    sa.update(_JOBS)
    .where(_BY_ID, _JOBS.c.status == JobStatus.QUEUED)
    .values(
        status=JobStatus.RUNNING,
        started_at=sa.bindparam("b_now"),
        attempts=_JOBS.c.attempts + 1,
        worker_hostname=sa.bindparam("b_worker"),
    )
    .returning(*_JOBS.c)
)


def claim_update(job_id: str, worker_hostname: str) -> JobUpdate:
    """queued -> running for this worker, attempts + 1, returning the job (none if another has it or it
    ended)."""
    return JobUpdate(_CLAIM, {"b_id": job_id, "b_now": utcnow(), "b_worker": worker_hostname}, True)


def claim_job(session: orm.Session, job_id: str, worker_hostname: str) -> Job | None:
    """Claim the job (claim_update) and commit; the job, or None if another has it or it ended."""
    return _commit(session, claim_update(job_id, worker_hostname))


_FIRST_TOKEN = (
    sa.update(_JOBS)
    .where(_BY_ID, _JOBS.c.status == JobStatus.RUNNING, _JOBS.c.first_token_at.is_(None))
    .values(first_token_at=sa.bindparam("b_moment"))
)


def first_token_update(job_id: str, moment: datetime) -> JobUpdate:
    """Stamp the first token's time on a running job (pollers see generation has begun)."""
    return JobUpdate(_FIRST_TOKEN, {"b_id": job_id, "b_moment": moment}, False)


@dataclass(frozen=True)
class JobOutcome:
    """What a worker stores when a job ends."""

    status: JobStatus
    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    first_token_at: datetime | None = None
    tags: dict[str, str] | None = None
    quality: dict[str, Any] | None = None  # the quality_* columns of an answer (app/quality.py)
    token_times: tuple[float, ...] = ()  # time.time() of each token, for inter-token metrics (not stored)
    tool_calls: tuple[dict[str, Any], ...] = ()  # the answer's function calls (ToolCall.as_dict)


def finish_update(job_id: str, outcome: JobOutcome) -> JobUpdate:
    """running -> succeeded | failed | cancelled with the result, returning the stored job (none when the
    job was not running)."""
    assert outcome.status in FINISHED_STATUSES
    tags = {f"tag_{name}": value for name, value in (outcome.tags or {}).items()}
    values = {
        "status": outcome.status,
        "content": outcome.content,
        "reasoning": outcome.reasoning,
        "finish_reason": outcome.finish_reason,
        "tool_calls": list(outcome.tool_calls) or None,
        "error": outcome.error,
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "reasoning_tokens": outcome.reasoning_tokens,
        "ttft_s": outcome.ttft_s,
        "e2e_s": outcome.e2e_s,
        "first_token_at": outcome.first_token_at,
        "finished_at": utcnow(),
        **tags,
        **(outcome.quality or {}),
    }
    params = {f"b_{column}": value for column, value in values.items()}
    return JobUpdate(_finish_statement(tuple(values)), params | {"b_id": job_id}, True)


@functools.cache
def _finish_statement(columns: tuple[str, ...]) -> sa.Update:
    """The finish's UPDATE of these columns (one per set of tags and quality signals an outcome has)."""
    values = {column: sa.bindparam(f"b_{column}", type_=_JOBS.c[column].type) for column in columns}
    return (
        sa.update(_JOBS).where(_BY_ID, _JOBS.c.status == JobStatus.RUNNING).values(values).returning(*_JOBS.c)
    )


def finish_job(session: orm.Session, job_id: str, outcome: JobOutcome) -> Job | None:
    """Store the outcome (finish_update) and commit; the stored job, or None when it was not running."""
    return _commit(session, finish_update(job_id, outcome))


def running_jobs_of_worker(session: orm.Session, worker_hostname: str) -> list[Job]:
    """Jobs marked running on this worker name (at worker start: left behind by a dead process)."""
    query = sa.select(Job).where(Job.status == JobStatus.RUNNING, Job.worker_hostname == worker_hostname)
    return list(session.scalars(query))


def requeue_job(session: orm.Session, job_id: str, worker_hostname: str) -> bool:
    """running -> queued for a job whose worker died, so its redelivered task can claim it."""
    return _transition(
        session,
        job_id,
        sa.and_(Job.status == JobStatus.RUNNING, Job.worker_hostname == worker_hostname),
        status=JobStatus.QUEUED,
        started_at=None,
        first_token_at=None,
    )


def take_over_job(
    session: orm.Session, job_id: str, dead_hostname: str, attempts: int, worker_hostname: str
) -> Job | None:
    """running on a dead worker -> running on this one, attempts + 1; None if another moved it first."""
    return _transition_returning(
        session,
        job_id,
        sa.and_(
            Job.status == JobStatus.RUNNING, Job.worker_hostname == dead_hostname, Job.attempts == attempts
        ),
        worker_hostname=worker_hostname,
        attempts=Job.attempts + 1,
        started_at=utcnow(),
        first_token_at=None,
    )
