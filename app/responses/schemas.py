"""The OpenAI Responses request (POST /v1/responses), declared so errors name the field, mapped onto a job.

A response is a job: its conversation (instructions, the previous response's conversation and output,
then this input) is held as the job's `messages`, and what only the Responses API has (instructions,
previous_response_id, store, background, the model asked for) as the job's `response` options.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from app.errors import UNION_TAG_PREFIX
from app.queue import ServiceTier

TEXT_PARTS = ("input_text", "output_text")


def _as_text_parts(value: Any) -> Any:
    """Content given as one string is one text part."""
    return [{"type": "input_text", "text": value}] if isinstance(value, str) else value


def _as_user_message(value: Any) -> Any:
    """Input given as one string is one user message."""
    return [{"role": "user", "content": value}] if isinstance(value, str) else value


TextParts = Annotated[list["ContentPart"], BeforeValidator(_as_text_parts)]


def _unsupported(message: str, **values: Any) -> PydanticCustomError:
    return PydanticCustomError("unsupported_parameter", message, values)


class ContentPart(BaseModel):
    """A piece of a message's content; only text is served (no images, files or audio)."""

    model_config = ConfigDict(extra="ignore")  # a passed-back output_text's annotations and logprobs

    type: str
    text: str = ""

    @field_validator("type")
    @classmethod
    def _text_only(cls, value: str) -> str:
        if value not in TEXT_PARTS:
            raise _unsupported(
                "only text content (input_text, output_text) is supported, not {type}", type=value
            )
        return value


class MessageItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: TextParts
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        return "".join(part.text for part in self.content)


class FunctionCallItem(BaseModel):
    """A call an earlier response made, passed back in."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(BaseModel):
    """The result of a call, for the model to read."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: TextParts
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        return "".join(part.text for part in self.output)


class ReasoningItem(BaseModel):
    """An earlier response's reasoning, passed back in: harmony drops past reasoning, and so do we."""

    model_config = ConfigDict(extra="allow")

    type: Literal["reasoning"]


class OtherItem(BaseModel):
    """Any other input item (item references, built-in tool calls): refused, naming its type."""

    model_config = ConfigDict(extra="allow")

    type: str

    @field_validator("type")
    @classmethod
    def _refused(cls, value: str) -> str:
        raise _unsupported(
            "input items of type {type} are not supported; use message, function_call, "
            "function_call_output or reasoning items",
            type=value,
        )


ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")


def _item_type(item: Any) -> str:
    """The union tag of an input item (app/errors.py leaves UNION_TAG_PREFIX tags out of a param)."""
    kind = item.get("type", "message") if isinstance(item, dict) else getattr(item, "type", "other")
    return UNION_TAG_PREFIX + (kind if kind in ITEM_TYPES else "other")  # an easy message has no type


InputItem = Annotated[
    Annotated[MessageItem, Tag(UNION_TAG_PREFIX + "message")]
    | Annotated[FunctionCallItem, Tag(UNION_TAG_PREFIX + "function_call")]
    | Annotated[FunctionCallOutputItem, Tag(UNION_TAG_PREFIX + "function_call_output")]
    | Annotated[ReasoningItem, Tag(UNION_TAG_PREFIX + "reasoning")]
    | Annotated[OtherItem, Tag(UNION_TAG_PREFIX + "other")],
    Discriminator(_item_type),
]


class ResponseTool(BaseModel):
    """A function tool, in the Responses API's flat shape."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str = ""
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # accepted; the arguments are checked as JSON, not against the schema

    @field_validator("type")
    @classmethod
    def _functions_only(cls, value: str) -> str:
        if value != "function":
            raise _unsupported(
                "only function tools are supported, not {type} (built-in tools such as web search, "
                "file search, code interpreter, or gpt-oss's browser and python tools are not served)",
                type=value,
            )
        return value


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    name: str = ""

    @field_validator("type")
    @classmethod
    def _a_function(cls, value: str) -> str:
        if value != "function":
            raise _unsupported("tool_choice may name a function only, not {type}", type=value)
        return value


class ReasoningOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None

    @field_validator("effort")
    @classmethod
    def _gptoss_effort(cls, value: str | None) -> str | None:
        if value not in (None, "low", "medium", "high"):
            raise _unsupported("gpt-oss reasons with effort low, medium or high, not {effort}", effort=value)
        return value

    @field_validator("summary", "generate_summary")
    @classmethod
    def _no_summaries(cls, value: str | None) -> str | None:
        if value is not None:
            raise _unsupported(
                "reasoning summaries are not made: the reasoning comes whole, as reasoning items"
            )
        return value


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str

    @field_validator("type")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        if value != "text":
            raise _unsupported("only the text format is supported, not {type}", type=value)
        return value


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = None


class ResponseCreate(BaseModel):
    """POST /v1/responses. Parameters we cannot honour are refused, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: Annotated[list[InputItem], Field(min_length=1), BeforeValidator(_as_user_message)]
    instructions: str | None = None
    previous_response_id: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    tools: list[ResponseTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None  # gpt-oss makes one call a turn, which satisfies both
    reasoning: ReasoningOptions | None = None
    text: TextOptions | None = None
    stream: bool = False
    store: bool = True
    background: bool = False
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["disabled"] | None = None  # "auto" would drop context silently
    include: list[str] | None = None
    top_logprobs: int | None = None
    cache: bool | None = None  # false: not answered from the response cache (see JobCreate.cache)
    service_tier: ServiceTier | None = None  # the job's priority (app/queue.py SERVICE_TIER_PRIORITY)

    @field_validator("include")
    @classmethod
    def _nothing_to_include(cls, value: list[str] | None) -> list[str] | None:
        if value:
            raise _unsupported(
                "nothing can be included ({items}): reasoning comes whole, unencrypted", items=value
            )
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise _unsupported("logprobs are not supported; omit top_logprobs or use 0")
        return value

    @field_validator("background")
    @classmethod
    def _background_is_stored(cls, background: bool, info: ValidationInfo) -> bool:
        if background and info.data.get("store") is False:
            raise PydanticCustomError(
                "background_needs_store", "background responses must be stored (store=true)"
            )
        return background

    @property
    def effort(self) -> str | None:
        return self.reasoning.effort if self.reasoning else None
