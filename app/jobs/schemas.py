"""Request bodies, declared as pydantic models: they validate input and name the bad field."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from app.jobs.defaults import SamplingDefaults
from app.profiles import Profile
from app.routing.auto import (
    AUTO_PROFILE,
    HINT_KEY,
    MAX_ROUTE_REASON_CHARS,
    ProfileRouter,
    RouteDecision,
    RouteRequest,
)
from engine.types import GenerationRequest, ToolChoice

MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
StopString = Annotated[str, StringConstraints(min_length=1)]


def _stop_as_list(value: Any) -> Any:
    """`stop` may be one string or a list of strings; store it as a list."""
    return [value] if isinstance(value, str) else value


FunctionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ToolCallIn(BaseModel):
    """A function call an earlier assistant turn made, passed back in."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, max_length=255)
    name: FunctionName
    arguments: str  # a JSON object, as the model wrote it


class Message(BaseModel):
    """A conversation message; a `tool` message answers the assistant's call `tool_call_id` to `name`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCallIn] | None = Field(default=None, min_length=1)
    name: FunctionName | None = Field(default=None, validate_default=True)
    tool_call_id: str | None = None

    @field_validator("tool_calls")
    @classmethod
    def _only_the_assistant_calls(cls, calls: Any, info: ValidationInfo) -> Any:
        if calls is not None and info.data.get("role") != "assistant":
            raise PydanticCustomError("tool_calls_role", "only assistant messages carry tool_calls")
        return calls

    @field_validator("name")
    @classmethod
    def _tool_results_name_the_function(cls, name: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("role") == "tool" and name is None:
            raise PydanticCustomError("missing", "a tool message names the function it answers")
        return name


class FunctionTool(BaseModel):
    """A function the model may call: `parameters` is a JSON schema of its arguments."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"] = "function"
    name: FunctionName
    description: str | None = Field(default=None, max_length=8192)
    parameters: dict[str, Any] | None = None

    def as_engine_tool(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type"}, exclude_none=True)


class NamedToolChoice(BaseModel):
    """tool_choice naming one function: the answer is a call to it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"]
    name: FunctionName


class ResponseOptions(BaseModel):
    """What a job made by POST /v1/responses keeps of that API (app/responses/): its instructions are
    the job's first message, and the rest says how the response is shown and continued."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=255)  # as the client named it
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, max_length=64)
    store: bool = True  # false: not shown by GET /v1/responses/{id}, nor continued
    background: bool = False


