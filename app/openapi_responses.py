"""The JSON bodies the API answers with, as pydantic models: GET /openapi.json documents them.

They describe what the views return (the render functions build plain dicts); nothing validates an answer
with them at run time. Each allows extra fields, so a field added to an answer later does not make the
document wrong. A field with no default is always present (nullable where it can be null); a field typed
`X | Absent = None` is left out of the answer where it has no value, and is never null.
Times are unix seconds (numbers); durations are seconds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from app.batches.models import BatchStatus
from app.models import JobStatus

Absent = SkipJsonSchema[None]  # `x: str | Absent = None`: x may be left out, but is never null
Unix = Annotated[float, Field(description="unix seconds")]


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class ListPage(Answer):
    """An OpenAI-style list page (app/http.py list_page); `data` is typed by each subclass."""

    object: Literal["list"]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ModelTags(Answer):
    """The five tags of the model that really ran a job (null before a worker has run it)."""

    engine: str
    model_id: str
    model_size: str
    gpu_mode: str
    profile: str


# --- jobs (app/jobs/render.py) ---


class JobToolCall(Answer):
    """A function call the answer made; `error` says why it cannot run as written."""

    id: str
    name: str
    arguments: str
    error: str | Absent = None


class JobResult(Answer):
    content: str | None
    reasoning: str | None
    finish_reason: str
    tool_calls: list[JobToolCall]


class JobError(Answer):
    message: str


class CompletionTokensDetails(Answer):
    reasoning_tokens: int


class ChatUsage(Answer):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | Absent = None


class JobUsage(ChatUsage):
    completion_tokens_details: CompletionTokensDetails


class JobQuality(Answer):
    """Answer-quality signals of a succeeded job (app/quality.py)."""

    harmony_ok: bool
    empty_answer: bool
    truncated: bool
    reasoning_share: float
    repetition: float


class JobTimings(Answer):
    queue_s: float | None
    ttft_s: float | None
    e2e_s: float | None
    total_s: float | None


class Job(Answer):
    """The job object: its request, status history, result, tags and timings."""

    id: str
    object: Literal["job"]
    status: JobStatus
    profile: str
    created_at: Unix
    started_at: Unix | None
    first_token_at: Unix | None
    finished_at: Unix | None
    cancel_requested: bool
    attempts: int
    request: dict[str, Any]
    metadata: dict[str, str] | None
    result: JobResult | None
    error: JobError | None
    usage: JobUsage | None
    tags: ModelTags | None
    worker: str | None
    routed_from: str | None
    route_reason: str | None
    cached: bool
    cached_from: str | None
    quality: JobQuality | None
    timings: JobTimings


class JobList(ListPage):
    data: list[Job]


# --- chat completions and models (app/chat/render.py, app/chat/views.py) ---


class ChatCompletionFunction(Answer):
    name: str
    arguments: str


class ChatCompletionToolCall(Answer):
    id: str
    type: Literal["function"]
    function: ChatCompletionFunction


class ChatCompletionMessage(Answer):
    role: Literal["assistant"]
    content: str | None
    refusal: None
    tool_calls: list[ChatCompletionToolCall] | Absent = None
    invalid_tool_calls: list[JobToolCall] | Absent = None
    reasoning: str | Absent = None
    reasoning_content: str | Absent = None


class ChatCompletionChoice(Answer):
    index: int
    message: ChatCompletionMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: None


class ChatCompletion(Answer):
    id: str
    object: Literal["chat.completion"]
    created: Unix
    model: str
    choices: list[ChatCompletionChoice]
    usage: ChatUsage
    job_id: str
    tags: ModelTags | None


class ModelObject(Answer):
    """A profile (with the model it runs), `auto` (with the profiles it picks from), or a model id."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    model: str | Absent = None
    profiles: list[str] | Absent = None
    profile: str | Absent = None


class ModelList(Answer):
    object: Literal["list"]
    data: list[ModelObject]


# --- Responses API (app/responses/render.py) ---


class ReasoningText(Answer):
    type: Literal["reasoning_text"]
    text: str


class ResponseReasoningOutput(Answer):
    type: Literal["reasoning"]
    id: str
    summary: list[Any]
    content: list[ReasoningText]
    status: str


