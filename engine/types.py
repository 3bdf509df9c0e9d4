"""The small contract between the engine and its callers (tasks, benchmarks, tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]
ReasoningEffort = Literal["low", "medium", "high"]
ToolChoice = Literal["auto", "none", "required"]


@dataclass(frozen=True)
class ModelTags:
    """The five tags every metric sample and stored result carries."""

    engine: str  # e.g. "transformers-cb"
    model_id: str  # the id of the model that really runs (a demo model reports its own id)
    model_size: str  # "20b", "120b", "135m", "tiny"
    gpu_mode: str  # "pipeline", "tensor", "cpu"
    profile: str  # "latency_first", "quality_first"

    def as_dict(self) -> dict[str, str]:
        return {
            "engine": self.engine,
            "model_id": self.model_id,
            "model_size": self.model_size,
            "gpu_mode": self.gpu_mode,
            "profile": self.profile,
        }


@dataclass(frozen=True)
class GenerationRequest:
    """One generation job as the engine sees it. Either `messages` or `prompt` is set.

    A message is {"role", "content"}; an assistant message may carry "tool_calls" (each {"id", "name",
    "arguments"}, arguments a JSON string) and a "tool" message answers one: {"role": "tool",
    "content", "name" (the function), "tool_call_id"}. `tools` are function definitions ({"name",
    "description", "parameters"}, parameters a JSON schema). `tool_choice` "none" hides them from the
    model; "required" makes the answer a call (to `tool_name` when it is set)."""

    messages: tuple[dict[str, Any], ...] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    reasoning_effort: ReasoningEffort | None = None
    current_date: str | None = None  # harmony's "Current date:" line, YYYY-MM-DD (None: today, UTC)
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: ToolChoice = "auto"
    tool_name: str | None = None  # a named function: the one the answer calls
    ignore_eos: bool = False  # benchmarks: generate exactly max_tokens
    request_id: str | None = None

    @property
    def offers_tools(self) -> bool:
        """The model is shown the tools and may call them."""
        return bool(self.tools) and self.tool_choice != "none"


@dataclass(frozen=True)
class ToolCall:
    """A function call the model made: `arguments` as it wrote them (meant to be a JSON object);
    `error` says why the call cannot be run as it is (arguments not JSON, a function never offered)."""

    id: str
    name: str
    arguments: str
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        call = {"id": self.id, "name": self.name, "arguments": self.arguments}
        return call if self.error is None else {**call, "error": self.error}


@dataclass(frozen=True)
class TokenDelta:
    """New text of one request, split by harmony channel ("final" or "analysis")."""

    request_id: str
    content: str  # new final-channel text (the answer)
    reasoning: str  # new analysis-channel text
    completion_tokens: int  # tokens generated so far
    time: float  # time.time() when the token arrived
    # tool-call pieces as OpenAI streams them: {"index", "id" and "name" (first piece), "arguments"}
    tool_calls: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    request_id: str
    content: str
    reasoning: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None  # from submit to the first generated token
    e2e_s: float  # from submit to the final token
    token_times: list[float] = field(default_factory=list)  # time.time() of each generated token
    harmony_ok: bool = True  # the output parsed as well-formed harmony (always True for non-harmony models)
    error: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # finish_reason "tool_calls" when there are any
    reasoning_tokens: int = 0  # of completion_tokens, those that became reasoning (harmony's analysis)
