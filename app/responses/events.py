"""A job's event log as the Responses API's stream: response.created, output items opened, their deltas,
closed, then response.completed (or .incomplete, .failed, .cancelled) with the stored response.

The events are a function of the job's event log alone, so a stream read again (GET with stream=true)
gives the same events with the same sequence numbers; `starting_after` resumes after one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.responses.render import (
    call_item,
    message_item,
    reasoning_item,
    response_json,
    status_of,
    text_part,
)

FINAL_EVENT = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.cancelled",
}


class ResponseEvents:
    """Turns job events into Responses stream events (each a dict with `type` and `sequence_number`)."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.sequence = 0
        self.items: list[dict[str, Any]] = []  # open or closed, in output order
        self.open: dict[str, Any] | None = None  # the item receiving deltas
        self.texts: dict[str, str] = {}  # item id -> text so far
        self.calls: dict[int, dict[str, Any]] = {}  # engine call index -> item

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        response = response_json({**self.job, "status": "queued"})
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response={**response, "status": "in_progress"}),
        ]

    def delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if data.get("reasoning"):
            events += self._text("reasoning", data["reasoning"])
        if data.get("content"):
            events += self._text("message", data["content"])
        for part in data.get("tool_calls") or ():
            events += self._call_part(part)
        return events

    def _opening(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close_open()
        self.items.append(item)
        self.open = item
        self.texts[item["id"]] = ""
        return events + [self._event("response.output_item.added", output_index=self._index(item), item=item)]

    def _index(self, item: dict[str, Any]) -> int:
        return next(i for i, known in enumerate(self.items) if known["id"] == item["id"])

    def _text(self, kind: str, text: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self.open is None or self.open["type"] != kind:
            item = (reasoning_item if kind == "reasoning" else message_item)(
                self.job, "", status="in_progress"
            )
            item["content"] = []
            events += self._opening(item)
            part = {"type": "reasoning_text", "text": ""} if kind == "reasoning" else text_part("")
            events.append(self._event("response.content_part.added", **self._where(item), part=part))
        assert self.open is not None
        self.texts[self.open["id"]] += text
        kind_delta = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra: dict[str, Any] = {} if kind == "reasoning" else {"logprobs": []}
        return events + [self._event(kind_delta, **self._where(self.open), delta=text, **extra)]

    def _where(self, item: dict[str, Any], content: bool = True) -> dict[str, Any]:
        where = {"item_id": item["id"], "output_index": self._index(item)}
        return {**where, "content_index": 0} if content else where

    def _call_part(self, part: dict[str, Any]) -> list[dict[str, Any]]:
        index = part["index"]
        if "name" in part:
            item = call_item(self.job, index, {"id": part.get("id", ""), "name": part["name"]}, "in_progress")
            self.calls[index] = item
            return self._opening(item)
        item = self.calls[index]
        self.texts[item["id"]] += part["arguments"]
        return [
            self._event(
                "response.function_call_arguments.delta", **self._where(item, False), delta=part["arguments"]
            )
        ]

    def _close_open(self) -> list[dict[str, Any]]:
        item, self.open = self.open, None
        if item is None:
            return []
        text = self.texts[item["id"]]
        if item["type"] == "function_call":
            done = {**item, "arguments": text, "status": "completed"}
            return [
                self._event(
                    "response.function_call_arguments.done",
                    **self._where(item, False),
                    name=item["name"],
                    arguments=text,
                ),
                self._event("response.output_item.done", output_index=self._index(item), item=done),
            ]
        if item["type"] == "reasoning":
            done, part = reasoning_item(self.job, text), {"type": "reasoning_text", "text": text}
            closing = [self._event("response.reasoning_text.done", **self._where(item), text=text)]
        else:
            done, part = message_item(self.job, text), text_part(text)
            closing = [self._event("response.output_text.done", **self._where(item), text=text, logprobs=[])]
        return closing + [
            self._event("response.content_part.done", **self._where(item), part=part),
            self._event("response.output_item.done", output_index=self._index(item), item=done),
        ]

    def finish(self, stored: dict[str, Any]) -> list[dict[str, Any]]:
        """Close what is open, then the final event with the stored response."""
        events = self._close_open()
        response = response_json(stored)
        return events + [self._event(FINAL_EVENT[status_of(stored)], response=response)]


def response_events(
    job: dict[str, Any], job_events: Iterator[Any], stored: Any
) -> Iterator[dict[str, Any] | None]:
    """Responses events from `job_events` (the job's log, None on an idle poll, which passes through);
    `stored(job_id)` reads the finished job for the final event."""
    writer = ResponseEvents(job)
    yield from writer.start()
    for event in job_events:
        if event is None:
            yield None
        elif event.type == "delta":
            yield from writer.delta(event.data)
        elif event.is_terminal:
            yield from writer.finish(stored(job["id"]) or event.data)
            return
