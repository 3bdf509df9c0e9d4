"""Request bodies, declared as pydantic models: they validate input and name the bad field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from app.profiles import Profile

MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
StopString = Annotated[str, StringConstraints(min_length=1)]


def _stop_as_list(value: Any) -> Any:
    """`stop` may be one string or a list of strings; store it as a list."""
    return [value] if isinstance(value, str) else value


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class JobCreate(BaseModel):
    """The body of POST /v1/jobs. Validate with context={"profiles": {...}, "default_profile": ...}."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # declared before `messages`, whose validator needs it
    prompt: str | None = Field(default=None, min_length=1)
    messages: list[Message] | None = Field(default=None, min_length=1, validate_default=True)
    profile: str = Field(default="", validate_default=True)
    max_tokens: int | None = Field(default=None, ge=1, validate_default=True)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: Annotated[list[StopString] | None, BeforeValidator(_stop_as_list), Field(max_length=4)] = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)

    @field_validator("messages")
    @classmethod
    def _exactly_one_of_messages_or_prompt(cls, messages: Any, info: ValidationInfo) -> Any:
        if "prompt" not in info.data:  # prompt itself was invalid; that error is enough
            return messages
        if messages is None and info.data["prompt"] is None:
            raise PydanticCustomError("missing", "either 'messages' or 'prompt' is required")
        if messages is not None and info.data["prompt"] is not None:
            raise PydanticCustomError("messages_and_prompt", "give either 'messages' or 'prompt', not both")
        return messages

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str, info: ValidationInfo) -> str:
        profiles = _profiles(info)
        profile = profile or (info.context or {}).get("default_profile") or next(iter(profiles))
        if profile not in profiles:
            raise PydanticCustomError(
                "unknown_profile",
                "unknown profile '{profile}'; choose one of {choices}",
                {"profile": profile, "choices": sorted(profiles)},
            )
        return profile

    @field_validator("max_tokens")
    @classmethod
    def _within_profile_limit(cls, max_tokens: int | None, info: ValidationInfo) -> int:
        profile = _profiles(info).get(info.data.get("profile", ""))
        if profile is None:  # the profile error is reported instead
            return max_tokens or 1
        if max_tokens is None:
            return profile.max_tokens
        if max_tokens > profile.max_tokens:
            raise PydanticCustomError(
                "max_tokens_above_limit",
                "max_tokens {max_tokens} is above the limit {limit} of profile {profile}",
                {"max_tokens": max_tokens, "limit": profile.max_tokens, "profile": profile.name},
            )
        return max_tokens


def _profiles(info: ValidationInfo) -> dict[str, Profile]:
    context = info.context or {}
    if "profiles" not in context:
        raise RuntimeError("JobCreate must be validated with context={'profiles': ...}")
    return context["profiles"]
