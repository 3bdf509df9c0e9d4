"""The official `openai` SDK against the live server: the demo model and a harmony-speaking gpt-oss."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.live_server import serve
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import live_workers
from tests.support.services import migrate
from tests.support.tiny_tools import TIME_TOOL, WEATHER_TOOL

CHAT_REDIS_DB = 9
HARMONY_MODEL = REPO_ROOT / "tests" / "fixtures" / "tiny-gptoss-harmony"  # see make_harmony_tiny.py
HARMONY_ANSWER, HARMONY_REASONING = "Hello, friend!", "Greet back."

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(test_dir: Path, redis_base_url: str) -> Iterator[tuple[openai.OpenAI, object]]:
    """latency_first serves the demo model, quality_first the harmony tiny gpt-oss; one worker each."""
    folder = test_dir / "chat"
    folder.mkdir(exist_ok=True)
    profiles = folder / "profiles.toml"
    profiles.write_text(
        '[profiles.latency_first]\nmodel = "demo"\nmodel_size = "20b"\ngpu_mode = "pipeline"\n'
        "max_batch = 4\nmax_tokens = 512\ntemperature = 0.0\n\n"
        f'[profiles.quality_first]\nmodel = "{HARMONY_MODEL}"\nmodel_size = "120b"\ngpu_mode = "tensor"\n'
        "max_batch = 4\nmax_tokens = 512\ntemperature = 0.0\n"
    )
    database_url = f"sqlite:///{folder / 'chat.db'}"
    migrate(database_url)
    redis_url = f"{redis_base_url}/{CHAT_REDIS_DB}"
    demo_data = REPO_ROOT / ".data"  # the workers share the converted demo model with `make run`
    both = ("latency_first", "quality_first")
    with live_workers(folder, profiles, database_url, redis_url, demo_data, both, api_data_dir=folder) as (
        app,
        _,
    ):
        with serve(app) as url:
            yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), app


def stored_job(app: object, completion_id: str) -> dict:
    client = app.test_client()  # type: ignore[attr-defined]
    return client.get(f"/v1/jobs/job_{completion_id.removeprefix('chatcmpl-')}").get_json()


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_completion_returns_the_demo_models_answer(stack: tuple[openai.OpenAI, object]) -> None:
    client, app = stack
    completion = client.chat.completions.create(model="latency_first", messages=QUESTION, max_tokens=32)  # type: ignore[arg-type]
    assert "Paris" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    job = stored_job(app, completion.id)
    assert completion.usage is not None
    usage = completion.usage
    assert [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens] == [
        job["usage"]["prompt_tokens"],
        job["usage"]["completion_tokens"],
        job["usage"]["total_tokens"],
    ]
    assert job["tags"]["model_id"] == completion.model


def test_streaming_chat_completion_streams_the_same_answer(stack: tuple[openai.OpenAI, object]) -> None:
    client, app = stack
    stream = client.chat.completions.create(
        model="latency_first",
        messages=QUESTION,
        max_tokens=32,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    job = stored_job(app, chunks[0].id)
    assert job["result"]["content"] == text
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        job["usage"]["prompt_tokens"],
        job["usage"]["completion_tokens"],
    )


def test_gptoss_reasoning_goes_to_reasoning_and_reasoning_content_never_to_content(
    stack: tuple[openai.OpenAI, object],
) -> None:
    client, _ = stack
    completion = client.chat.completions.create(model="quality_first", messages=QUESTION, max_tokens=100)  # type: ignore[arg-type]
    message = completion.choices[0].message
    assert message.content == HARMONY_ANSWER
    assert message.model_extra is not None
    assert message.model_extra["reasoning"] == message.model_extra["reasoning_content"] == HARMONY_REASONING

    stream = client.chat.completions.create(
        model="quality_first", messages=QUESTION, max_tokens=100, stream=True
    )  # type: ignore[arg-type]
    content, reasoning, reasoning_content = "", "", ""
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None:
            assert "Greet" not in (delta.content or "")
            content += delta.content or ""
            reasoning += (delta.model_extra or {}).get("reasoning") or ""
            reasoning_content += (delta.model_extra or {}).get("reasoning_content") or ""
    assert (content, reasoning, reasoning_content) == (HARMONY_ANSWER, HARMONY_REASONING, HARMONY_REASONING)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"reasoning_effort": "max"}, "reasoning_effort"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"extra_body": {"best_of": 2}}, "best_of"),
        ({"extra_body": {"cache": "sometimes"}}, "cache"),
    ],
)  # fmt: skip
def test_every_refused_parameter_is_openais_bad_request_naming_it(
    stack: tuple[openai.OpenAI, object], extra: dict[str, object], param: str
) -> None:
    client, _ = stack
    body = {"model": "latency_first", "messages": QUESTION, **extra}
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(**body)  # type: ignore[call-overload]
    assert error.value.param == param and error.value.code, error.value


def test_an_unknown_model_is_a_404_naming_the_choices(stack: tuple[openai.OpenAI, object]) -> None:
    client, _ = stack
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-9", messages=QUESTION)  # type: ignore[arg-type]


def test_models_lists_profiles_and_the_models_they_really_run(stack: tuple[openai.OpenAI, object]) -> None:
    client, _ = stack
    ids = {model.id for model in client.models.list()}
    assert {"latency_first", "quality_first", "HuggingFaceTB/SmolLM2-135M-Instruct"} <= ids


# -- function tools (the fixture was not taught to call: these show what holds for any gpt-oss) ----------

TOOLS = [{"type": "function", "function": tool} for tool in (WEATHER_TOOL, TIME_TOOL)]
WEATHER = {"role": "user", "content": "What is the weather in Paris?"}


def calls_of(message: object) -> list[tuple[str, str]]:
    """(name, arguments) of every call in a chat message: runnable ones and those reported invalid."""
    extra = getattr(message, "model_extra", None) or {}
    valid = [(c.function.name, c.function.arguments) for c in getattr(message, "tool_calls", None) or []]
    return valid + [(c["name"], c["arguments"]) for c in extra.get("invalid_tool_calls") or []]


def test_tool_choice_none_never_calls_and_a_named_function_is_the_one_called(
    stack: tuple[openai.OpenAI, object],
) -> None:
    client, app = stack
    plain = client.chat.completions.create(
        model="quality_first", messages=[WEATHER], tools=TOOLS, tool_choice="none"
    )  # type: ignore[arg-type, list-item]
    assert calls_of(plain.choices[0].message) == [] and plain.choices[0].finish_reason == "stop"
    assert plain.choices[0].message.content == HARMONY_ANSWER
    named = client.chat.completions.create(
        model="quality_first", messages=[WEATHER], tools=TOOLS, max_tokens=40,  # type: ignore[arg-type, list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )  # fmt: skip
    [(name, _)] = calls_of(named.choices[0].message)
    assert name == "get_time"
    [stored] = stored_job(app, named.id)["result"]["tool_calls"]
    assert stored["name"] == "get_time" and stored["id"].startswith("call_")


def test_a_streamed_call_arrives_as_openais_tool_call_deltas(stack: tuple[openai.OpenAI, object]) -> None:
    client, app = stack
    stream = client.chat.completions.create(
        model="quality_first", messages=[WEATHER], tools=TOOLS, max_tokens=40, stream=True,  # type: ignore[arg-type, list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )  # fmt: skip
    calls: dict[int, dict[str, str]] = {}
    chunk_id = ""
    for chunk in stream:
        chunk_id = chunk.id
        for part in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += part.id or ""
            call["name"] += (part.function.name or "") if part.function else ""
            call["arguments"] += (part.function.arguments or "") if part.function else ""
    [stored] = stored_job(app, chunk_id)["result"]["tool_calls"]
    assert list(calls.values()) == [{k: stored[k] for k in ("id", "name", "arguments")}]
    assert stored["name"] == "get_weather"


def test_tool_requests_that_cannot_be_served_are_refused_naming_the_parameter(
    stack: tuple[openai.OpenAI, object],
) -> None:
    client, _ = stack
    refused = [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", 400),
        ({"logprobs": True}, "logprobs", 400),
        ({"model": "latency_first", "tools": TOOLS}, "tools", 400),  # the demo model does not speak harmony
        (
            {"messages": [WEATHER, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]},
            "messages[1].tool_call_id",
            400,
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            400,
        ),
    ]
    for extra, param, status in refused:
        body = {"model": "quality_first", "messages": [WEATHER], **extra}
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(**body)  # type: ignore[call-overload]
        assert (error.value.status_code, error.value.param) == (status, param), error.value
