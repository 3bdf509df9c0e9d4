"""A finished batch's output and error files: one JSON line per request, in input order, streamed
into the file storage (app/batches/storage.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.batches.models import FilePurpose, StoredFile, new_file_id
from app.batches.storage import FileStorage
from app.chat.render import chat_completion
from app.jobs.render import job_json
from app.models import Job, JobStatus
from app.responses.render import response_json

READ_CHUNK = 1000  # job rows fetched per round trip while writing
UNFINISHED_MESSAGES = {  # the error of a request that was stopped, by the code of why
    "batch_cancelled": "This request was not completed: the batch was cancelled.",
    "batch_expired": "This request could not be executed before the completion window expired.",
    "request_cancelled": "This request was cancelled on its own (POST /v1/jobs/{id}/cancel).",
}


@dataclass(frozen=True)
class ResultFiles:
    output: StoredFile | None  # None when no request succeeded
    errors: StoredFile | None  # None when every request succeeded
    completed: int
    failed: int


def response_body(job: Job) -> dict[str, Any]:
    """What the line's endpoint answers for a succeeded job: a response object for a /v1/responses line,
    else a chat.completion."""
    done = job_json(job)
    return response_json(done) if job.request.get("response") else chat_completion(done, job.profile)


def result_line(job: Job, cancelled_code: str) -> tuple[bool, dict[str, Any]]:
    """(succeeded, its line) for a job of an ended batch; cancelled_code says why unfinished ones stopped."""
    line: dict[str, Any] = {"id": "batch_req_" + job.id.removeprefix("job_"), "custom_id": job.custom_id}
    if job.status == JobStatus.SUCCEEDED:
        response = {"status_code": 200, "request_id": job.id, "body": response_body(job)}
        return True, {**line, "response": response, "error": None}
    if job.status == JobStatus.FAILED:
        error = {
            "message": job.error or "generation failed",
            "type": "server_error",
            "param": None,
            "code": None,
        }
        response = {"status_code": 500, "request_id": job.id, "body": {"error": error}}
        return False, {**line, "response": response, "error": None}
    error = {"code": cancelled_code, "message": UNFINISHED_MESSAGES[cancelled_code]}
    return False, {**line, "response": None, "error": error}


def batch_jobs(session: orm.Session, batch_id: str, succeeded: bool) -> Iterator[Job]:
    """The batch's succeeded (or, with False, other) jobs in input order, fetched a chunk at a time."""
    status = Job.status == JobStatus.SUCCEEDED if succeeded else Job.status != JobStatus.SUCCEEDED
    query = sa.select(Job).where(Job.batch_id == batch_id, status).order_by(Job.batch_line)
    yield from session.scalars(query.execution_options(yield_per=READ_CHUNK))


def write_result_files(
    session: orm.Session, storage: FileStorage, batch_id: str, owner: str | None, cancelled_code: str
) -> ResultFiles:
    """Write the output file, then the error file (a pass over the batch's jobs each: they have all
    ended, so none moves between them) and add (not commit) their rows, owned by the batch's owner;
    the caller commits or discards."""
    counts = {"output": 0, "error": 0}

    def lines(kind: str) -> Iterator[bytes]:
        for job in batch_jobs(session, batch_id, succeeded=kind == "output"):
            _, line = result_line(job, cancelled_code)
            counts[kind] += 1
            yield (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    rows: dict[str, StoredFile] = {}
    for kind in counts:
        file_id = new_file_id()
        size = storage.write(file_id, lines(kind))
        if not counts[kind]:  # OpenAI leaves output_file_id / error_file_id null when there is nothing
            storage.delete([file_id])
            continue
        rows[kind] = StoredFile(
            id=file_id, filename=f"{batch_id}_{kind}.jsonl", purpose=FilePurpose.BATCH_OUTPUT,
            size_bytes=size, status="processed", owner=owner,
        )  # fmt: skip
    # added once both are written: a pending row would be flushed by the second pass's query, and on
    # SQLite that write would hold the lock the database storage's writer needs
    session.add_all(rows.values())
    return ResultFiles(rows.get("output"), rows.get("error"), counts["output"], counts["error"])


def discard_result_files(storage: FileStorage, result: ResultFiles) -> None:
    """Remove the files of a finalization that lost the race to another one."""
    storage.delete([row.id for row in (result.output, result.errors) if row is not None])
