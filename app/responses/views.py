"""The OpenAI Responses API, run through the same job queue: a stored response is a job row."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from app.chat.schemas import named_profile
from app.db import db_session
from app.errors import ApiError
from app.http import json_body, sse, sse_response
from app.jobs.cancel import cancel, cancel_quietly
from app.jobs.render import job_json
from app.jobs.store import find_job, job_expires_at
from app.jobs.stream import STREAM_POLL_S, finished_job, follow_job
from app.jobs.submit import idempotency_key, submit_job, validated_job
from app.jobs.waiting import submit_once, wait_while_someone_waits
from app.keys.caller import current_caller
from app.limits import StreamSlot, acquire_stream_slot, counts_as_submit, waiting_slot
from app.models import FINISHED_STATUSES, Job
from app.ops.served_models import served_model_ids
from app.responses.conversation import job_body, job_id_of
from app.responses.events import response_events
from app.responses.render import response_json
from app.responses.schemas import ResponseCreate
from app.retention import expired_error, expired_since
from app.services import services

bp = Blueprint("responses", __name__, url_prefix="/v1/responses")


def stored_response(session: Any, response_id: str, param: str = "id") -> Job:
    """The job behind a stored response of the caller's; 404 for anything else (a job of another API,
    store=false, another key's response)."""
    job_id = job_id_of(response_id)
    job = find_job(session, job_id, current_caller()) if job_id is not None else None
    retention = services().settings.retention
    if job_id is not None and (
        expired := expired_since(
            session, job_id, job, partial(job_expires_at, retention=retention), current_caller()
        )
    ):
        raise expired_error("Response", response_id, expired, param)
    options = (job.request.get("response") if job is not None else None) or {}
    if job is None or not options.get("store", True) or not options:
        raise ApiError(404, f"No response with id '{response_id}'.", param=param, code="response_not_found")
    return job


def previous_response(session: Any, response_id: str) -> Job:
    """The finished response a new one continues; 400 (as OpenAI answers) when there is none to continue,
    another key's included: it is answered exactly as an id that never existed."""
    try:
        job = stored_response(session, response_id, param="previous_response_id")
    except ApiError as exc:
        message = (
            exc.message if exc.code == "response_expired" else f"Previous response '{response_id}' not found."
        )
        raise ApiError(400, message, param=exc.param, code=exc.code) from exc
    if job.status not in FINISHED_STATUSES:
        raise ApiError(
            400,
            f"Response '{response_id}' is still {job.status}: continue it once it has finished.",
            param="previous_response_id",
            code="previous_response_not_finished",
        )
    return job


def submit_response(create: ResponseCreate) -> dict[str, Any]:
    """Create the job behind a Responses request; returns its JSON."""
    profiles = services().profiles
    served = served_model_ids(services().redis, list(profiles))
    profile = named_profile(create.model, profiles, served)
    with db_session() as session:
        previous = (
            previous_response(session, create.previous_response_id) if create.previous_response_id else None
        )
        body = validated_job(job_body(create, profile, previous))
        job, _ = submit_job(session, body, idempotency_key(), current_caller())
        return job_json(job)


@bp.post("")
@counts_as_submit
def create_response() -> Response:
    """Create a response: wait for it, stream it (stream=true), or return at once (background=true)."""
    create = ResponseCreate.model_validate(json_body())
    if create.background and not create.stream:
        return jsonify(response_json(submit_response(create)))  # fetched later: it runs for nobody's wait
    if not create.stream:
        with waiting_slot():  # a waiting request holds a server thread as a stream does: one cap for both
            job = submit_once(lambda: submit_response(create))  # a retry of this call takes over its job
            done = wait_while_someone_waits(job["id"])
        return jsonify(response_json(done)) if done is not None else Response(status=499)
    slot = acquire_stream_slot()  # a 429 comes before any job exists
    try:
        job = submit_response(create)
    except BaseException:
        slot.release()
        raise
    return stream_response(slot, job, cancel_on_leave=not create.background)


def stream_response(
    slot: StreamSlot, job: dict[str, Any], cancel_on_leave: bool, after: int = -1
) -> Response:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    log = services().events

    def stream() -> Iterator[str]:
        finished = False
        with app.app_context():
            try:
                for event in response_events(
                    job, follow_job(log, job["id"], "0", STREAM_POLL_S), finished_job
                ):
                    if event is None:
                        yield ": keep-alive\n\n"
                    elif event["sequence_number"] > after:
                        yield sse(None, event["type"], event)
                finished = True
            finally:
                if not finished and cancel_on_leave:  # the client left: stop spending the GPU on it
                    cancel_quietly(job["id"])

    return sse_response(slot.wrap(stream()))


@bp.get("/<response_id>")
def get_response(response_id: str) -> Response:
    """Show a stored response; with stream=true, its events (again), after `starting_after`."""
    with db_session() as session:
        job = job_json(stored_response(session, response_id))
    if request.args.get("stream", "false").lower() in ("true", "1"):
        after = request.args.get("starting_after", "-1")
        if not after.lstrip("-").isdigit():
            raise ApiError(400, f"starting_after {after!r} is not a sequence number.", param="starting_after")
        return stream_response(acquire_stream_slot(), job, cancel_on_leave=False, after=int(after))
    return jsonify(response_json(job))


@bp.post("/<response_id>/cancel")
def cancel_response(response_id: str) -> Response:
    """Cancel a queued or running response; it keeps what it generated."""
    with db_session() as session:
        job = stored_response(session, response_id)
        return jsonify(response_json(job_json(cancel(session, job.id, current_caller()))))
