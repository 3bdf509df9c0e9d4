"""`gptoss submit` builds the jobs body: tools from a file in OpenAI's chat shape, a tool choice by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import build_parser, job_body

WEATHER = {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_tools_from_a_file_and_a_named_tool_choice(tmp_path: Path) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": WEATHER}]))
    args = build_parser().parse_args(
        ["submit", "weather?", "--tools", str(tools), "--tool-choice", "get_weather"]
    )
    assert job_body(args) == {
        "prompt": "weather?",
        "tools": [{"type": "function", **WEATHER}],
        "tool_choice": {"type": "function", "name": "get_weather"},
    }
    args = build_parser().parse_args(["submit", "hi", "--tools", str(tools), "--tool-choice", "none"])
    assert job_body(args)["tool_choice"] == "none"


def test_a_tools_file_that_is_not_a_list_is_refused(tmp_path: Path) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(WEATHER))
    with pytest.raises(SystemExit, match="JSON list"):
        job_body(build_parser().parse_args(["submit", "hi", "--tools", str(tools)]))
