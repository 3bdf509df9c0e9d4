"""The OpenAI chat completions request, declared so errors name the field, mapped onto a job."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

from app.errors import ApiError
from app.profiles import Profile
from app.queue import SERVICE_TIER_PRIORITY, ServiceTier
from app.routing.auto import AUTO_PROFILE

StopString = Annotated[str, StringConstraints(min_length=1)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatFunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: str


class ChatToolCall(BaseModel):
    """A call an earlier assistant turn made, as OpenAI's clients pass it back."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["function"] = "function"
    function: ChatFunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. `name`, `refusal`: harmless, not used

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ChatToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def as_job_message(self) -> dict[str, Any]:
        """The message as a job (and the engine) holds it: role and text, and its calls."""
        message: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call.id, "name": call.function.name, "arguments": call.function.arguments}
                for call in self.tool_calls
            ]
        return message


def _some_user_text(messages: list[ChatMessage]) -> list[ChatMessage]:
    if not any(m.role == "user" and m.text() for m in messages):
        raise PydanticCustomError("no_user_message", "at least one user message with text is required")
    return messages


# chat messages as chat completions (and POST /tokenize) take them
ChatMessages = Annotated[list[ChatMessage], Field(min_length=1), AfterValidator(_some_user_text)]


class ChatFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # accepted; the arguments are checked as JSON, not against the schema


class ChatTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    function: ChatFunction

    @field_validator("type")
    @classmethod
    def _functions_only(cls, value: str) -> str:
        if value != "function":
            raise PydanticCustomError(
                "unsupported_parameter",
                "only function tools are supported, not {type} (gpt-oss's built-in browser and python "
                "tools are not served)",
                {"type": value},
            )
        return value


class ChatFunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str


class ChatNamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: ChatFunctionName


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


def _stop_as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ChatCompletionCreate(BaseModel):
    """POST /v1/chat/completions. Parameters we cannot honour are refused, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    messages: ChatMessages
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
    n: int | None = None  # one choice per job
    frequency_penalty: float | None = None  # only 0 (no penalty) is supported
    presence_penalty: float | None = None
    logprobs: bool | None = None
    tools: list[ChatTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | ChatNamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # gpt-oss makes at most one call a turn, which satisfies both
    store: bool | None = None
    cache: bool | None = None  # false: not answered from the response cache (see JobCreate.cache)
    service_tier: ServiceTier | None = None  # the job's priority (app/queue.py SERVICE_TIER_PRIORITY)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise PydanticCustomError("unsupported_parameter", "only n=1 is supported (one choice per job)")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise PydanticCustomError(
                "unsupported_parameter", "logprobs are not supported; omit it or use false"
            )
        return value

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalties(cls, value: float | None) -> float | None:
        if value not in (None, 0):
            raise PydanticCustomError(
                "unsupported_parameter", "penalties are not supported; omit it or use 0"
            )
        return value


def reasoning_fields(reasoning: str) -> dict[str, str]:
    """gpt-oss's reasoning in a chat message or delta: `reasoning` (what clients now read) and, the
    same text, `reasoning_content` (what they read before)."""
    return {"reasoning": reasoning, "reasoning_content": reasoning}


def profile_for_model(model: str, profiles: dict[str, Profile], served: dict[str, str]) -> str | None:
    """The profile a `model` value names: a profile, its configured or served model id, or auto."""
    if model in profiles or model == AUTO_PROFILE:
        return model
    for name, profile in profiles.items():
        if model in (profile.model, served.get(name)):
            return name
    return None


def named_profile(model: str, profiles: dict[str, Profile], served: dict[str, str]) -> str:
    """profile_for_model, or 404 model_not_found naming the choices."""
    profile = profile_for_model(model, profiles, served)
    if profile is None:
        choices = sorted({*profiles, *(p.model for p in profiles.values()), *served.values()})
        raise ApiError(
            404,
            f"The model '{model}' does not exist; use one of {choices}.",
            param="model",
            code="model_not_found",
        )
    return profile


def job_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Chat messages as a job holds them: a tool result names the function of the call it answers."""
    called: dict[str, str] = {}
    held = []
    for index, message in enumerate(messages):
        job_message = message.as_job_message()
        for call in message.tool_calls or ():
            called[call.id] = call.function.name
        if message.role == "tool":
            if message.tool_call_id not in called:
                raise ApiError(
                    400,
                    f"messages[{index}].tool_call_id {message.tool_call_id!r} answers no tool call of an "
                    "earlier assistant message",
                    param=f"messages[{index}].tool_call_id",
                    code="unknown_tool_call",
                )
            job_message.update(name=called[message.tool_call_id], tool_call_id=message.tool_call_id)
        held.append(job_message)
    return held


def job_tool_choice(choice: str | ChatNamedToolChoice | None) -> str | dict[str, str] | None:
    if isinstance(choice, ChatNamedToolChoice):
        return {"type": "function", "name": choice.function.name}
    return choice


def job_body(chat: ChatCompletionCreate, profile: str) -> dict[str, Any]:
    """The POST /v1/jobs body equivalent to a chat request (validated again as a JobCreate)."""
    body: dict[str, Any] = {"messages": job_messages(chat.messages), "profile": profile}
    if chat.tools:
        body["tools"] = [
            {"type": "function", **tool.function.model_dump(exclude={"strict"}, exclude_none=True)}
            for tool in chat.tools
        ]
    max_tokens = chat.max_completion_tokens or chat.max_tokens
    optional = {
        "max_tokens": max_tokens,
        "temperature": chat.temperature,
        "top_p": chat.top_p,
        "seed": chat.seed,
        "stop": chat.stop,
        "reasoning_effort": chat.reasoning_effort,
        "metadata": chat.metadata,
        "tool_choice": job_tool_choice(chat.tool_choice),
        "cache": chat.cache,
        "priority": SERVICE_TIER_PRIORITY.get(chat.service_tier or ""),
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body
