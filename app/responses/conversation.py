"""A Responses request as a job's conversation: instructions, the previous response's turns, this input.

As OpenAI does, a previous response's instructions are not carried over (only its messages and its
output are), and passed-back reasoning items are dropped (harmony renders no reasoning of past turns).
"""

from __future__ import annotations

from typing import Any

from app.errors import ApiError
from app.models import Job
from app.queue import SERVICE_TIER_PRIORITY
from app.responses.schemas import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    MessageItem,
    ResponseCreate,
)

RESPONSE_PREFIX = "resp_"
JOB_PREFIX = "job_"


def response_id(job_id: str) -> str:
    return RESPONSE_PREFIX + job_id.removeprefix(JOB_PREFIX)


def job_id_of(response_id: str) -> str | None:
    """The job behind a response id; None for an id that is not a response's."""
    if not response_id.startswith(RESPONSE_PREFIX):
        return None
    return JOB_PREFIX + response_id.removeprefix(RESPONSE_PREFIX)


def output_messages(job: Job) -> list[dict[str, Any]]:
    """A finished response's output as the assistant turn that continues it: its runnable calls, or its
    answer."""
    calls = [
        {"id": c["id"], "name": c["name"], "arguments": c["arguments"]}
        for c in job.tool_calls or ()
        if not c.get("error")
    ]
    if calls:
        return [{"role": "assistant", "content": "", "tool_calls": calls}]
    return [{"role": "assistant", "content": job.content}] if job.content else []


def previous_turns(job: Job) -> list[dict[str, Any]]:
    """The previous response's conversation, less its instructions, then its output."""
    messages = list(job.request.get("messages") or ())
    if (job.request.get("response") or {}).get("instructions") is not None:
        messages = messages[1:]
    return messages + output_messages(job)


def input_messages(items: list[InputItem], earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The input as job messages; a call's output names the function of the call it answers."""
    called = {call["id"]: call["name"] for m in earlier for call in m.get("tool_calls") or ()}
    held: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if isinstance(item, MessageItem):
            held.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "name": item.name, "arguments": item.arguments}
            called[item.call_id] = item.name
            last = held[-1] if held else None
            if last is not None and last.get("tool_calls") and not last["content"]:
                last["tool_calls"].append(call)  # calls made in one turn
            else:
                held.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            if item.call_id not in called:
                raise ApiError(
                    400,
                    f"input[{index}].call_id {item.call_id!r} answers no function call of this input or "
                    "of the previous response",
                    param=f"input[{index}].call_id",
                    code="unknown_call_id",
                )
            name = called[item.call_id]
            held.append({"role": "tool", "content": item.text(), "name": name, "tool_call_id": item.call_id})
    return held


def job_body(create: ResponseCreate, profile: str, previous: Job | None) -> dict[str, Any]:
    """The POST /v1/jobs body equivalent to a Responses request (validated again as a JobCreate)."""
    earlier = previous_turns(previous) if previous is not None else []
    messages = (
        [{"role": "developer", "content": create.instructions}] if create.instructions is not None else []
    )
    messages += earlier + input_messages(create.input, earlier)
    body: dict[str, Any] = {
        "messages": messages,
        "profile": profile,
        "response": {
            "model": create.model,
            "instructions": create.instructions,
            "previous_response_id": create.previous_response_id,
            "store": create.store,
            "background": create.background,
        },
    }
    if create.tools:
        body["tools"] = [tool.model_dump(exclude={"strict"}, exclude_none=True) for tool in create.tools]
    choice = create.tool_choice
    optional = {
        "max_tokens": create.max_output_tokens,
        "temperature": create.temperature,
        "top_p": create.top_p,
        "reasoning_effort": create.effort,
        "metadata": create.metadata,
        "cache": create.cache,
        "priority": SERVICE_TIER_PRIORITY.get(create.service_tier or ""),
        "tool_choice": choice if isinstance(choice, str) else choice and choice.model_dump(),
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    body["response"] = {k: v for k, v in body["response"].items() if v is not None}
    return body
