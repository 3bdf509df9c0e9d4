"""HTTP helpers every resource shares: the JSON body, a list page, and Server-Sent Events."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from flask import Response, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import ApiError

MAX_JSON_DEPTH = 64  # no request this API takes nests deeper; the parser would recurse far deeper
LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # "\ud800"-style escapes in the raw text


def json_body() -> Any:
    """The parsed JSON body; 400 when it is not JSON, nests too deep or holds a lone surrogate (text
    that is no Unicode), 413 above MAX_CONTENT_LENGTH, a chunked body (no Content-Length) too."""
    raw = _whole_body()
    g.gptoss_raw_body = raw  # what app/jobs/waiting.py tells a retried call by
    body, deep = None, False
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError:  # nested past what the parser can follow
        deep = True
    if deep or _too_deep(body):
        raise ApiError(
            400, f"The request body nests deeper than {MAX_JSON_DEPTH} levels.", code="json_too_deep"
        )
    if LONE_SURROGATE.search(raw.decode("utf-8", "replace")):
        _refuse_lone_surrogates(body, "")
    return body


MAX_URL_BYTES = 8192  # gunicorn is told to let longer request lines through (gunicorn.conf.py)


def refuse_long_urls() -> None:
    """414 in the API's JSON shape for a URL longer than MAX_URL_BYTES (before any view runs)."""
    if len(request.full_path) > MAX_URL_BYTES:
        raise ApiError(414, f"The URL is longer than {MAX_URL_BYTES} bytes.", code="uri_too_long")


def _whole_body() -> bytes:
    """The body; 413 above max_content_length. werkzeug checks a Content-Length up front, but would cut a
    chunked body (no Content-Length) at the limit without a word: that one is read here, past it by a byte."""
    limit = request.max_content_length
    if (
        request.content_length is not None
        or not request.environ.get("wsgi.input_terminated")
        or limit is None
    ):
        return request.get_data(cache=False)
    raw = request.environ["wsgi.input"].read(limit + 1)
    if len(raw) > limit:
        raise RequestEntityTooLarge(f"The request body is larger than {limit} bytes.")
    return raw


def _too_deep(body: Any) -> bool:
    """Whether lists and objects nest deeper than MAX_JSON_DEPTH (walked without recursion; the cost
    is the number of containers, not of bytes)."""
    pending = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _refuse_lone_surrogates(value: Any, path: str) -> None:
    """400 naming the first string (or key) that holds a lone surrogate, which no text can carry."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                400, f"{path or 'body'} holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text.",
                param=path or None, code="invalid_unicode",
            ) from None  # fmt: skip
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_lone_surrogates(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            _refuse_lone_surrogates(key, where)
            _refuse_lone_surrogates(item, where)


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