class OutputText(Answer):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[Any]


class ResponseMessageOutput(Answer):
    type: Literal["message"]
    id: str
    status: str
    role: Literal["assistant"]
    content: list[OutputText]


class ResponseFunctionCallOutput(Answer):
    type: Literal["function_call"]
    id: str
    call_id: str
    name: str
    arguments: str
    status: str
    error: str | Absent = None


OutputItem = Annotated[
    ResponseReasoningOutput | ResponseMessageOutput | ResponseFunctionCallOutput, Field(discriminator="type")
]


class ResponseError(Answer):
    code: str
    message: str


class IncompleteDetails(Answer):
    reason: str


class ResponseReasoning(Answer):
    effort: str | None
    summary: str | None


class ResponseTextFormat(Answer):
    type: str


class ResponseText(Answer):
    format: ResponseTextFormat


class CachedTokens(Answer):
    cached_tokens: int


class ResponseUsage(Answer):
    input_tokens: int
    input_tokens_details: CachedTokens
    output_tokens: int
    output_tokens_details: CompletionTokensDetails
    total_tokens: int


class ResponseObject(Answer):
    """OpenAI's response object of a job made by POST /v1/responses."""

    id: str
    object: Literal["response"]
    created_at: Unix
    completed_at: Unix | None
    status: Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
    background: bool
    error: ResponseError | None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: ResponseReasoning
    store: bool
    temperature: float | None
    text: ResponseText
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    top_p: float | None
    truncation: str
    usage: ResponseUsage | None
    user: str | None
    metadata: dict[str, str]
    job_id: str
    tags: ModelTags | None
    invalid_tool_calls: list[JobToolCall] | Absent = None


# --- /tokenize and /detokenize (app/chat/tokenize_views.py) ---


class TokenizeResponse(Answer):
    tokens: list[int]
    count: int
    max_model_len: int | None


class DetokenizeResponse(Answer):
    prompt: str


# --- files and batches (app/batches/files.py, app/batches/views.py) ---


class FileObject(Answer):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: Unix
    expires_at: Unix | None
    filename: str
    purpose: str
    status: str
    status_details: str | None


class FileList(ListPage):
    data: list[FileObject]


class FileDeleted(Answer):
    id: str
    object: Literal["file"]
    deleted: bool


class BatchLineError(Answer):
    """A problem of the input file (app/batches/lines.py); `line` is 1-based."""

    code: str
    message: str
    param: str | None
    line: int | None


class BatchErrors(Answer):
    object: Literal["list"]
    data: list[BatchLineError]


class BatchRequestCounts(Answer):
    total: int
    completed: int
    failed: int


class Batch(Answer):
    id: str
    object: Literal["batch"]
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: Unix
    in_progress_at: Unix | None
    expires_at: Unix | None
    finalizing_at: Unix | None
    completed_at: Unix | None
    failed_at: Unix | None
    expired_at: Unix | None
    cancelling_at: Unix | None
    cancelled_at: Unix | None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None


class BatchList(ListPage):
    data: list[Batch]


# --- ops: profiles, stats, health, this document ---


class ProfileObject(Answer):
    """A serving profile (app/profiles.py); the sampling defaults only where the file sets them."""

    id: str
    object: Literal["profile"]
    model: str
    model_size: str
    gpu_mode: str
    max_batch: int
    max_tokens: int
    temperature: float | Absent = None
    top_p: float | Absent = None
    reasoning_effort: str | Absent = None


class ProfileList(Answer):
    object: Literal["list"]
    data: list[ProfileObject]


class Percentiles(Answer):
    p50: float | None
    p95: float | None
    samples: int


class QualitySummary(Answer):
    """Rates and means of the quality signals over the scored jobs (null when none is scored)."""

    samples: int
    harmony_ok_rate: float | None
    empty_answer_rate: float | None
    truncated_rate: float | None
    reasoning_share_mean: float | None
    repetition_mean: float | None


class ToolCallCounts(Answer):
    jobs: int
    calls: int
    invalid: int


class UsageTally(Answer):
    """Jobs by status and the tokens they used (app/ops/usage.py)."""

    jobs: int
    by_status: dict[str, int]
    prompt_tokens: int
    completion_tokens: int = Field(description="reasoning included, as OpenAI counts it")
    reasoning_tokens: int
    total_tokens: int