class JobCreate(BaseModel):
    """The body of POST /v1/jobs. Validate with context={"profiles": {...}, "default_profile": ...}.

    Profile `auto` needs a ProfileRouter in the context ("router"); `route` then picks the profile
    that runs the job (`queue_profile`; the stored request keeps "auto"). Its max_tokens default is the
    smallest limit among the profiles it may choose, so the answer's budget never depends on load.
    Then `fill_defaults` gives what is left out the routed profile's sampling defaults and the date.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    # declared before `messages`, whose validator needs it
    prompt: str | None = Field(default=None, min_length=1)
    messages: list[Message] | None = Field(default=None, min_length=1, validate_default=True)
    profile: str = Field(default="", validate_default=True)
    max_tokens: int | None = Field(default=None, ge=1, validate_default=True)
    # temperature, top_p and reasoning_effort left out: the routed profile's (fill_defaults)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    # max_length sits on the list itself: on the optional it would be applied to an explicit null (a 500)
    stop: Annotated[
        Annotated[list[StopString], Field(max_length=4)] | None, BeforeValidator(_stop_as_list)
    ] = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    current_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")  # default: submit's (UTC)
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)
    # false: neither served from nor stored in the response cache; left out, only a request that asks for
    # the same answer every time (a seed, or temperature 0 given in it) uses the cache (fill_defaults)
    cache: bool | None = None
    tools: list[FunctionTool] | None = Field(default=None, min_length=1, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None  # default auto
    response: ResponseOptions | None = None  # set by POST /v1/responses
    # the lane it waits in (app/queue.py): high before normal before low before batch lines
    priority: Literal["low", "normal", "high"] | None = None
    _route: RouteDecision | None = PrivateAttr(default=None)  # set when profile is "auto"
    _as_given: dict[str, Any] | None = PrivateAttr(default=None)  # the request before fill_defaults

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

    @field_validator("tool_choice")
    @classmethod
    def _a_choice_among_the_tools(cls, choice: Any, info: ValidationInfo) -> Any:
        tools = info.data.get("tools") or []
        if isinstance(choice, NamedToolChoice) and choice.name not in {tool.name for tool in tools}:
            raise PydanticCustomError(
                "unknown_tool",
                "tool_choice names {name}, which is not among the tools",
                {"name": choice.name},
            )
        if choice == "required" and not tools:
            raise PydanticCustomError("no_tools", "tool_choice 'required' needs tools")
        return choice

    @field_validator("current_date")
    @classmethod
    def _a_real_date(cls, current_date: str | None) -> str | None:
        if current_date is not None:
            try:
                date.fromisoformat(current_date)
            except ValueError:
                raise PydanticCustomError("invalid_date", "current_date must be a date, YYYY-MM-DD") from None
        return current_date

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str, info: ValidationInfo) -> str:
        profiles = _profiles(info)
        profile = profile or (info.context or {}).get("default_profile") or next(iter(profiles))
        if profile == AUTO_PROFILE and _router(info) is not None:
            return profile
        if profile not in profiles:
            choices = sorted(profiles) + ([AUTO_PROFILE] if _router(info) is not None else [])
            raise PydanticCustomError(
                "unknown_profile",
                "unknown profile '{profile}'; choose one of {choices}",
                {"profile": profile, "choices": choices},
            )
        return profile

    @field_validator("max_tokens")
    @classmethod
    def _within_profile_limit(cls, max_tokens: int | None, info: ValidationInfo) -> int:
        if info.data.get("profile") == AUTO_PROFILE:
            return _within_auto_limits(max_tokens, info)
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

    def route(self, router: ProfileRouter | None) -> None:
        """Pick the profile of an `auto` job with the router (it reads the current load): the submit
        path calls this once, after validation; validation itself only checks."""
        if self.profile == AUTO_PROFILE and self._route is None and router is not None and router.candidates:
            hint = (self.metadata or {}).get(HINT_KEY)
            request = RouteRequest.of(
                self.messages, self.prompt, reasoning_effort=self.reasoning_effort, hint=hint,
                max_tokens=self.max_tokens,
            )  # fmt: skip
            self._route = router(request)

    def fill_defaults(self, defaults: SamplingDefaults, current_date: str) -> None:
        """Fill in what the request leaves out with its routed profile's defaults and the submit's date.

        The submit path calls this once, after `route`, so that the stored request shows what runs.
        """
        if self._as_given is not None:
            return
        self._as_given = self.model_dump(mode="json", exclude_none=True)
        if self.cache is None:  # a profile's default temperature 0 is no request for a repeated answer
            self.cache = self.seed is not None or self.temperature == 0.0
        if self.temperature is None:
            self.temperature = defaults.temperature
        if self.top_p is None:
            self.top_p = defaults.top_p
        self.reasoning_effort = self.reasoning_effort or defaults.reasoning_effort
        self.current_date = self.current_date or current_date

    def replay_request(self) -> dict[str, Any]:
        """What tells a replayed submit from a different one: the request as validated, before the
        defaults that depend on the profile `auto` chose and on the day."""
        if self._as_given is not None:
            return self._as_given
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def queue_profile(self) -> str:
        """The profile whose queue runs the job: the one asked for, or the one `auto` chose."""
        if self._route is not None:
            return self._route.profile
        if self.profile == AUTO_PROFILE:
            raise RuntimeError("an `auto` job is routed (JobCreate.route) before its profile is read")
        return self.profile

    def routing_columns(self) -> dict[str, str | None]:
        """The job row's routed_from and route_reason."""
        route = self._route
        return {
            "routed_from": AUTO_PROFILE if route is not None else None,
            "route_reason": route.reason[:MAX_ROUTE_REASON_CHARS] if route is not None else None,
        }


def _router(info: ValidationInfo) -> ProfileRouter | None:
    router = (info.context or {}).get("router")
    return router if router is not None and router.candidates else None


def _within_auto_limits(max_tokens: int | None, info: ValidationInfo) -> int:
    """`auto` may choose any profile whose limit fits: max_tokens must fit one; defaults to the smallest."""
    router = _router(info)
    assert router is not None  # the profile validator let "auto" through
    limits = router.max_tokens_limits()
    if max_tokens is None:
        return min(limits.values())
    if max_tokens > max(limits.values()):
        raise PydanticCustomError(
            "max_tokens_above_limit",
            "max_tokens {max_tokens} is above the limit {limit} of every profile auto may choose",
            {"max_tokens": max_tokens, "limit": max(limits.values())},
        )
    return max_tokens


def _profiles(info: ValidationInfo) -> dict[str, Profile]:
    context = info.context or {}
    if "profiles" not in context:
        raise RuntimeError("JobCreate must be validated with context={'profiles': ...}")
    return context["profiles"]


def generation_request(request: dict[str, Any], job_id: str | None = None) -> GenerationRequest:
    """The engine's view of a validated job request (JobCreate dumped, as the jobs row stores it)."""
    messages = request.get("messages")
    choice = request.get("tool_choice") or "auto"
    named = choice.get("name") if isinstance(choice, dict) else None
    return GenerationRequest(
        messages=tuple(messages) if messages is not None else None,
        prompt=request.get("prompt"),
        max_tokens=request["max_tokens"],
        temperature=request.get("temperature", 0.0),  # rows stored before defaults were filled in
        top_p=request.get("top_p", 1.0),
        seed=request.get("seed"),
        stop=tuple(request.get("stop") or ()),
        reasoning_effort=request.get("reasoning_effort"),
        current_date=request.get("current_date"),
        tools=tuple(
            {key: value for key, value in tool.items() if key != "type"}
            for tool in request.get("tools") or ()
        ),
        tool_choice="required" if named else cast(ToolChoice, choice),
        tool_name=named,
        request_id=job_id,
    )
