"""Server-Sent Events of one job: every event from the first, then live ones, resumable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request

from app.db import db_session
from app.errors import ApiError
from app.http import sse, sse_response
from app.jobs.events import JobEvent, JobEventLog, valid_event_id
from app.jobs.render import job_json
from app.jobs.store import get_job_or_404
from app.keys.caller import SERVER, current_caller
from app.limits import acquire_stream_slot
from app.models import FINISHED_STATUSES
from app.services import services

bp = Blueprint("job_events", __name__, url_prefix="/v1/jobs")

STORED_EVENT_ID = "0-1"  # the id of a `done` event rebuilt from the DB after the stream expired
GRACE_S = 5.0  # how long a finished job's terminal event may lag behind its DB row
STREAM_POLL_S = (
    0.5  # idle API streams (chat, responses) send a comment this often, which detects gone clients
)


def finished_job(job_id: str) -> dict[str, Any] | None:
    """The stored job JSON when the job has finished, else None (for a reader the job was shown to)."""
    with db_session() as session:
        job = get_job_or_404(session, job_id, SERVER)
        return job_json(job) if job.status in FINISHED_STATUSES else None


def follow_job(log: JobEventLog, job_id: str, after: str, poll_s: float) -> Iterator[JobEvent | None]:
    """Yield the job's events after `after` until a terminal one; None on each idle poll.

    When the stream is gone (expired) or never gets its terminal event, the stored result is
    replayed as one `done` event, so a reader always ends with the job's outcome.
    """
    finished_seen_at: float | None = None
    while True:
        if not log.exists(job_id):
            stored = finished_job(job_id)
            if stored is not None:
                yield JobEvent(STORED_EVENT_ID, "done", stored)
                return
        events = log.read_after(job_id, after, block_ms=max(1, int(poll_s * 1000)))
        for event in events:
            after = event.id
            yield event
            if event.is_terminal:
                return
        if events:
            continue
        yield None
        stored = finished_job(job_id)
        if stored is not None:
            finished_seen_at = finished_seen_at or time.monotonic()
            if time.monotonic() - finished_seen_at > GRACE_S:
                yield JobEvent(STORED_EVENT_ID, "done", stored)
                return


def last_event_id() -> str:
    """The resume point: Last-Event-ID header (or ?last_event_id=), "0" for the beginning."""
    value = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or "0"
    if not valid_event_id(value):
        raise ApiError(
            400, f"Last-Event-ID {value!r} is not an event id of this stream.", param="Last-Event-ID"
        )
    return value


@bp.get("/<job_id>/events")
def job_events(job_id: str) -> Response:
    """Stream the job's events (queued, started, delta..., done|error|cancelled) as SSE."""
    after = last_event_id()
    with db_session() as session:
        get_job_or_404(session, job_id, current_caller())
    log: JobEventLog = services().events
    heartbeat_s = services().settings.sse_heartbeat_s
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def stream() -> Iterator[str]:
        with app.app_context():
            yield ": stream open\n\n"  # sends the headers at once, so clients see the stream is live
            for event in follow_job(log, job_id, after, heartbeat_s):
                yield ": keep-alive\n\n" if event is None else sse(event.id, event.type, event.data)

    slot = acquire_stream_slot()  # 429 when this client already has too many streams open
    return sse_response(slot.wrap(stream()))
