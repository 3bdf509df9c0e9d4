"""The OpenAI chat completions request, declared so errors name the field, mapped onto a job."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from app.profiles import Profile
from app.routing.auto import AUTO_PROFILE

StopString = Annotated[str, StringConstraints(min_length=1)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. `name`, `refusal`: harmless, not used

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


def _stop_as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ChatCompletionCreate(BaseModel):
    """POST /v1/chat/completions. Parameters we cannot honour are refused, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    # max_length sits on the list itself: on the optional it would be applied to an explicit null (a 500)
    stop: Annotated[
        Annotated[list[StopString], Field(max_length=4)] | None, BeforeValidator(_stop_as_list)
    ] = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    n: Literal[1] | None = None  # one choice per job
    frequency_penalty: float | None = None  # only 0 (no penalty) is supported
    presence_penalty: float | None = None
    logprobs: Literal[False] | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalties(cls, value: float | None) -> float | None:
        if value not in (None, 0):
            raise PydanticCustomError(
                "unsupported_parameter", "penalties are not supported; omit it or use 0"
            )
        return value

    @field_validator("messages")
    @classmethod
    def _some_text(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.text() for m in messages):
            raise PydanticCustomError("no_user_message", "at least one user message with text is required")
        return messages


def profile_for_model(model: str, profiles: dict[str, Profile], served: dict[str, str]) -> str | None:
    """The profile a `model` value names: a profile, its configured or served model id, or auto."""
    if model in profiles or model == AUTO_PROFILE:
        return model
    for name, profile in profiles.items():
        if model in (profile.model, served.get(name)):
            return name
    return None


def job_body(chat: ChatCompletionCreate, profile: str) -> dict[str, Any]:
    """The POST /v1/jobs body equivalent to a chat request (validated again as a JobCreate)."""
    body: dict[str, Any] = {
        "messages": [{"role": m.role, "content": m.text()} for m in chat.messages],
        "profile": profile,
    }
    max_tokens = chat.max_completion_tokens or chat.max_tokens
    optional = {
        "max_tokens": max_tokens,
        "temperature": chat.temperature,
        "top_p": chat.top_p,
        "seed": chat.seed,
        "stop": chat.stop,
        "reasoning_effort": chat.reasoning_effort,
        "metadata": chat.metadata,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body
