"""OpenAI-compatible chat completions and model list, run through the same job queue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from app.chat.render import chat_completion, completion_id, finish_reason_of, tool_call_deltas, usage_of
from app.chat.schemas import ChatCompletionCreate, job_body, named_profile, reasoning_fields
from app.db import db_session
from app.errors import ApiError
from app.http import json_body, sse, sse_response
from app.jobs.cancel import cancel_quietly
from app.jobs.events import JobEventLog
from app.jobs.render import job_json
from app.jobs.stream import STREAM_POLL_S, follow_job
from app.jobs.submit import idempotency_key, submit_job, validated_job
from app.jobs.waiting import submit_once, wait_while_someone_waits
from app.keys.caller import current_caller
from app.limits import acquire_stream_slot, counts_as_submit, waiting_slot
from app.ops.served_models import served_model_ids
from app.routing.auto import AUTO_PROFILE
from app.services import services

bp = Blueprint("chat", __name__, url_prefix="/v1")


def submit_chat_job(chat: ChatCompletionCreate) -> tuple[dict[str, Any], str]:
    """Create the job behind a chat request; returns (job JSON, model name to report)."""
    profiles = services().profiles
    served = served_model_ids(services().redis, list(profiles))
    body = validated_job(job_body(chat, named_profile(chat.model, profiles, served)))
    with db_session() as session:
        job, _ = submit_job(session, body, idempotency_key(), current_caller())
        return job_json(job), served.get(job.profile) or profiles[job.profile].model


def raise_if_failed(done: dict[str, Any]) -> None:
    if done["status"] == "failed":
        message = (done.get("error") or {}).get("message") or "generation failed"
        raise ApiError(
            500, f"Job {done['id']} failed: {message}", type="server_error", code="generation_failed"
        )


@bp.post("/chat/completions")
@counts_as_submit
def create_chat_completion() -> Response:
    """Create a chat completion (streamed as chat.completion.chunk events when stream=true)."""
    chat = ChatCompletionCreate.model_validate(json_body())
    if not chat.stream:
        with waiting_slot():  # a waiting request holds a server thread as a stream does: one cap for both
            job = submit_once(lambda: submit_chat_job(chat)[0])  # a retry of this call takes over its job
            done = wait_while_someone_waits(job["id"])
        if done is None:  # the client left, and no retry came for the job
            return Response(status=499)
        raise_if_failed(done)
        return jsonify(chat_completion(done, job["profile"]))
    slot = acquire_stream_slot()  # a 429 comes before any job exists
    try:
        job, model = submit_chat_job(chat)
    except BaseException:
        slot.release()
        raise
    log: JobEventLog = services().events
    include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return sse_response(slot.wrap(stream_chunks(app, log, job, model, include_usage)))


def stream_chunks(
    app: Any, log: JobEventLog, job: dict[str, Any], model: str, include_usage: bool
) -> Iterator[str]:
    """chat.completion.chunk events from the job's event log; a client that leaves cancels the job."""
    chunk_id, created = completion_id(job["id"]), job["created_at"]

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        body = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model}
        return sse(None, None, {**body, "choices": [choice], **extra})

    finished = False
    with app.app_context():
        try:
            yield chunk({"role": "assistant", "content": ""})
            for event in follow_job(log, job["id"], "0", STREAM_POLL_S):
                if event is None:
                    yield ": keep-alive\n\n"
                elif event.type == "delta":
                    delta = {}
                    if event.data.get("content"):
                        delta["content"] = event.data["content"]
                    if event.data.get("reasoning"):
                        delta.update(reasoning_fields(event.data["reasoning"]))
                    if event.data.get("tool_calls"):
                        delta["tool_calls"] = tool_call_deltas(event.data["tool_calls"])
                    if delta:
                        yield chunk(delta)
                elif event.is_terminal:
                    finished = True
                    done = event.data
                    if done.get("status") == "failed":
                        message = (done.get("error") or {}).get("message") or "generation failed"
                        yield sse(None, None, {"error": {"type": "server_error", "message": message}})
                        break
                    yield chunk({}, finish_reason_of(done))
                    if include_usage:
                        body = {"id": chunk_id, "object": "chat.completion.chunk", "created": created}
                        yield sse(
                            None, None, {**body, "model": model, "choices": [], "usage": usage_of(done)}
                        )
                    break
            yield "data: [DONE]\n\n"
        finally:
            if not finished:  # the client went away mid-stream: stop spending the GPU on it
                cancel_quietly(job["id"])


@bp.get("/models")
def list_models() -> Response:
    """List the served models: each profile, and the model id it really runs."""
    profiles = services().profiles
    served = served_model_ids(services().redis, list(profiles))
    data = []
    for name, profile in profiles.items():
        model_id = served.get(name) or profile.model
        data.append(
            {"id": name, "object": "model", "created": 0, "owned_by": "gptoss-batch", "model": model_id}
        )
    router = services().router
    if (
        router is not None and router.candidates
    ):  # picks one of the profiles per request (app/routing/auto.py)
        auto = {"id": AUTO_PROFILE, "object": "model", "created": 0, "owned_by": "gptoss-batch"}
        data.append({**auto, "model": AUTO_PROFILE, "profiles": list(router.candidates)})
    seen = {d["id"] for d in data}
    for name, profile in profiles.items():
        model_id = served.get(name) or profile.model
        if model_id not in seen:
            seen.add(model_id)
            data.append(
                {"id": model_id, "object": "model", "created": 0, "owned_by": "gptoss-batch", "profile": name}
            )
    return jsonify(object="list", data=data)
