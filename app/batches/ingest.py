"""Ingest a batch: validate its input file (streaming), then create and enqueue its jobs in chunks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm

from app.batches import store as batch_store
from app.batches.lines import BatchRequest, LineContext, LineError, read_requests
from app.batches.models import Batch, BatchStatus
from app.batches.storage import FileStorage
from app.jobs import store as job_store
from app.jobs.defaults import SamplingDefaults
from app.models import Job, utcnow
from app.queue import QueuedJob, job_queue
from app.routing.auto import ProfileRouter
from engine.prompt import today_utc

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 100  # a batch's `errors` keeps the first ones; the file is rejected either way


@dataclass
class IngestContext:
    """What ingest needs from the app or worker process."""

    sessions: orm.sessionmaker[orm.Session]
    files: FileStorage
    lines: LineContext
    insert_chunk: int
    enqueue_jobs: Callable[[Sequence[QueuedJob]], None]  # JobQueue.enqueue_many
    sampling_defaults: Callable[[str], SamplingDefaults]  # Services.sampling_defaults
    lines_per_message: Callable[[str], int]  # a profile's lines in one run_job message (app/queue.py)


def ingest_batch(ctx: IngestContext, batch_id: str) -> str | None:
    """Validate a `validating` batch and create its jobs; resumes a half-created one. Returns its status."""
    with ctx.sessions() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            return None
        status, input_file_id, owner = batch.status, batch.input_file_id, batch.owner
    if status == BatchStatus.VALIDATING:
        errors, total = validate_input(ctx, input_file_id)
        with ctx.sessions() as session:
            if errors:
                failed = batch_store.transition(
                    session, batch_id, (BatchStatus.VALIDATING,), status=BatchStatus.FAILED,
                    failed_at=utcnow(), errors=[error.as_json() for error in errors],
                )  # fmt: skip
                return BatchStatus.FAILED if failed else _status(session, batch_id)
            batch_store.transition(
                session, batch_id, (BatchStatus.VALIDATING,), status=BatchStatus.IN_PROGRESS,
                in_progress_at=utcnow(), request_total=total,
            )  # fmt: skip
    with ctx.sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        # a batch cancelled while validating never gets jobs; one cancelled after that gets them all
        validated = batch.in_progress_at is not None
        if not validated or batch.status not in (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING):
            return batch.status
        total = batch.request_total
    try:
        create_jobs(ctx, batch_id, input_file_id, total, owner)
    except IngestError as exc:
        return fail_ingest(ctx, batch_id, exc)
    with ctx.sessions() as session:
        return _status(session, batch_id)


class IngestError(Exception):
    """Lines that passed validation but cannot be stored: retrying cannot help, the batch fails."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def fail_ingest(ctx: IngestContext, batch_id: str, exc: IngestError) -> str:
    """The batch fails naming the lines and the error; the jobs it already queued are cancelled."""
    error = LineError(exc.line, "ingest_failed", str(exc)).as_json()
    now = utcnow()
    with ctx.sessions() as session:
        job_store.cancel_queued_jobs_of_batch(session, batch_id, now)
        batch_store.transition(
            session, batch_id, (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING),
            status=BatchStatus.FAILED, failed_at=now, errors=[error],
        )  # fmt: skip
        log.error("batch %s failed in ingest: %s", batch_id, exc)
        return _status(session, batch_id)


def _status(session: orm.Session, batch_id: str) -> str:
    return session.scalar(sa.select(Batch.status).where(Batch.id == batch_id)) or ""


def _open_input(ctx: IngestContext, file_id: str) -> IO[bytes]:
    return ctx.files.open(file_id)  # streamed: a 200 MB file is never read whole


def validate_input(ctx: IngestContext, input_file_id: str) -> tuple[list[LineError], int]:
    """Read the whole file once, keeping only errors and a count; returns (first errors, request count)."""
    errors: list[LineError] = []
    total = 0
    try:
        file = _open_input(ctx, input_file_id)
    except FileNotFoundError:
        return [LineError(None, "file_not_found", f"The input file {input_file_id} no longer exists.")], 0
    with file:
        for result in read_requests(file, ctx.lines):
            if isinstance(result, LineError):
                errors.append(result)
                if len(errors) >= MAX_REPORTED_ERRORS:
                    break
            else:
                total += 1
    return errors, total


