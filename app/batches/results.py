"""A finished batch's output and error files: one JSON line per request, in input order, streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.batches import files as file_store
from app.batches.models import FilePurpose, StoredFile, new_file_id
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


def batch_jobs(session: orm.Session, batch_id: str) -> Iterator[Job]:
    """The batch's jobs in input order, fetched a chunk at a time."""
    query = sa.select(Job).where(Job.batch_id == batch_id).order_by(Job.batch_line)
    yield from session.scalars(query.execution_options(yield_per=READ_CHUNK))


def write_result_files(
    session: orm.Session, files_dir: Path, batch_id: str, owner: str | None, cancelled_code: str
) -> ResultFiles:
    """Write the output and error files and add (not commit) their rows, owned by the batch's owner; the
    caller commits or discards."""
    files_dir.mkdir(parents=True, exist_ok=True)
    ids = {kind: new_file_id() for kind in ("output", "error")}
    paths = {kind: file_store.file_path(files_dir, file_id) for kind, file_id in ids.items()}
    counts = {"output": 0, "error": 0}
    with (
        paths["output"].open("w", encoding="utf-8") as output,
        paths["error"].open("w", encoding="utf-8") as errors,
    ):
        sinks: dict[str, IO[str]] = {"output": output, "error": errors}
        for job in batch_jobs(session, batch_id):
            succeeded, line = result_line(job, cancelled_code)
            kind = "output" if succeeded else "error"
            sinks[kind].write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            counts[kind] += 1
    rows: dict[str, StoredFile] = {}
    for kind, path in paths.items():
        if not counts[kind]:  # OpenAI leaves output_file_id / error_file_id null when there is nothing
            path.unlink()
            continue
        rows[kind] = StoredFile(
            id=ids[kind], filename=f"{batch_id}_{kind}.jsonl", purpose=FilePurpose.BATCH_OUTPUT,
            size_bytes=path.stat().st_size, status="processed", owner=owner,
        )  # fmt: skip
        session.add(rows[kind])
    return ResultFiles(rows.get("output"), rows.get("error"), counts["output"], counts["error"])


def discard_result_files(files_dir: Path, result: ResultFiles) -> None:
    """Remove the files of a finalization that lost the race to another one."""
    for row in (result.output, result.errors):
        if row is not None:
            file_store.file_path(files_dir, row.id).unlink(missing_ok=True)
