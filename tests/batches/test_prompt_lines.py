"""`gptoss batch run` input and output: prompt files become Batch API lines; result lines become answers."""

from __future__ import annotations

import io
import json

import pytest

from cli.batch import Progress
from cli.prompt_lines import PromptFileError, RequestDefaults, answer_line, convert_prompt_file

DEFAULTS = RequestDefaults("latency_first", system="Be brief.", options={"max_tokens": 8})


def convert(text: str, defaults: RequestDefaults = DEFAULTS) -> tuple[list[dict], list[tuple[int, str]]]:
    sink = io.StringIO()
    ids = [
        (line.input_line, line.custom_id) for line in convert_prompt_file(io.StringIO(text), sink, defaults)
    ]
    return [json.loads(line) for line in sink.getvalue().splitlines()], ids


def test_plain_json_and_batch_lines_are_converted_and_blank_lines_skipped() -> None:
    batch_line = {
        "custom_id": "mine",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "x"},
    }
    text = (
        "What is 2+2?\n\n"
        '{"prompt": "Name a colour.", "id": "colour", "max_tokens": 3}\n'
        '{"messages": [{"role": "user", "content": "Hi"}]}\n'
        "{not json, so a plain prompt}\n" + json.dumps(batch_line) + "\n"
    )
    requests, ids = convert(text)
    assert ids == [(1, "line-1"), (3, "colour"), (4, "line-4"), (5, "line-5"), (6, "mine")]
    first = requests[0]
    assert (first["method"], first["url"]) == ("POST", "/v1/chat/completions")
    assert first["body"] == {
        "model": "latency_first",
        "max_tokens": 8,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    }
    assert requests[1]["body"]["max_tokens"] == 3  # the line's own setting wins
    assert requests[2]["body"]["messages"] == [
        {"role": "user", "content": "Hi"}
    ]  # no system added to messages
    assert requests[3]["body"]["messages"][-1]["content"] == "{not json, so a plain prompt}"
    assert requests[4] == batch_line


def test_a_json_line_without_prompt_or_messages_names_its_line() -> None:
    with pytest.raises(PromptFileError, match="line 2"):
        convert('first\n{"text": "no prompt key"}\n')


def test_answers_come_from_output_and_error_lines() -> None:
    body = {
        "choices": [{"message": {"content": "Paris", "reasoning_content": "think"}, "finish_reason": "stop"}],
        "usage": {"total_tokens": 3},
    }
    ok = {"custom_id": "a", "response": {"status_code": 200, "body": body}, "error": None}
    assert answer_line(ok) == {
        "custom_id": "a", "content": "Paris", "reasoning": "think", "finish_reason": "stop",
        "usage": {"total_tokens": 3},
    }  # fmt: skip
    body["choices"][0]["message"] = {"content": "Paris", "reasoning": "think"}  # the newer key alone
    assert answer_line(ok)["reasoning"] == "think"
    failed = {"custom_id": "b", "response": {"status_code": 500, "body": {"error": {"message": "boom"}}}}
    assert answer_line(failed) == {"custom_id": "b", "error": {"code": None, "message": "boom"}}
    cancelled = {
        "custom_id": "c",
        "response": None,
        "error": {"code": "batch_cancelled", "message": "stopped"},
    }
    assert answer_line(cancelled)["error"] == {"code": "batch_cancelled", "message": "stopped"}


def test_progress_shows_counts_and_the_batchs_own_rate_and_eta_from_the_first_second() -> None:
    progress = Progress(io.StringIO())
    batch = {
        "status": "validating",
        "in_progress_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
    }
    assert progress.line(batch, now=1000.0).endswith("0/0")
    batch = {
        "status": "in_progress",
        "in_progress_at": 1000,
        "request_counts": {"total": 100, "completed": 0, "failed": 0},
    }
    assert progress.line(batch, now=1000.5).endswith("0/100 0.0 req/s ETA -- (0m01s in)")
    batch["request_counts"] = {"total": 100, "completed": 28, "failed": 2}
    line = progress.line(batch, now=1015.0)
    assert "30/100 (2 failed) 2.0 req/s ETA 0m35s (0m15s in)" in line
    assert line.count("#") == 9