def create_jobs(ctx: IngestContext, batch_id: str, input_file_id: str, total: int, owner: str | None) -> None:
    """Insert the jobs of the lines that have none yet (owned by the batch's owner), a chunk per
    transaction, enqueueing each chunk.

    Safe to run again after a crash: queued jobs are enqueued again (a second delivery is a no-op)
    and only lines after the last inserted one are inserted.
    """
    with ctx.sessions() as session:
        done_lines = batch_store.inserted_lines(session, batch_id)
        if done_lines:
            ctx.enqueue_jobs(batch_store.queued_jobs(session, batch_id))
    if done_lines == total:  # valid files have no blank lines, so the last line number is the count
        return
    with _open_input(ctx, input_file_id) as file:
        pending = (r for r in _valid_requests(read_requests(file, ctx.lines)) if r.line > done_lines)
        for chunk in _chunks(pending, ctx.insert_chunk):
            with ctx.sessions() as session:
                cancelled = _status(session, batch_id) == BatchStatus.CANCELLING
                rows = [
                    _job_row(batch_id, request, cancelled, ctx.lines.router, ctx.sampling_defaults, owner)
                    for request in chunk
                ]
                share_task_ids(rows, ctx.lines_per_message)
                try:
                    session.execute(sa.insert(Job), rows)
                    session.commit()
                except (sa_exc.DataError, sa_exc.IntegrityError, sa_exc.StatementError) as exc:
                    first, last = chunk[0].line, chunk[-1].line
                    cause = getattr(exc, "orig", None) or exc
                    raise IngestError(f"lines {first} to {last} could not be stored: {cause}", first) from exc
            if not cancelled:  # a cancelled batch's remaining lines are stored as cancelled, never run
                queue = partial(job_queue, batch_id=batch_id, request={}, owner=owner)  # the batch's lane
                ctx.enqueue_jobs(
                    [QueuedJob(r["id"], r["profile"], r["task_id"], queue(r["profile"])) for r in rows]
                )


def share_task_ids(rows: list[dict[str, Any]], lines_per_message: Callable[[str], int]) -> None:
    """Lines of one profile travel `lines_per_message(profile)` to a run_job message: the rows of one
    message share its task id (the reconciler finds them in the broker by it; send_run_jobs groups by it)."""
    open_message: dict[str, tuple[str, int]] = {}  # profile -> (task id, lines given it so far)
    for row in rows:
        profile = row["profile"]
        task_id, lines = open_message.get(profile, (row["task_id"], 0))
        if lines >= lines_per_message(profile):
            task_id, lines = row["task_id"], 0
        row["task_id"] = task_id
        open_message[profile] = (task_id, lines + 1)


def _valid_requests(results: Iterator[BatchRequest | LineError]) -> Iterator[BatchRequest]:
    for result in results:
        if isinstance(result, LineError):  # the file was validated; it can only change by tampering
            raise RuntimeError(
                f"line {result.line} of the validated input file is now invalid: {result.message}"
            )
        yield result


def _chunks(requests: Iterator[BatchRequest], size: int) -> Iterator[list[BatchRequest]]:
    chunk: list[BatchRequest] = []
    for request in requests:
        chunk.append(request)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _job_row(
    batch_id: str,
    request: BatchRequest,
    cancelled: bool,
    router: ProfileRouter | None,
    sampling_defaults: Callable[[str], SamplingDefaults],
    owner: str | None,
) -> dict[str, Any]:
    """The jobs row of one batch line: a submitted job's row (routed, defaults filled) plus the batch keys."""
    request.job.route(router)
    request.job.fill_defaults(sampling_defaults(request.job.queue_profile), today_utc())
    row = job_store.job_row(
        request.job, batch_id=batch_id, custom_id=request.custom_id, batch_line=request.line, owner=owner
    )
    if cancelled:
        row.update(job_store.cancelled_columns(row["created_at"]))
    return row
