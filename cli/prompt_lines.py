"""Simple prompt files for `gptoss batch run`: turn each line into a Batch API request line, streaming."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

CHAT_COMPLETIONS = "/v1/chat/completions"  # (not imported from batch_lines: the CLI stays light)
# fields a {"prompt": ...} or {"messages": ...} line may set for itself
PER_LINE_FIELDS = ("model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
                   "reasoning_effort", "metadata")  # fmt: skip


class PromptFileError(ValueError):
    """A line of the prompt file cannot become a request."""


@dataclass(frozen=True)
class RequestDefaults:
    """The body fields every converted request gets unless its line sets them."""

    model: str
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # max_tokens, temperature, reasoning_effort...


@dataclass(frozen=True)
class ConvertedLine:
    input_line: int  # 1-based line of the prompt file
    custom_id: str
    request: dict[str, Any]  # {custom_id, method, url, body}


def _messages(document: dict[str, Any], defaults: RequestDefaults, where: str) -> list[Any]:
    if isinstance(document.get("messages"), list):
        return document["messages"]
    if isinstance(document.get("prompt"), str):
        system = [{"role": "system", "content": defaults.system}] if defaults.system else []
        return [*system, {"role": "user", "content": document["prompt"]}]
    raise PromptFileError(f"{where}: a JSON line needs a 'prompt' string or a 'messages' list")


def convert_line(text: str, line: int, defaults: RequestDefaults) -> ConvertedLine | None:
    """One prompt-file line as a Batch API line; None for a blank line."""
    if not text.strip():
        return None
    document: Any = None
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None  # a plain prompt that happens to start with "{"
    if not isinstance(document, dict):
        document = {"prompt": text.rstrip("\r\n")}
    if "body" in document and "url" in document:  # already a Batch API line
        custom_id = str(document.get("custom_id", ""))
        return ConvertedLine(line, custom_id, document)
    body: dict[str, Any] = {"model": defaults.model, **defaults.options}
    body["messages"] = _messages(document, defaults, f"line {line}")
    body.update({key: document[key] for key in PER_LINE_FIELDS if key in document})
    custom_id = str(document.get("custom_id") or document.get("id") or f"line-{line}")
    request = {"custom_id": custom_id, "method": "POST", "url": CHAT_COMPLETIONS, "body": body}
    return ConvertedLine(line, custom_id, request)


def convert_prompt_file(source: IO[str], sink: IO[str], defaults: RequestDefaults) -> Iterator[ConvertedLine]:
    """Write each line of `source` to `sink` as a request line; yields each line's ids (not its body)."""
    for line, text in enumerate(source, start=1):
        converted = convert_line(text, line, defaults)
        if converted is not None:
            sink.write(json.dumps(converted.request, ensure_ascii=False) + "\n")
            yield ConvertedLine(converted.input_line, converted.custom_id, {})


def answer_line(result: dict[str, Any]) -> dict[str, Any]:
    """A results-file line from an output or error file line: custom_id with the answer or the error."""
    response = result.get("response") or {}
    body = response.get("body") or {}
    if response.get("status_code") == 200 and body.get("choices"):
        message = body["choices"][0].get("message") or {}
        answer = {"custom_id": result.get("custom_id"), "content": message.get("content")}
        reasoning = message.get("reasoning") or message.get("reasoning_content")
        if reasoning:
            answer["reasoning"] = reasoning
        return {
            **answer,
            "finish_reason": body["choices"][0].get("finish_reason"),
            "usage": body.get("usage"),
        }
    error = result.get("error") or body.get("error") or {"message": f"HTTP {response.get('status_code')}"}
    return {
        "custom_id": result.get("custom_id"),
        "error": {"code": error.get("code"), "message": error.get("message")},
    }
