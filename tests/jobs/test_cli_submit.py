"""`gptoss submit` builds the jobs body: tools from a file in OpenAI's chat shape, a tool choice by name."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from cli.api import base_url
from cli.main import build_parser, job_body
from tests.support.live_server import serve
from tests.support.paths import REPO_ROOT

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


def test_a_system_message_a_temperature_and_a_prompt_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("What is 2+2?\n"))
    args = build_parser().parse_args(["submit", "-", "--system", "Be brief.", "--temperature", "0.5"])
    assert job_body(args) == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?\n"},
        ],
        "temperature": 0.5,
    }
    monkeypatch.setattr("sys.stdin", io.StringIO("  \n"))
    with pytest.raises(SystemExit, match="give a prompt"):
        job_body(build_parser().parse_args(["submit", "-"]))


def test_the_openai_variables_name_the_server_and_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPTOSS_URL", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://10.1.2.3:9000/v1/")
    assert base_url(build_parser().parse_args(["status", "job_x"])) == "http://10.1.2.3:9000"
    monkeypatch.setenv("GPTOSS_URL", "http://127.0.0.1:8123")
    assert base_url(build_parser().parse_args(["status", "job_x"])) == "http://127.0.0.1:8123"


def test_version_and_a_closed_pipe_are_quiet(idle_app: Flask) -> None:
    version = subprocess.run(
        [sys.executable, "-m", "cli.main", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    assert version.stdout.startswith("gptoss ")
    job = idle_app.test_client().post("/v1/jobs", json={"prompt": "hi"}).get_json()
    with serve(idle_app) as url:  # `gptoss status ID | head -c 0`: the reader is gone before the answer
        shell = f"{sys.executable} -m cli.main --url {url} status {job['id']} | head -c 0"
        closed = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, cwd=REPO_ROOT)
    assert closed.stderr == ""
