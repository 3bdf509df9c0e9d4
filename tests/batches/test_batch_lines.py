"""Batch input validation: each bad line is reported with its 1-based number; good lines map onto jobs."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from app.batches.lines import BatchRequest, LineContext, LineError, read_requests
from app.profiles import Profile

PROFILES = {
    "latency_first": Profile(
        name="latency_first", model="openai/gpt-oss-20b", model_size="20b", gpu_mode="pipeline", max_batch=4,
        max_tokens=512,
    ),
    "quality_first": Profile(
        name="quality_first", model="openai/gpt-oss-120b", model_size="120b", gpu_mode="tensor", max_batch=1,
        max_tokens=2048,
    ),
}  # fmt: skip
CONTEXT = LineContext(PROFILES, {"latency_first": "HuggingFaceTB/SmolLM2-135M-Instruct"}, 5, 4096)


def request_line(custom_id: str = "r1", **body: Any) -> str:
    body = {"model": "latency_first", "messages": [{"role": "user", "content": "Hi"}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def read(data: bytes, context: LineContext = CONTEXT) -> list[BatchRequest | LineError]:
    return list(read_requests(io.BytesIO(data), context))


def errors_of(data: bytes, context: LineContext = CONTEXT) -> list[LineError]:
    return [result for result in read(data, context) if isinstance(result, LineError)]


def only_error(data: bytes) -> LineError:
    errors = errors_of(data)
    assert len(errors) == 1, errors
    return errors[0]


def test_good_lines_become_job_bodies_on_their_profile() -> None:
    lines = [
        request_line("a", max_completion_tokens=7, temperature=0.5, stop="\n", reasoning_effort="low"),
        request_line("b", model="openai/gpt-oss-120b", seed=3, metadata={"k": "v"}),
        request_line("c", model="HuggingFaceTB/SmolLM2-135M-Instruct", max_tokens=9),  # an announced model id
    ]
    results = read(("\n".join(lines) + "\n").encode())
    assert all(isinstance(result, BatchRequest) for result in results)
    a, b, c = results
    assert isinstance(a, BatchRequest) and isinstance(b, BatchRequest) and isinstance(c, BatchRequest)
    assert (a.line, a.custom_id, a.job.profile, a.job.max_tokens, a.job.stop) == (
        1,
        "a",
        "latency_first",
        7,
        ["\n"],
    )
    assert (b.line, b.job.profile, b.job.max_tokens, b.job.seed) == (2, "quality_first", 2048, 3)
    assert (c.line, c.job.profile, c.job.max_tokens) == (3, "latency_first", 9)


def test_a_bom_on_the_first_line_and_crlf_line_ends_are_accepted() -> None:
    data = b"\xef\xbb\xbf" + request_line("a").encode() + b"\r\n" + request_line("b").encode()
    assert [r.custom_id for r in read(data) if isinstance(r, BatchRequest)] == ["a", "b"]


@pytest.mark.parametrize(
    ("bad_line", "code", "param"),
    [
        ("{not json", "invalid_json_line", None),
        ('{"custom_id": "x", "temperature": NaN}', "invalid_json_line", None),
        ("[1, 2]", "invalid_json_line", None),
        ("   ", "blank_line", None),
        (json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}),
         "missing_required_parameter", "custom_id"),
        (json.dumps({"custom_id": "", "method": "POST", "url": "/v1/chat/completions", "body": {}}),
         "invalid_request", "custom_id"),
        (json.dumps({"custom_id": 7, "method": "POST", "url": "/v1/chat/completions", "body": {}}),
         "invalid_request", "custom_id"),
        (request_line().replace('"POST"', '"GET"'), "invalid_method", "method"),
        (request_line().replace("/v1/chat/completions", "/v1/embeddings"), "invalid_url", "url"),
        (request_line()[:-1] + ', "extra": 1}', "invalid_request", "extra"),
        (json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions"}),
         "missing_required_parameter", "body"),
        (request_line(messages=[]), "too_short", "body.messages"),
        (request_line(messages=[{"content": "x"}]), "missing_required_parameter", "body.messages[0].role"),
        (request_line(messages=[{"role": "bot", "content": "x"}]), "literal_error", "body.messages[0].role"),
        (request_line(model="gpt-4o"), "model_not_found", "body.model"),
        (request_line(max_tokens=513), "max_tokens_above_limit", "body.max_tokens"),
        (request_line(temperature=3), "less_than_equal", "body.temperature"),
        (request_line(stream=True), "invalid_request", "body.stream"),
        (request_line(n=2), "unsupported_parameter", "body.n"),
    ],
)  # fmt: skip
def test_a_bad_line_is_reported_with_its_line_number(bad_line: str, code: str, param: str | None) -> None:
    data = "\n".join([request_line("a"), bad_line, request_line("c")]).encode()
    error = only_error(data)
    assert (error.line, error.code, error.param) == (2, code, param), error
    assert error.message
    assert error.as_json() == {"code": code, "message": error.message, "param": param, "line": 2}


def test_a_duplicate_custom_id_names_the_first_line() -> None:
    error = only_error("\n".join([request_line("a"), request_line("b"), request_line("a")]).encode())
    assert (error.line, error.code, error.param) == (3, "duplicate_custom_id", "custom_id")
    assert "line 1" in error.message


def test_invalid_utf8_is_reported_not_raised() -> None:
    data = request_line("a").encode() + b"\n" + request_line("b").encode().replace(b"Hi", b"H\xff")
    error = only_error(data)
    assert (error.line, error.code) == (2, "invalid_utf8")


def test_a_bom_after_the_first_line_is_an_error() -> None:
    data = request_line("a").encode() + b"\n\xef\xbb\xbf" + request_line("b").encode()
    assert only_error(data).line == 2


def test_blank_lines_anywhere_are_errors_each_with_its_line() -> None:
    data = f"{request_line('a')}\n\n{request_line('b')}\n\n".encode()
    assert [(e.line, e.code) for e in errors_of(data)] == [(2, "blank_line"), (4, "blank_line")]


def test_too_many_lines_stops_reading_at_the_first_line_over_the_limit() -> None:
    data = "\n".join(request_line(f"r{i}") for i in range(8)).encode()
    errors = errors_of(data)
    assert [(e.line, e.code) for e in errors] == [(6, "too_many_requests")]
    assert "5" in errors[0].message


def test_an_overlong_line_is_skipped_without_reading_it_whole() -> None:
    small = LineContext(PROFILES, {}, 10, 200)
    long_line = request_line("b", messages=[{"role": "user", "content": "x" * 1000}])
    data = "\n".join([request_line("a"), long_line, request_line("c")]).encode()
    results = read(data, small)
    assert [(r.line, r.code) for r in results if isinstance(r, LineError)] == [(2, "line_too_long")]
    assert [r.custom_id for r in results if isinstance(r, BatchRequest)] == ["a", "c"]


def test_an_empty_file_is_an_error() -> None:
    assert [(e.line, e.code) for e in errors_of(b"")] == [(None, "empty_file")]


def responses_line(custom_id: str = "r1", **body: Any) -> str:
    body = {"model": "quality_first", "input": "Hi", **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": body})


def test_responses_lines_sit_beside_chat_lines_and_become_jobs_that_answer_as_responses() -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    lines = [
        request_line("chat"),
        responses_line(
            "resp", instructions="Be brief.", max_output_tokens=9, tools=[tool], tool_choice="required"
        ),
    ]
    chat, response = read("\n".join(lines).encode())
    assert isinstance(chat, BatchRequest) and isinstance(response, BatchRequest)
    assert chat.job.response is None
    job = response.job
    assert (job.profile, job.max_tokens, job.tool_choice, job.response and job.response.model) == (
        "quality_first", 9, "required", "quality_first"
    )  # fmt: skip
    assert [m.role for m in job.messages or []] == ["developer", "user"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"stream": True}, "body.stream"),
        ({"background": True}, "body.background"),
        ({"previous_response_id": "resp_1"}, "body.previous_response_id"),
        ({"tools": [{"type": "web_search_preview"}]}, "body.tools[0].type"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
            "body.input[0].call_id",
        ),
    ],
)
def test_a_bad_responses_line_names_its_parameter(body: dict[str, Any], param: str) -> None:
    error = only_error("\n".join([request_line("a"), responses_line("b", **body)]).encode())
    assert (error.line, error.param) == (2, param), error


def test_a_nul_character_is_refused_by_its_line() -> None:
    error = only_error(
        "\n".join(
            [request_line("a"), request_line("b", messages=[{"role": "user", "content": "x\u0000"}])]
        ).encode()
    )
    assert (error.line, error.code) == (2, "invalid_value")
