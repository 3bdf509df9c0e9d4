"""POST /tokenize and /detokenize in vLLM's shape, with the tokenizer of the model a profile serves.

Served at the root, as vLLM serves them, behind the same API-key check as every route (app/auth.py).
`messages` are rendered exactly as a job's prompt is (engine.prompt.render_prompt, with the
profile's default reasoning effort and today's date filled in as at submit), so `tokens` are the
ids the engine reads; `add_generation_prompt: false` leaves out the assistant's header. A `prompt`
is tokenized as raw text with no chat template, its special-token text as ordinary text. The
tokenizer is the one the API already reads per profile to check context lengths
(app/jobs/budget.py); where it cannot be read, these answer 503, never an estimate.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from app.chat.schemas import ChatMessages, named_profile
from app.errors import ApiError
from app.http import json_body
from app.jobs.budget import TokenCounter, token_counter
from app.ops.served_models import served_model_ids
from app.routing.auto import AUTO_PROFILE
from app.services import services
from engine.prompt import encode_text, today_utc
from engine.types import GenerationRequest, ReasoningEffort

bp = Blueprint("tokenize", __name__)


class TokenizeRequest(BaseModel):
    """POST /tokenize: chat `messages` (rendered as a job's prompt) or a raw `prompt`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)  # as chat completions take it: a profile or a model id
    prompt: str | None = None  # declared before `messages`, whose validator needs it
    messages: ChatMessages | None = Field(default=None, validate_default=True)
    add_generation_prompt: bool = True  # messages only; false: the conversation alone
    reasoning_effort: ReasoningEffort | None = None  # messages only; default: the profile's

    @field_validator("messages")
    @classmethod
    def _exactly_one_of_messages_or_prompt(cls, messages: Any, info: ValidationInfo) -> Any:
        if "prompt" not in info.data:  # prompt itself was invalid; that error is enough
            return messages
        if (messages is None) == (info.data["prompt"] is None):
            raise PydanticCustomError("messages_or_prompt", "give either 'messages' or 'prompt'")
        return messages


class DetokenizeRequest(BaseModel):
    """POST /detokenize: token ids of the profile's model."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    tokens: list[StrictInt]


@bp.post("/tokenize")
def tokenize() -> Response:
    """The token ids of a prompt, exactly as the engine reads them (vLLM's /tokenize)."""
    body = TokenizeRequest.model_validate(json_body())
    profile = tokenizer_profile(body.model)
    request = chat_request(body, profile) if body.messages is not None else None
    counter = available_counter(profile)
    if request is None:
        with counter.lock:  # a fast tokenizer is not thread-safe
            tokens = encode_text(counter.tokenizer, body.prompt or "")
    else:
        tokens = counter.prompt_ids(request, body.add_generation_prompt)
    return jsonify(tokens=tokens, count=len(tokens), max_model_len=counter.context)


@bp.post("/detokenize")
def detokenize() -> Response:
    """The text of token ids, special tokens kept (vLLM's /detokenize)."""
    body = DetokenizeRequest.model_validate(json_body())
    counter = available_counter(tokenizer_profile(body.model))
    with counter.lock:
        text = decode_ids(counter.tokenizer, body.tokens)
    return jsonify(prompt=text)


def tokenizer_profile(model: str) -> str:
    """The profile `model` names, as chat completions resolve it; `auto` has no one tokenizer."""
    profiles = services().profiles
    profile = named_profile(model, profiles, served_model_ids(services().redis, list(profiles)))
    if profile == AUTO_PROFILE:
        raise ApiError(400, "'auto' picks a profile per request; name a profile or its model.", param="model")
    return profile


def available_counter(profile: str) -> TokenCounter:
    """The profile's tokenizer and context; 503 where this server cannot read its tokenizer."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    counter = token_counter(app, profile)
    if counter.tokenizer is None:
        source = services().profiles[profile].model
        raise ApiError(
            503,
            f"The tokenizer of profile {profile} (model {source}) is not available on this server (yet), "
            "so its token ids cannot be given. Retry later.",
            type="server_error",
            code="tokenizer_unavailable",
        )
    return counter


def chat_request(body: TokenizeRequest, profile: str) -> GenerationRequest:
    """The engine's request for these messages, with what a job submitted now would get filled in."""
    assert body.messages is not None
    defaults = services().sampling_defaults(profile)
    return GenerationRequest(
        messages=tuple(m.as_job_message() for m in body.messages),
        reasoning_effort=body.reasoning_effort or defaults.reasoning_effort,
        current_date=today_utc(),
    )


def decode_ids(tokenizer: Any, tokens: list[int]) -> str:
    """Token ids as text, special tokens kept; 400 naming tokens[i], the first id not in the vocabulary."""
    check_token_ids(tokenizer, tokens)
    return str(tokenizer.decode(tokens, skip_special_tokens=False))


def check_token_ids(tokenizer: Any, tokens: list[int]) -> None:
    size = len(tokenizer)
    for index, token in enumerate(tokens):
        if not 0 <= token < size or tokenizer.convert_ids_to_tokens(token) is None:
            raise ApiError(
                400,
                f"tokens[{index}]: {token} is not a token id of this model (0 to {size - 1}).",
                param=f"tokens[{index}]",
                code="invalid_token_id",
            )