class KeyUsageTotals(UsageTally):
    """One API key's usage (key_id and name null: jobs owned by no key, made before keys or without)."""

    key_id: str | None
    name: str | None = Field(description="the stored key's name, GPTOSS_API_KEYS[i] for an env key")


class KeyUsage(KeyUsageTotals):
    by_profile: dict[str, UsageTally]
    by_day: dict[str, UsageTally] = Field(description="by the UTC day the jobs were submitted (YYYY-MM-DD)")


class Usage(Answer):
    """GET /v1/usage (app/ops/usage_views.py): a non-admin key gets only its own entry."""

    object: Literal["usage"]
    since: str | None
    until: str | None
    data: list[KeyUsage]


class Stats(Answer):
    """GET /v1/stats (app/ops/stats.py): a non-admin key's own jobs; an admin's, all, with usage per key."""

    object: Literal["stats"]
    profile: str | None
    since: Unix | None
    include_gate: bool
    count: int
    truncated: bool
    by_status: dict[str, int]
    error_rate: float | None
    queue_wait_s: Percentiles
    ttft_s: Percentiles
    e2e_s: Percentiles
    decode_tokens_per_s: Percentiles
    quality: QualitySummary
    cache_hits: int
    routed_auto: int
    tool_calls: ToolCallCounts
    usage_by_key: list[KeyUsageTotals] | Absent = None  # admin keys only


class Health(Answer):
    status: Literal["ok"]


class WorkerStatus(Answer):
    name: str
    model_id: str | None
    state: Literal["serving", "loading"]
    tags: dict[str, Any] | None
    pid: int
    last_heartbeat: Unix
    age_s: float


class ReadinessChecks(Answer):
    database: str = Field(description='"ok" or the error')
    redis: str = Field(description='"ok" or the error')
    workers: dict[str, list[str]]
    worker_heartbeats: dict[str, list[WorkerStatus]]


class Readiness(Answer):
    """GET /readyz: 200 when the API is ready (or, with ?profile=, that profile), 503 with the same body
    when not."""

    status: Literal["ready", "not_ready"]
    checks: ReadinessChecks
    profiles: dict[str, Literal["ready", "not_ready"]] = Field(
        description="each profile: ready when a live worker has its model loaded (and the API is ready)"
    )


class OpenApiDocument(Answer):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


# --- release-gate runs (app/gate_runs/store.py, views.py) ---


class GateRunFigures(Answer):
    achieved_qps: float | None
    p95_ttft_s: float | None
    p95_e2e_s: float | None
    error_rate: float | None


class GateRun(Answer):
    id: str
    object: Literal["gate.run"]
    trigger: str
    profile: str
    slo: str
    passed: bool
    failures: list[str]
    figures: GateRunFigures
    started_at: Unix
    finished_at: Unix
    url: str
    plot_url: str


class GateRunDetail(GateRun):
    """One run as GET /v1/gate/runs/{run_id} shows it: with its report and Markdown."""

    report: dict[str, Any]
    markdown: str


class GateRunList(ListPage):
    data: list[GateRun]


class WebhookObject(Answer):
    """A webhook (app/webhooks/schemas.py); `secret` only in the answer to its creation."""

    id: str
    object: Literal["webhook"]
    url: str
    events: list[str]
    created_at: Unix


class WebhookCreated(WebhookObject):
    secret: str = Field(description="whsec_ + base64 key: Standard Webhooks' signing secret, shown this once")


class WebhookList(ListPage):
    data: list[WebhookObject]


class WebhookDeleted(Answer):
    id: str
    object: Literal["webhook.deleted"]
    deleted: bool


class WebhookAttemptObject(Answer):
    """One POST of an event to a webhook: the status code that answered, or the error where none did."""

    id: str
    object: Literal["webhook.delivery_attempt"]
    webhook_id: str
    event_id: str
    event_type: str
    attempt: int
    status_code: int | None
    error: str | None
    delivery_status: Literal["pending", "delivered", "failed"]
    started_at: Unix
    duration_s: float


class WebhookAttemptList(ListPage):
    data: list[WebhookAttemptObject]
