"""Reading a batch input file line by line: each line becomes a validated job body or a LineError."""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.chat.schemas import ChatCompletionCreate, profile_for_model
from app.chat.schemas import job_body as chat_job_body
from app.errors import ApiError, param_path
from app.jobs.schemas import JobCreate
from app.profiles import Profile
from app.responses.conversation import job_body as response_job_body
from app.responses.schemas import ResponseCreate
from app.routing.auto import ProfileRouter

CHAT_COMPLETIONS = "/v1/chat/completions"
RESPONSES = "/v1/responses"
REQUEST_MODELS: dict[str, type[ChatCompletionCreate] | type[ResponseCreate]] = {
    CHAT_COMPLETIONS: ChatCompletionCreate,
    RESPONSES: ResponseCreate,
}


@dataclass(frozen=True)
class LineError:
    """One problem of the input file, reported in the batch's `errors` (line is 1-based)."""

    line: int | None
    code: str
    message: str
    param: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(frozen=True)
class BatchRequest:
    """A valid line: the job it becomes."""

    line: int
    custom_id: str
    job: JobCreate


@dataclass(frozen=True)
class LineContext:
    """What validating a line needs: the profiles and the model ids their workers announced."""

    profiles: dict[str, Profile]
    served_models: dict[str, str]
    max_lines: int
    max_line_bytes: int
    router: ProfileRouter | None = None  # routes lines whose model is "auto"


class RequestLine(BaseModel):
    """The envelope of one line: {custom_id, method, url, body}."""

    model_config = ConfigDict(extra="forbid", strict=True)

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: Literal["/v1/chat/completions", "/v1/responses"]
    body: dict[str, Any]


ENVELOPE_CODES = {"method": "invalid_method", "url": "invalid_url"}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _validation_line_error(line: int, exc: ValidationError, prefix: str = "") -> LineError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    described = "; ".join(f"{prefix}{param_path(e['loc']) or 'line'}: {e['msg']}" for e in errors)
    param = param_path(first["loc"])
    if first["type"] == "missing":
        code = "missing_required_parameter"
    else:
        code = ENVELOPE_CODES.get(param or "", "invalid_request" if not prefix else first["type"])
    return LineError(line, code, described, f"{prefix}{param}" if param else None)


def _not_in_a_batch(request: ChatCompletionCreate | ResponseCreate) -> str | None:
    """The parameter a batch line cannot use: a stream, a background run, a previous response."""
    if request.stream:
        return "stream"
    if isinstance(request, ResponseCreate):
        if request.background:
            return "background"
        if request.previous_response_id is not None:
            return "previous_response_id"
    return None


def parse_request_line(text: str, line: int, context: LineContext) -> BatchRequest | LineError:
    """One decoded line as a chat completion or a Responses request, mapped onto its profile's job."""
    if not text.strip():
        return LineError(line, "blank_line", "Blank lines are not allowed; each line must be one request.")
    if "\\u0000" in text:  # PostgreSQL cannot store it: refused here, by its line, not at ingest
        return LineError(
            line, "invalid_value", "This line holds a NUL character (\\u0000), which cannot be stored."
        )
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        return LineError(line, "invalid_json_line", f"This line is not parseable as valid JSON: {exc}")
    if not isinstance(document, dict):
        return LineError(line, "invalid_json_line", "Each line must be a JSON object.")
    try:
        envelope = RequestLine.model_validate(document)
    except ValidationError as exc:
        return _validation_line_error(line, exc)
    try:
        request = REQUEST_MODELS[envelope.url].model_validate(envelope.body)
    except ValidationError as exc:
        return _validation_line_error(line, exc, "body.")
    refused = _not_in_a_batch(request)
    if refused is not None:
        return LineError(line, "invalid_request", f"Batch requests cannot use {refused}.", f"body.{refused}")
    profile = profile_for_model(request.model, context.profiles, context.served_models)
    if profile is None:
        choices = sorted({*context.profiles, *(p.model for p in context.profiles.values())})
        message = f"The model '{request.model}' does not exist; use one of {choices}."
        return LineError(line, "model_not_found", message, "body.model")
    try:
        job_context = {"profiles": context.profiles, "router": context.router}
        body = (
            chat_job_body(request, profile)
            if isinstance(request, ChatCompletionCreate)
            else response_job_body(request, profile, None)
        )
        job = JobCreate.model_validate(body, context=job_context)
    except ValidationError as exc:
        return _validation_line_error(line, exc, "body.")
    except ApiError as exc:  # a function_call_output answering no call of the line
        return LineError(line, exc.code or "invalid_request", exc.message, f"body.{exc.param}")
    return BatchRequest(line, envelope.custom_id, job)


def raw_lines(file: IO[bytes], max_line_bytes: int) -> Iterator[bytes | None]:
    """The file's lines without their end of line; None for a line longer than max_line_bytes."""
    while line := file.readline(max_line_bytes + 1):
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            while (rest := file.readline(max_line_bytes)) and not rest.endswith(b"\n"):
                pass  # skip the rest of the overlong line without holding it
            yield None
            continue
        yield line.rstrip(b"\r\n") if line.endswith(b"\n") else line


def read_requests(file: IO[bytes], context: LineContext) -> Iterator[BatchRequest | LineError]:
    """Each line of the file as a BatchRequest or a LineError, in order, streaming."""
    first_line_of: dict[bytes, int] = {}  # custom_id digest -> line, to report duplicates
    line = 0
    for line, raw in enumerate(raw_lines(file, context.max_line_bytes), start=1):
        if line > context.max_lines:
            message = f"The file has more than {context.max_lines} requests; split it into several batches."
            yield LineError(line, "too_many_requests", message)
            return
        if raw is None:
            yield LineError(
                line, "line_too_long", f"This line is longer than {context.max_line_bytes} bytes."
            )
            continue
        if line == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)  # editors on Windows write one
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield LineError(line, "invalid_utf8", f"This line is not valid UTF-8 (byte {exc.start}).")
            continue
        result = parse_request_line(text, line, context)
        if isinstance(result, BatchRequest):
            digest = hashlib.blake2b(result.custom_id.encode(), digest_size=16).digest()
            first = first_line_of.setdefault(digest, line)
            if first != line:
                message = (
                    f"custom_id '{result.custom_id}' is already used on line {first}; it must be unique."
                )
                result = LineError(line, "duplicate_custom_id", message, "custom_id")
        yield result
    if line == 0:
        yield LineError(None, "empty_file", "The input file has no requests.")
