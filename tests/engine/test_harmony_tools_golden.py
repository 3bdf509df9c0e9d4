"""Golden tests for function tools: our prompts are token for token what openai-harmony renders."""

from __future__ import annotations

from typing import Any

import pytest
from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    Message,
    ReasoningEffort,
    Role,
    SystemContent,
    ToolDescription,
)

from engine.prompt import PromptError, assistant_prefill, prefill_ids, render_prompt
from engine.types import GenerationRequest
from tests.support.tiny_tools import TIME_TOOL, WEATHER_TOOL

DATE = "2026-12-04"
RICH = {
    "name": "search",
    "description": "Search the catalogue\nfor items",
    "parameters": {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "what to look for"},
            "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
            "limit": {"type": "integer", "default": 10},
            "price": {"type": "number"},
            "exact": {"type": "boolean", "default": True},
            "tags": {"type": "array", "items": {"type": "string"}},
            "rows": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "string"}}}},
            "maybe": {"type": ["string", "null"]},
            "anything": {},
            "filter": {
                "type": "object",
                "description": "narrow it down",
                "properties": {
                    "a": {"type": "string", "description": "a field"},
                    "b": {"type": "object", "properties": {"c": {"type": "number"}}, "required": ["c"]},
                },
                "required": ["a"],
            },
        },
        "required": ["query"],
    },
}
BARE = {"name": "ping"}  # no description, no parameters
EMPTY = {"name": "noop", "description": "", "parameters": {"type": "object", "properties": {}}}


def harmony_tools(tools: list[dict[str, Any]]) -> list[Any]:
    return [
        ToolDescription.new(t["name"], t.get("description") or "", parameters=t.get("parameters"))
        for t in tools
    ]


def harmony_ids(
    encoding: Any, tools: list[dict[str, Any]], instructions: str | None, tail: list[Any]
) -> list[int]:
    system = (
        SystemContent.new().with_reasoning_effort(ReasoningEffort.MEDIUM).with_conversation_start_date(DATE)
    )
    developer = DeveloperContent.new().with_function_tools(harmony_tools(tools))
    if instructions is not None:
        developer = developer.with_instructions(instructions)
    messages = [
        Message.from_role_and_content(Role.SYSTEM, system),
        Message.from_role_and_content(Role.DEVELOPER, developer),
        Message.from_role_and_content(Role.USER, "What is the weather in Paris?"),
        *tail,
    ]
    return list(
        encoding.render_conversation_for_completion(Conversation.from_messages(messages), Role.ASSISTANT)
    )


def ours(
    tokenizer: Any, tools: list[dict[str, Any]], instructions: str | None, tail: list[dict[str, Any]]
) -> list[int]:
    messages = [{"role": "system", "content": instructions}] if instructions is not None else []
    messages += [{"role": "user", "content": "What is the weather in Paris?"}, *tail]
    request = GenerationRequest(
        messages=tuple(messages), tools=tuple(tools), reasoning_effort="medium", current_date=DATE
    )
    return render_prompt(tokenizer, True, request)


@pytest.mark.parametrize("instructions", [None, "Be brief."])
@pytest.mark.parametrize("tools", [[WEATHER_TOOL], [WEATHER_TOOL, TIME_TOOL], [RICH, BARE, EMPTY]])
def test_tools_render_as_harmony_renders_them(
    gptoss_tokenizer: Any, harmony_encoding: Any, tools: list[dict[str, Any]], instructions: str | None
) -> None:
    expected = harmony_ids(harmony_encoding, tools, instructions, [])
    assert ours(gptoss_tokenizer, tools, instructions, []) == expected, harmony_encoding.decode(expected)


def test_a_call_and_its_result_render_as_harmony_renders_them(
    gptoss_tokenizer: Any, harmony_encoding: Any
) -> None:
    arguments, result = '{"city": "Paris"}', '{"sky": "sunny"}'
    tail = [
        Message.from_role_and_content(Role.ASSISTANT, "Let me check.").with_channel("commentary"),
        Message.from_role_and_content(Role.ASSISTANT, arguments)
        .with_channel("commentary")
        .with_recipient("functions.get_weather")
        .with_content_type("<|constrain|>json"),
        Message.from_author_and_content(Author.new(Role.TOOL, "functions.get_weather"), result)
        .with_recipient("assistant")
        .with_channel("commentary"),
    ]
    call = {"id": "call_1", "name": "get_weather", "arguments": arguments}
    ours_tail = [
        {"role": "assistant", "content": "Let me check.", "tool_calls": [call]},
        {"role": "tool", "content": result, "name": "get_weather", "tool_call_id": "call_1"},
    ]
    expected = harmony_ids(harmony_encoding, [WEATHER_TOOL], "Be brief.", tail)
    assert ours(gptoss_tokenizer, [WEATHER_TOOL], "Be brief.", ours_tail) == expected, (
        harmony_encoding.decode(expected)
    )


def test_tool_choice_none_shows_no_tools(gptoss_tokenizer: Any) -> None:
    plain = GenerationRequest(prompt="hi", current_date=DATE)
    hidden = GenerationRequest(prompt="hi", current_date=DATE, tools=(WEATHER_TOOL,), tool_choice="none")
    assert render_prompt(gptoss_tokenizer, True, hidden) == render_prompt(gptoss_tokenizer, True, plain)


@pytest.mark.parametrize(
    ("tools", "name", "prefill"),
    [
        (
            (WEATHER_TOOL, TIME_TOOL),
            "get_time",
            "<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>",
        ),
        (
            (WEATHER_TOOL,),
            None,
            "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>",
        ),
        ((WEATHER_TOOL, TIME_TOOL), None, "<|channel|>commentary to=functions."),
    ],
)
def test_a_required_call_starts_the_answer_with_its_header(
    gptoss_tokenizer: Any, tools: tuple[dict[str, Any], ...], name: str | None, prefill: str
) -> None:
    request = GenerationRequest(
        prompt="hi", current_date=DATE, tools=tools, tool_choice="required", tool_name=name
    )
    ids = render_prompt(gptoss_tokenizer, True, request)
    forced = prefill_ids(gptoss_tokenizer, request)
    assert gptoss_tokenizer.decode(forced) == prefill and ids[-len(forced) :] == forced
    assert gptoss_tokenizer.decode(ids[: -len(forced)]).endswith("<|start|>assistant")
    conversation = render_prompt(gptoss_tokenizer, True, request, add_generation_prompt=False)
    assert gptoss_tokenizer.decode(conversation).endswith("<|end|>")
    assert assistant_prefill(GenerationRequest(prompt="hi", tools=tools)) == []


def test_what_cannot_be_rendered_is_refused_naming_the_field(gptoss_tokenizer: Any) -> None:
    cases = [
        (
            GenerationRequest(prompt="hi", tools=(WEATHER_TOOL,), tool_choice="required", tool_name="nope"),
            True,
            "tool_choice",
        ),
        (GenerationRequest(prompt="hi", tool_choice="required"), True, "tool_choice"),
        (GenerationRequest(messages=({"role": "tool", "content": "1"},)), True, "messages[0].name"),
        (GenerationRequest(prompt="hi", tools=(WEATHER_TOOL,)), False, "tools"),
    ]
    for request, is_harmony, param in cases:
        with pytest.raises(PromptError) as error:
            render_prompt(gptoss_tokenizer, is_harmony, request)
        assert error.value.param == param
