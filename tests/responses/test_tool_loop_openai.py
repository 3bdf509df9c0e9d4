"""An agent's tool loop, driven by the official `openai` SDK against the live server and a real worker.

The tiny gpt-oss fixture was taught (tests/fixtures/make_harmony_tiny.py) to call get_weather when
tools are offered, to answer from a tool's result, and to greet otherwise; so each loop below runs
gpt-oss's real token path end to end on a CPU: tools rendered in harmony, the call parsed on token ids,
the result passed back in, the final answer parsed out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.live_server import serve
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import live_workers
from tests.support.services import migrate
from tests.support.tiny_tools import TIME_TOOL, WEATHER_TOOL

TOOLS_REDIS_DB = 14
HARMONY_MODEL = REPO_ROOT / "tests" / "fixtures" / "tiny-gptoss-harmony"
MODEL = "quality_first"
CALL_REASONING, CALL_ARGUMENTS = "Need the weather.", {"city": "Paris"}
RESULT = json.dumps({"temperature": 21, "sky": "sunny"})
ANSWER, ANSWER_REASONING = "It is sunny in Paris.", "Report it."
GREETING, GREETING_REASONING = "Hello, friend!", "Greet back."
QUESTION = {"role": "user", "content": "What is the weather in Paris?"}
CHAT_TOOLS: Any = [{"type": "function", "function": tool} for tool in (WEATHER_TOOL, TIME_TOOL)]
RESPONSE_TOOLS: Any = [{"type": "function", **tool} for tool in (WEATHER_TOOL, TIME_TOOL)]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(test_dir: Path, redis_base_url: str) -> Iterator[tuple[openai.OpenAI, str]]:
    """quality_first serves the taught tiny gpt-oss with one worker; yields (SDK client, base URL)."""
    folder = test_dir / "tools"
    folder.mkdir(exist_ok=True)
    profiles = folder / "profiles.toml"
    profiles.write_text(
        f'[profiles.quality_first]\nmodel = "{HARMONY_MODEL}"\nmodel_size = "120b"\ngpu_mode = "tensor"\n'
        "max_batch = 4\nmax_tokens = 512\ntemperature = 0.0\n"
    )
    database_url = f"sqlite:///{folder / 'tools.db'}"
    migrate(database_url)
    redis_url = f"{redis_base_url}/{TOOLS_REDIS_DB}"
    with live_workers(folder, profiles, database_url, redis_url, folder, (MODEL,)) as (app, _):
        with serve(app) as url:
            yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), url


# -- chat completions ---------------------------------------------------------------------------------


def test_a_chat_tool_loop_calls_reads_the_result_and_answers(stack: tuple[openai.OpenAI, str]) -> None:
    client, _ = stack
    first = client.chat.completions.create(model=MODEL, messages=[QUESTION], tools=CHAT_TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == CALL_ARGUMENTS
    assert (choice.message.model_extra or {})["reasoning"] == CALL_REASONING

    result = {"role": "tool", "tool_call_id": call.id, "content": RESULT}
    messages: Any = [QUESTION, choice.message.model_dump(exclude_none=True), result]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=CHAT_TOOLS)
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert second.choices[0].message.content == ANSWER
    assert (second.choices[0].message.model_extra or {})["reasoning"] == ANSWER_REASONING


def streamed_chat(client: openai.OpenAI, messages: Any) -> tuple[str, dict[int, dict[str, str]], str | None]:
    """(content, calls as a client assembles them from the deltas, finish_reason) of a streamed chat."""
    stream = client.chat.completions.create(model=MODEL, messages=messages, tools=CHAT_TOOLS, stream=True)
    content, calls, finish = "", {}, None
    for chunk in stream:
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        finish = choice.finish_reason or finish
        for part in choice.delta.tool_calls or ():
            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += part.id or ""
            call["name"] += (part.function.name or "") if part.function else ""
            call["arguments"] += (part.function.arguments or "") if part.function else ""
    return content, calls, finish


def test_the_same_loop_streamed_arrives_as_tool_call_deltas(stack: tuple[openai.OpenAI, str]) -> None:
    client, _ = stack
    content, calls, finish = streamed_chat(client, [QUESTION])
    assert (content, finish) == ("", "tool_calls")
    [call] = calls.values()
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == CALL_ARGUMENTS
    assert call["id"].startswith("call_")
    assistant = {
        "role": "assistant",
        "tool_calls": [
            {"id": call["id"], "type": "function", "function": {k: call[k] for k in ("name", "arguments")}}
        ],
    }
    result = {"role": "tool", "tool_call_id": call["id"], "content": RESULT}
    content, calls, finish = streamed_chat(client, [QUESTION, assistant, result])
    assert (content, calls, finish) == (ANSWER, {}, "stop")


def test_tool_choice_none_never_calls_and_a_named_function_is_the_one_called(
    stack: tuple[openai.OpenAI, str],
) -> None:
    client, _ = stack
    plain = client.chat.completions.create(
        model=MODEL, messages=[QUESTION], tools=CHAT_TOOLS, tool_choice="none"
    )
    assert not plain.choices[0].message.tool_calls and plain.choices[0].finish_reason == "stop"
    assert plain.choices[0].message.content == GREETING
    named = client.chat.completions.create(
        model=MODEL, messages=[QUESTION], tools=CHAT_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )  # fmt: skip
    [call] = named.choices[0].message.tool_calls or []
    assert call.function.name == "get_time" and named.choices[0].finish_reason == "tool_calls"
    required = client.chat.completions.create(
        model=MODEL, messages=[QUESTION], tools=CHAT_TOOLS, tool_choice="required"
    )
    assert [c.function.name for c in required.choices[0].message.tool_calls or []] == ["get_weather"]


# -- the Responses API --------------------------------------------------------------------------------


def only(items: list[Any], kind: str) -> Any:
    [item] = [item for item in items if item.type == kind]
    return item


def test_a_responses_tool_loop_continues_with_previous_response_id(stack: tuple[openai.OpenAI, str]) -> None:
    client, _ = stack
    first = client.responses.create(
        model=MODEL, input="What is the weather in Paris?", tools=RESPONSE_TOOLS, instructions="Be brief."
    )
    assert first.status == "completed" and first.output_text == ""
    call = only(first.output, "function_call")
    assert (call.name, json.loads(call.arguments)) == ("get_weather", CALL_ARGUMENTS)
    assert only(first.output, "reasoning").content[0].text == CALL_REASONING  # never in the output text
    assert first.usage is not None and first.usage.output_tokens > 0

    second = client.responses.create(
        model=MODEL, previous_response_id=first.id, tools=RESPONSE_TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": RESULT}],
    )  # fmt: skip
    assert second.status == "completed" and second.previous_response_id == first.id
    assert second.output_text == ANSWER
    assert only(second.output, "reasoning").content[0].text == ANSWER_REASONING
    assert client.responses.retrieve(second.id).output_text == ANSWER  # stored: read back


def test_a_background_response_returns_at_once_and_is_polled_to_its_end(
    stack: tuple[openai.OpenAI, str],
) -> None:
    client, _ = stack
    response = client.responses.create(model=MODEL, input="hi", background=True)
    assert response.status in ("queued", "in_progress") and response.output == []
    deadline = time.monotonic() + 60
    while response.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        response = client.responses.retrieve(response.id)
    assert response.status == "completed" and response.background
    assert response.output_text == GREETING
    assert only(response.output, "reasoning").content[0].text == GREETING_REASONING


def joined_deltas(events: list[Any], kind: str) -> str:
    return "".join(event.delta for event in events if event.type == kind)


def test_a_streamed_response_sends_openais_events_and_ends_with_the_stored_response(
    stack: tuple[openai.OpenAI, str],
) -> None:
    client, _ = stack
    events = list(
        client.responses.create(
            model=MODEL, input="What is the weather in Paris?", tools=RESPONSE_TOOLS, stream=True
        )
    )
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    reasoning = joined_deltas(events, "response.reasoning_text.delta")
    arguments = joined_deltas(events, "response.function_call_arguments.delta")
    assert (reasoning, json.loads(arguments)) == (CALL_REASONING, CALL_ARGUMENTS)
    assert "response.output_text.delta" not in kinds
    final = events[-1].response
    done_items = [e.item for e in events if e.type == "response.output_item.done"]
    assert [item.id for item in done_items] == [item.id for item in final.output]
    assert final.output == client.responses.retrieve(final.id).output

    answer = client.responses.create(model=MODEL, input="hi", stream=True)
    text = joined_deltas(list(answer), "response.output_text.delta")
    assert text == GREETING


def test_responses_tool_choice_none_and_a_named_function(stack: tuple[openai.OpenAI, str]) -> None:
    client, _ = stack
    plain = client.responses.create(
        model=MODEL, input="What is the weather?", tools=RESPONSE_TOOLS, tool_choice="none"
    )
    assert [item.type for item in plain.output] == ["reasoning", "message"] and plain.output_text == GREETING
    named = client.responses.create(
        model=MODEL, input="What is the weather?", tools=RESPONSE_TOOLS,
        tool_choice={"type": "function", "name": "get_time"},
    )  # fmt: skip
    assert only(named.output, "function_call").name == "get_time"


def test_a_background_response_can_be_cancelled_and_unknown_ones_are_404(
    stack: tuple[openai.OpenAI, str],
) -> None:
    client, _ = stack
    response = client.responses.create(model=MODEL, input="hi", background=True, max_output_tokens=512)
    cancelled = client.responses.cancel(response.id)
    assert cancelled.status in ("cancelled", "completed", "in_progress")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nope")
    unstored = client.responses.create(model=MODEL, input="hi", store=False)
    assert unstored.output_text == GREETING
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model=MODEL, input="hi", previous_response_id=unstored.id)
    assert error.value.code == "response_not_found"


def test_a_stored_stream_is_read_again_after_a_sequence_number(stack: tuple[openai.OpenAI, str]) -> None:
    client, url = stack
    response = client.responses.create(model=MODEL, input="hi")
    with httpx.stream(
        "GET", f"{url}/v1/responses/{response.id}", params={"stream": "true", "starting_after": 3}
    ) as r:
        numbers = [
            json.loads(line[6:])["sequence_number"] for line in r.iter_lines() if line.startswith("data: ")
        ]
    assert numbers[0] == 4 and numbers == list(range(4, numbers[-1] + 1))


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search_preview"}]}, "tools[0].type"),
        ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
        ({"reasoning": {"effort": "high", "summary": "auto"}}, "reasoning.summary"),
        ({"reasoning": {"effort": "minimal"}}, "reasoning.effort"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text.format.type"),
    ],
)  # fmt: skip
def test_what_cannot_be_served_is_a_400_naming_the_parameter(
    stack: tuple[openai.OpenAI, str], extra: dict[str, Any], param: str
) -> None:
    client, _ = stack
    body = {"model": MODEL, "input": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(**body)
    assert error.value.param == param, error.value
