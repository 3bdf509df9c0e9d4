"""The files resource (OpenAI Files API): upload batch input, read and delete files, list them."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Literal

from flask import Blueprint, Response, jsonify, request, send_file
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from app.batches import files as file_store
from app.batches import store as batch_store
from app.batches.models import FilePurpose
from app.batches.storage import CHUNK_BYTES
from app.db import db_session
from app.errors import ApiError
from app.http import list_page
from app.keys.caller import current_caller
from app.services import services
from app.settings import BatchSettings, RetentionSettings

bp = Blueprint("files", __name__, url_prefix="/v1/files")

MULTIPART_OVERHEAD = 64 * 1024  # room for the multipart headers and the purpose field around the file


class FileListQuery(BaseModel):
    """Query string of GET /v1/files."""

    model_config = ConfigDict(extra="forbid")

    purpose: str | None = None
    limit: int = Field(default=100, ge=1, le=10_000)
    after: str | None = None
    order: Literal["asc", "desc"] = "desc"


class ExpiresAfter(BaseModel):
    """OpenAI's `expires_after` of an upload, sent as the form fields expires_after[anchor] and [seconds]."""

    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=30 * 24 * 3600)  # OpenAI's range: an hour to 30 days


def _settings() -> BatchSettings:
    return services().settings.batches


def _retention() -> RetentionSettings:
    return services().settings.retention


def expires_after_s(form: Mapping[str, str]) -> int | None:
    """The seconds of the form's expires_after, None without one; 400 naming the bad field."""
    fields = {key: form.get(f"expires_after[{key}]") for key in ExpiresAfter.model_fields}
    if all(value is None for value in fields.values()):
        return None
    try:
        return ExpiresAfter.model_validate(fields).seconds
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        param = f"expires_after[{problem['loc'][0]}]"
        message = f"{param}: {problem['msg']}."
        raise ApiError(400, message, param=param, code="invalid_expires_after") from exc


@bp.post("")
def upload_file() -> Response:
    """Store an uploaded batch input file (multipart: `file`, `purpose=batch`, optional
    `expires_after[anchor]=created_at` and `expires_after[seconds]`); 413 above the limit."""
    settings = _settings()
    # the body is parsed as a stream: werkzeug spools the file part to a temp file, we copy it in chunks
    request.max_content_length = settings.max_upload_bytes + MULTIPART_OVERHEAD
    purpose = request.form.get("purpose")
    if purpose != FilePurpose.BATCH:
        raise ApiError(
            400, f"purpose must be 'batch', not {purpose!r}.", param="purpose", code="invalid_purpose"
        )
    expires_after = expires_after_s(request.form)
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(400, "Send the file as the multipart/form-data field 'file'.", param="file")
    try:
        filename = file_store.display_name(upload.filename)
    except ValueError as exc:
        raise ApiError(400, f"{exc}; rename the file.", param="file", code="invalid_file_name") from exc
    storage = services().files
    chunks = iter(partial(upload.stream.read, CHUNK_BYTES), b"")
    with db_session() as session:
        row = file_store.store_file(
            session, storage, filename, FilePurpose.BATCH, current_caller().key_id, chunks, expires_after
        )
        if row.size_bytes > settings.max_upload_bytes:  # a chunked body has no length to check up front
            file_store.delete_file(session, storage, row.id)
            raise RequestEntityTooLarge(f"Files may be at most {settings.max_upload_bytes} bytes.")
        return jsonify(file_store.file_json(row, _retention()))


@bp.get("/<file_id>")
def get_file(file_id: str) -> Response:
    """Show one file object."""
    with db_session() as session:
        row = file_store.get_file_or_404(session, file_id, current_caller(), _retention())
        return jsonify(file_store.file_json(row, _retention()))


@bp.get("/<file_id>/content")
def get_file_content(file_id: str) -> Response:
    """Stream the file's bytes."""
    with db_session() as session:
        row = file_store.get_file_or_404(session, file_id, current_caller(), _retention())
    try:
        content = services().files.open(row.id)
    except FileNotFoundError:
        raise ApiError(
            404, f"The content of {file_id} is gone.", param="file_id", code="file_not_found"
        ) from None
    response = send_file(
        content, mimetype="application/octet-stream", as_attachment=True, download_name=row.filename
    )
    response.content_length = row.size_bytes
    return response


@bp.delete("/<file_id>")
def delete_file(file_id: str) -> Response:
    """Delete a file and its bytes; 409 while a batch still reads it."""
    with db_session() as session:
        file_store.get_file_or_404(session, file_id, current_caller(), _retention())
        batch_id = batch_store.batch_reading_file(session, file_id)
        if batch_id is not None:
            message = f"File {file_id} is the input of batch {batch_id}, which is still running."
            raise ApiError(409, message, param="file_id", code="file_in_use")
        file_store.delete_file(session, services().files, file_id)
    return jsonify(id=file_id, object="file", deleted=True)


@bp.get("")
def list_files() -> Response:
    """List files, newest first by default; `after` is the last id of the previous page."""
    query = FileListQuery.model_validate(request.args.to_dict())
    with db_session() as session:
        rows, has_more = file_store.list_files(
            session,
            current_caller(),
            purpose=query.purpose,
            after=query.after,
            limit=query.limit,
            newest_first=query.order == "desc",
            retention=_retention(),
        )
        data = [file_store.file_json(row, _retention()) for row in rows]
    return list_page(data, has_more)
