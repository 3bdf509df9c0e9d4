"""A job as OpenAI's response object: status, output items (reasoning, message, function calls), usage.

Item ids are derived from the job's id, so a streamed response and the stored one name the same items.
Reasoning comes back as a reasoning item, never in the output text.
"""

from __future__ import annotations

from typing import Any

from app.responses.conversation import response_id

RESPONSE_STATUS = {
    "queued": "queued",
    "running": "in_progress",
    "succeeded": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}


def _suffix(job: dict[str, Any]) -> str:
    return response_id(job["id"]).removeprefix("resp_")


def reasoning_item_id(job: dict[str, Any]) -> str:
    return f"rs_{_suffix(job)}"


def message_item_id(job: dict[str, Any]) -> str:
    return f"msg_{_suffix(job)}"


def call_item_id(job: dict[str, Any], index: int) -> str:
    return f"fc_{_suffix(job)}_{index}"


def reasoning_item(job: dict[str, Any], text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}]
    return {
        "type": "reasoning",
        "id": reasoning_item_id(job),
        "summary": [],
        "content": content,
        "status": status,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(job: dict[str, Any], text: str, status: str = "completed") -> dict[str, Any]:
    content = [text_part(text)] if status == "completed" or text else []
    return {
        "type": "message",
        "id": message_item_id(job),
        "status": status,
        "role": "assistant",
        "content": content,
    }


def call_item(
    job: dict[str, Any], index: int, call: dict[str, Any], status: str = "completed"
) -> dict[str, Any]:
    item = {
        "type": "function_call",
        "id": call_item_id(job, index),
        "call_id": call.get("id", ""),
        "name": call.get("name", ""),
        "arguments": call.get("arguments", ""),
        "status": status,
    }
    if call.get("error"):
        item.update(status="incomplete", error=call["error"])
    return item


def output_items(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished job's output: its reasoning, its answer (unless it only calls), its runnable calls."""
    result = job.get("result") or {}
    items = []
    if result.get("reasoning"):
        items.append(reasoning_item(job, result["reasoning"]))
    calls = result.get("tool_calls") or []
    runnable = [(index, call) for index, call in enumerate(calls) if not call.get("error")]
    if result.get("content") or not runnable:
        items.append(message_item(job, result.get("content") or ""))
    items += [call_item(job, index, call) for index, call in runnable]
    return items


def status_of(job: dict[str, Any]) -> str:
    status = RESPONSE_STATUS.get(job["status"], "in_progress")
    if status == "completed" and (job.get("result") or {}).get("finish_reason") == "length":
        return "incomplete"
    return status


def usage_of(job: dict[str, Any]) -> dict[str, Any] | None:
    usage = job.get("usage")
    if usage is None:
        return None
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": usage.get("completion_tokens_details") or {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
    }


def response_json(job: dict[str, Any]) -> dict[str, Any]:
    """The response object of a job made by POST /v1/responses (its JSON, as app/jobs/render.py gives it)."""
    request = job["request"]
    options = request.get("response") or {}
    status = status_of(job)
    finished = status in ("completed", "incomplete", "failed", "cancelled")
    tools = [{**tool, "strict": False} for tool in request.get("tools") or ()]
    choice = request.get("tool_choice") or "auto"
    error = job.get("error")
    calls = (job.get("result") or {}).get("tool_calls") or []
    body = {
        "id": response_id(job["id"]),
        "object": "response",
        "created_at": job["created_at"],
        "completed_at": job["finished_at"] if status == "completed" else None,
        "status": status,
        "background": options.get("background", False),
        "error": {"code": "server_error", "message": error.get("message", "")} if error else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": options.get("instructions"),
        "max_output_tokens": request.get("max_tokens"),
        "model": (job.get("tags") or {}).get("model_id") or options.get("model") or job["profile"],
        "output": output_items(job) if finished and status != "failed" else [],
        "parallel_tool_calls": True,
        "previous_response_id": options.get("previous_response_id"),
        "reasoning": {"effort": request.get("reasoning_effort"), "summary": None},
        "store": options.get("store", True),
        "temperature": request.get("temperature"),
        "text": {"format": {"type": "text"}},
        "tool_choice": choice,
        "tools": tools,
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": usage_of(job) if finished else None,
        "user": None,
        "metadata": request.get("metadata") or {},
        "job_id": job["id"],
        "tags": job.get("tags"),
    }
    invalid = [call for call in calls if call.get("error")]
    if invalid:
        body["invalid_tool_calls"] = invalid  # made by the model, but not runnable as written
    return body
