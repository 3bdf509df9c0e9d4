"""Every operation of the HTTP API, with the pydantic models that validate its input (see app/openapi.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from app.batches.files_views import FileListQuery
from app.batches.views import BatchCreate, BatchListQuery
from app.chat.schemas import ChatCompletionCreate
from app.chat.tokenize_views import DetokenizeRequest, TokenizeRequest
from app.gate_runs.views import GateRunCreate, GateRunListQuery
from app.jobs.schemas import JobCreate
from app.jobs.views import JobListQuery
from app.openapi_responses import (
    Batch,
    BatchList,
    ChatCompletion,
    DetokenizeResponse,
    FileDeleted,
    FileList,
    FileObject,
    GateRun,
    GateRunDetail,
    GateRunList,
    Health,
    Job,
    JobList,
    ModelList,
    OpenApiDocument,
    ProfileList,
    Readiness,
    ResponseObject,
    Stats,
    TokenizeResponse,
    Usage,
    WebhookAttemptList,
    WebhookCreated,
    WebhookDeleted,
    WebhookList,
    WebhookObject,
)
from app.ops.health import ReadyQuery
from app.ops.stats_views import StatsQuery
from app.ops.usage_views import UsageQuery
from app.responses.schemas import ResponseCreate
from app.webhooks.schemas import WebhookCreate, WebhookListQuery

JSON = "application/json"
SSE = "text/event-stream"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI template, e.g. /v1/jobs/{job_id}
    endpoint: str  # the Flask endpoint that serves it
    summary: str
    ok: int = 200
    ok_types: tuple[str, ...] = (JSON,)
    response: type[BaseModel] | None = None  # the application/json body of `ok` (app/openapi_responses.py)
    also_ok: tuple[int, ...] = ()  # other success statuses with the same body (a replay: 200)
    body: type[BaseModel] | None = None
    multipart: dict[str, Any] | None = None  # a multipart/form-data body schema
    query: type[BaseModel] | None = None
    headers: tuple[str, ...] = ()  # request headers it reads
    errors: tuple[int, ...] = ()  # besides 401 and 503, which any operation may answer
    errors_as_response: tuple[int, ...] = ()  # error statuses whose body may be `response` (not ready: 503)
    tags: tuple[str, ...] = field(default=())


FILE_UPLOAD = {
    "type": "object",
    "required": ["purpose", "file"],
    "properties": {
        "purpose": {"type": "string", "enum": ["batch"]},
        "file": {"type": "string", "format": "binary"},
        # OpenAI's expires_after, as its SDKs send it in a form (app/batches/files_views.ExpiresAfter)
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2592000},
    },
}

HEADER_DOCS = {
    "Idempotency-Key": (
        "A replay with the same key returns the first job.",
        {"type": "string", "maxLength": 255},
    ),
    "Last-Event-ID": ("Resume after this event id (a Redis stream id).", {"type": "string"}),
}

OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/v1/jobs", "jobs.create_job", "Queue a generation job", ok=202, body=JobCreate,
              response=Job, also_ok=(200,), headers=("Idempotency-Key",), errors=(400, 409, 413, 429),
              tags=("jobs",)),
    Operation("get", "/v1/jobs", "jobs.list_jobs", "List jobs, newest first", query=JobListQuery,
              response=JobList, errors=(400,), tags=("jobs",)),
    Operation("get", "/v1/jobs/{job_id}", "jobs.get_job", "Show one job", response=Job, errors=(404,),
              tags=("jobs",)),
    Operation("post", "/v1/jobs/{job_id}/cancel", "jobs.cancel_job", "Cancel a queued or running job",
              response=Job, errors=(404, 409), tags=("jobs",)),
    Operation("get", "/v1/jobs/{job_id}/events", "job_events.job_events", "Stream a job's events (SSE)",
              ok_types=(SSE,), headers=("Last-Event-ID",), errors=(400, 404, 429), tags=("jobs",)),
    Operation("post", "/v1/chat/completions", "chat.create_chat_completion",
              "Create a chat completion (OpenAI-compatible)", ok_types=(JSON, SSE), body=ChatCompletionCreate,
              response=ChatCompletion, headers=("Idempotency-Key",), errors=(400, 404, 409, 413, 429),
              tags=("openai",)),
    Operation("get", "/v1/models", "chat.list_models", "List the served models", response=ModelList,
              tags=("openai",)),
    Operation("post", "/v1/responses", "responses.create_response",
              "Create a response (OpenAI Responses API; stream=true for its events, background=true to poll)",
              ok_types=(JSON, SSE), body=ResponseCreate, response=ResponseObject,
              headers=("Idempotency-Key",), errors=(400, 404, 409, 413, 429), tags=("openai",)),
    Operation("get", "/v1/responses/{response_id}", "responses.get_response",
              "Show a stored response (stream=true: its events again, after starting_after)",
              ok_types=(JSON, SSE), response=ResponseObject, errors=(400, 404, 429), tags=("openai",)),
    Operation("post", "/v1/responses/{response_id}/cancel", "responses.cancel_response",
              "Cancel a queued or running response", response=ResponseObject, errors=(404, 409),
              tags=("openai",)),
    Operation("post", "/tokenize", "tokenize.tokenize",
              "Token ids of messages (as the engine renders them) or of a raw prompt (vLLM-compatible)",
              body=TokenizeRequest, response=TokenizeResponse, errors=(400, 404, 413), tags=("vllm",)),
    Operation("post", "/detokenize", "tokenize.detokenize", "Text of token ids (vLLM-compatible)",
              body=DetokenizeRequest, response=DetokenizeResponse, errors=(400, 404, 413),
              tags=("vllm",)),
    Operation("post", "/v1/files", "files.upload_file", "Upload a batch input file", multipart=FILE_UPLOAD,
              response=FileObject, errors=(400, 413), tags=("openai",)),
    Operation("get", "/v1/files", "files.list_files", "List files", query=FileListQuery, response=FileList,
              errors=(400,), tags=("openai",)),
    Operation("get", "/v1/files/{file_id}", "files.get_file", "Show one file", response=FileObject,
              errors=(404,), tags=("openai",)),
    Operation("delete", "/v1/files/{file_id}", "files.delete_file", "Delete a file", response=FileDeleted,
              errors=(404, 409), tags=("openai",)),
    Operation("get", "/v1/files/{file_id}/content", "files.get_file_content", "Download a file's bytes",
              ok_types=("application/octet-stream",), errors=(404,), tags=("openai",)),
    Operation("post", "/v1/batches", "batches.create_batch", "Create a batch", body=BatchCreate,
              response=Batch, errors=(400, 413, 429), tags=("openai",)),
    Operation("get", "/v1/batches", "batches.list_batches", "List batches", query=BatchListQuery,
              response=BatchList, errors=(400,), tags=("openai",)),
    Operation("get", "/v1/batches/{batch_id}", "batches.get_batch", "Show one batch", response=Batch,
              errors=(404,), tags=("openai",)),
    Operation("post", "/v1/batches/{batch_id}/cancel", "batches.cancel_batch", "Cancel a batch",
              response=Batch, errors=(404, 409), tags=("openai",)),
    Operation("get", "/v1/profiles", "profiles.list_profiles", "List the serving profiles",
              response=ProfileList, tags=("ops",)),
    Operation("get", "/v1/stats", "stats.stats", "Job counts, error rate and latency percentiles",
              query=StatsQuery, response=Stats, errors=(400,), tags=("ops",)),
    Operation("get", "/v1/usage", "usage.usage",
              "Tokens and jobs by status per API key, per profile and per day (a key's own; admins: all)",
              query=UsageQuery, response=Usage, errors=(400,), tags=("ops",)),
    Operation("post", "/v1/gate/runs", "gate_runs.create_gate_run", "Store a release-gate run", ok=201,
              body=GateRunCreate, response=GateRun, errors=(400, 409, 413), tags=("gate",)),
    Operation("get", "/v1/gate/runs", "gate_runs.list_gate_runs", "List release-gate runs",
              query=GateRunListQuery, response=GateRunList, errors=(400,), tags=("gate",)),
    Operation("get", "/v1/gate/runs/{run_id}", "gate_runs.get_gate_run", "Show one release-gate run",
              response=GateRunDetail, errors=(404,), tags=("gate",)),
    Operation("get", "/v1/gate/runs/{run_id}/plot.png", "gate_runs.get_gate_run_plot",
              "A release-gate run's latency plot", ok_types=("image/png",), errors=(404,), tags=("gate",)),
    Operation("post", "/v1/webhooks", "webhooks.create_webhook",
              "Register a webhook for job and batch events (its secret is shown once)", ok=201,
              body=WebhookCreate, response=WebhookCreated, errors=(400, 413), tags=("webhooks",)),
    Operation("get", "/v1/webhooks", "webhooks.list_webhooks", "List your webhooks", query=WebhookListQuery,
              response=WebhookList, errors=(400,), tags=("webhooks",)),
    Operation("get", "/v1/webhooks/{webhook_id}", "webhooks.get_webhook", "Show one webhook",
              response=WebhookObject, errors=(404,), tags=("webhooks",)),
    Operation("delete", "/v1/webhooks/{webhook_id}", "webhooks.delete_webhook", "Delete a webhook",
              response=WebhookDeleted, errors=(404,), tags=("webhooks",)),
    Operation("get", "/v1/webhooks/{webhook_id}/deliveries", "webhooks.list_deliveries",
              "A webhook's delivery attempts, newest first", query=WebhookListQuery,
              response=WebhookAttemptList, errors=(400, 404), tags=("webhooks",)),
    Operation("get", "/healthz", "health.healthz", "Liveness: the API process answers",
              response=Health, tags=("ops",)),
    Operation("get", "/readyz", "health.readyz",
              "Readiness of the API (DB, Redis), each profile's as a field; ?profile=: that profile's",
              query=ReadyQuery, response=Readiness, errors=(400, 404), errors_as_response=(503,),
              tags=("ops",)),
    Operation("get", "/metrics", "metrics.metrics", "Prometheus metrics of the API",
              ok_types=("text/plain",), tags=("ops",)),
    Operation("get", "/openapi.json", "openapi.openapi_document", "This document", response=OpenApiDocument,
              tags=("ops",)),
)  # fmt: skip
