"""HTTP helpers every resource shares: the JSON body, a list page, and Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Response, jsonify, request

from app.errors import ApiError


def json_body() -> Any:
    """The parsed JSON body; 400 when it is not JSON (413 comes from MAX_CONTENT_LENGTH)."""
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from exc


def list_page(data: list[dict[str, Any]], has_more: bool) -> Response:
    """An OpenAI-style list: {object: list, data, first_id, last_id, has_more}."""
    return jsonify(
        object="list",
        data=data,
        first_id=data[0]["id"] if data else None,
        last_id=data[-1]["id"] if data else None,
        has_more=has_more,
    )


def sse(event_id: str | None, event: str | None, data: Any) -> str:
    """One SSE message; `data` is JSON-encoded unless it is already a string."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return "\n".join(lines) + "\n\n"


def sse_response(stream: Iterator[str]) -> Response:
    response = Response(stream, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response
