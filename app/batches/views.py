"""The batches resource (OpenAI Batch API): create a batch from an uploaded file, read, list, cancel."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.batches import files as file_store
from app.batches import store as batch_store
from app.batches.files import file_expires_at
from app.batches.lifecycle import cancel_batch as cancel_batch_now
from app.batches.models import Batch, FilePurpose
from app.batches.store import RequestCounts
from app.db import db_session
from app.errors import ApiError
from app.http import json_body, list_page
from app.keys.caller import Caller, current_caller
from app.limits import counts_as_submit
from app.models import utcnow
from app.queue import send_ingest, send_watch
from app.retention import expired_error
from app.services import services

log = logging.getLogger(__name__)

bp = Blueprint("batches", __name__, url_prefix="/v1/batches")

MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class BatchCreate(BaseModel):
    """The body of POST /v1/batches."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input_file_id: str = Field(min_length=1)
    endpoint: Literal["/v1/chat/completions", "/v1/responses"]  # lines may use either
    completion_window: Literal["24h"]
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)


class BatchListQuery(BaseModel):
    """Query string of GET /v1/batches."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=20, ge=1, le=100)
    after: str | None = None


def _unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def batch_json(batch: Batch, counts: RequestCounts) -> dict[str, Any]:
    """The OpenAI batch object."""
    errors = {"object": "list", "data": batch.errors} if batch.errors else None
    times = (
        "created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
        "expired_at", "cancelling_at", "cancelled_at",
    )  # fmt: skip
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        **{name: _unix(getattr(batch, name)) for name in times},
        "request_counts": counts.as_json(),
        "metadata": batch.batch_metadata,
    }


def _shown(batch_id: str) -> Response:
    with db_session() as session:
        batch = batch_store.get_batch_or_404(session, batch_id, current_caller())
        counts = batch_store.live_request_counts(session, [batch])[batch.id]
        return jsonify(batch_json(batch, counts))


@bp.post("")
@counts_as_submit
def create_batch() -> Response:
    """Create a batch from an uploaded `batch` file; validation and job creation run in the background."""
    body = BatchCreate.model_validate(json_body())
    caller = current_caller()
    with db_session() as session:
        input_file = file_store.find_file(session, body.input_file_id, caller)  # another key's: none
        if input_file is None or input_file.purpose != FilePurpose.BATCH:
            problem = "does not exist" if input_file is None else "was not uploaded with purpose 'batch'"
            raise ApiError(400, f"The file {body.input_file_id} {problem}.", param="input_file_id")
        expired_at = file_expires_at(input_file, services().settings.retention)
        if expired_at is not None and expired_at <= utcnow():
            expired = expired_error("File", input_file.id, expired_at, "input_file_id")
            raise ApiError(400, expired.message, param=expired.param, code=expired.code)
        batch = batch_store.create_batch(
            session, input_file_id=body.input_file_id, endpoint=body.endpoint,
            completion_window=body.completion_window, metadata=body.metadata, owner=caller.key_id,
        )  # fmt: skip
        try:
            send_ingest(services().celery, batch.id)
        except Exception as exc:
            log.warning("queueing the ingest of %s failed, removing the batch: %s", batch.id, exc)
            batch_store.delete_batch(session, batch.id)
            raise ApiError(
                503, "The job queue is unavailable; the batch was not created. Retry later.",
                type="server_error", code="queue_unavailable",
            ) from exc  # fmt: skip
        return jsonify(batch_json(batch, RequestCounts(0, 0, 0)))


@bp.get("/<batch_id>")
def get_batch(batch_id: str) -> Response:
    """Show one batch with live request counts."""
    return _shown(batch_id)


@bp.get("")
def list_batches() -> Response:
    """List batches newest first; `after` is the last id of the previous page."""
    query = BatchListQuery.model_validate(request.args.to_dict())
    with db_session() as session:
        batches, has_more = batch_store.list_batches(
            session, current_caller(), after=query.after, limit=query.limit
        )
        counts = batch_store.live_request_counts(session, batches)
        data = [batch_json(batch, counts[batch.id]) for batch in batches]
    return list_page(data, has_more)


@bp.post("/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> Response:
    """Cancel a batch: queued requests are dropped, running ones stopped, finished results kept."""
    cancel_and_watch(batch_id, current_caller())
    return _shown(batch_id)


def cancel_and_watch(batch_id: str, caller: Caller) -> None:
    """The batch's one cancel (this API's and the console's): 404 another key's, 409 one that ended."""
    with db_session() as session:
        cancel_batch_now(session, batch_id, caller, services().redis, services().settings.cancel_signal_ttl_s)
    send_watch(services().celery, batch_id)  # finalize as soon as nothing runs, not at the next timed check
