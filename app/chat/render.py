"""A finished job as chat completions show it: the assistant message, its calls, finish_reason, usage.

Served by POST /v1/chat/completions and written to batch output files alike.
"""

from __future__ import annotations

from typing import Any

from app.chat.schemas import reasoning_fields


def completion_id(job_id: str) -> str:
    return "chatcmpl-" + job_id.removeprefix("job_")


def usage_of(done: dict[str, Any]) -> dict[str, Any]:
    nothing = {"reasoning_tokens": 0}
    return done.get("usage") or {
        "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "completion_tokens_details": nothing,
    }  # fmt: skip


def finish_reason_of(done: dict[str, Any]) -> str:
    reason = (done.get("result") or {}).get("finish_reason") or "stop"
    if reason == "tool_calls" and not chat_tool_calls(done)[0]:
        return "stop"  # every call it made is broken: nothing for the client to run
    return reason if reason in ("stop", "length", "tool_calls") else "stop"


def chat_tool_calls(done: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The job's calls as chat's `tool_calls`, and those that cannot run as written (`invalid_tool_calls`,
    each with its `error`: arguments that are not a JSON object, a function never offered)."""
    calls = (done.get("result") or {}).get("tool_calls") or []
    valid = [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in calls
        if not c.get("error")
    ]
    return valid, [c for c in calls if c.get("error")]


def chat_message(done: dict[str, Any]) -> dict[str, Any]:
    """The assistant message of a finished job."""
    result = done.get("result") or {}
    valid, invalid = chat_tool_calls(done)
    content = result.get("content") or ""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content or (None if valid else ""),
        "refusal": None,
    }
    if valid:
        message["tool_calls"] = valid
    if invalid:
        message["invalid_tool_calls"] = invalid
    if result.get("reasoning"):
        message.update(reasoning_fields(result["reasoning"]))
    return message


def tool_call_deltas(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Engine tool-call pieces as chat.completion.chunk `tool_calls` deltas."""
    deltas = []
    for part in parts:
        if "name" in part:
            function = {"name": part["name"], "arguments": ""}
            deltas.append(
                {"index": part["index"], "id": part["id"], "type": "function", "function": function}
            )
        else:
            deltas.append({"index": part["index"], "function": {"arguments": part["arguments"]}})
    return deltas


def chat_completion(done: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat.completion object of a finished job (its JSON); `model` when no worker's tag names one."""
    return {
        "id": completion_id(done["id"]),
        "object": "chat.completion",
        "created": done["created_at"],
        "model": (done.get("tags") or {}).get("model_id") or model,  # the model that really answered
        "choices": [
            {
                "index": 0,
                "message": chat_message(done),
                "finish_reason": finish_reason_of(done),
                "logprobs": None,
            }
        ],
        "usage": usage_of(done),
        "job_id": done["id"],
        "tags": done.get("tags"),
    }
