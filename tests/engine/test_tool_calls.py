"""Function calls in gpt-oss output: parsed on token ids, streamed as OpenAI's deltas, checked at the end."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.harmony import special_token_names
from engine.request_stream import RequestStream
from engine.tiny import build_harmony_tokenizer, harmony_eos_ids
from engine.types import GenerationRequest

WEATHER = {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CALL = (
    "<|channel|>analysis<|message|>Call a tool.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city": "Paris"}<|call|>'
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_harmony_tokenizer()


def run(
    tokenizer: Any, raw: str, request: GenerationRequest, prefill: str = "", step: int = 3
) -> tuple[list[Any], Any]:
    """Feed `raw` to a RequestStream a few ids at a time; the deltas and the result."""
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"]
    prefill_ids = tokenizer(prefill, add_special_tokens=False)["input_ids"] if prefill else []
    stream = RequestStream(
        "r", request, tokenizer, special_token_names(tokenizer), 10, set(harmony_eos_ids(tokenizer)), 0.0,
        prefill_ids,
    )  # fmt: skip
    deltas = [stream.on_output(ids[:end], None) for end in range(step, len(ids) + step, step)]
    last, result = stream.finish(None)
    return [d for d in [*deltas, last] if d is not None], result


def streamed_calls(deltas: list[Any]) -> dict[int, dict[str, str]]:
    """The calls as an OpenAI client assembles them from the deltas."""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        for part in delta.tool_calls:
            call = calls.setdefault(part["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] = part.get("id", call["id"])
            call["name"] = part.get("name", call["name"])
            call["arguments"] += part.get("arguments", "")
    return calls


def test_a_call_to_an_offered_tool_ends_with_finish_reason_tool_calls(tokenizer: Any) -> None:
    deltas, result = run(tokenizer, CALL, GenerationRequest(prompt="hi", tools=(WEATHER,)))
    assert result.finish_reason == "tool_calls" and result.harmony_ok
    [call] = result.tool_calls
    assert (call.name, json.loads(call.arguments), call.error) == ("get_weather", {"city": "Paris"}, None)
    assert call.id.startswith("call_")
    assert result.content == "" and result.reasoning == "Call a tool."  # the arguments are not reasoning
    assert streamed_calls(deltas) == {0: {"id": call.id, "name": "get_weather", "arguments": call.arguments}}
    assert "".join(d.reasoning for d in deltas) == "Call a tool."


def test_without_tools_offered_a_call_is_not_a_call(tokenizer: Any) -> None:
    for request in (
        GenerationRequest(prompt="hi"),
        GenerationRequest(prompt="hi", tools=(WEATHER,), tool_choice="none"),
    ):
        deltas, result = run(tokenizer, CALL, request)
        assert result.tool_calls == () and not result.harmony_ok and result.finish_reason == "stop"
        assert all(not d.tool_calls for d in deltas)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [('{"city": Paris}', "not valid JSON"), ('["Paris"]', "not an object")],
)
def test_arguments_that_are_not_a_json_object_are_reported(
    tokenizer: Any, arguments: str, error: str
) -> None:
    raw = CALL.replace('{"city": "Paris"}', arguments)
    _, result = run(tokenizer, raw, GenerationRequest(prompt="hi", tools=(WEATHER,)))
    [call] = result.tool_calls
    assert call.arguments == arguments and error in (call.error or "")
    assert call.as_dict()["error"] == call.error


def test_a_call_to_a_function_never_offered_is_reported(tokenizer: Any) -> None:
    raw = CALL.replace("get_weather", "rm_rf")
    _, result = run(tokenizer, raw, GenerationRequest(prompt="hi", tools=(WEATHER,)))
    [call] = result.tool_calls
    assert call.name == "rm_rf" and "does not offer" in (call.error or "")


def test_a_call_cut_off_by_max_tokens_is_reported_and_finishes_length(tokenizer: Any) -> None:
    raw = CALL.removesuffix('"Paris"}<|call|>')
    _, result = run(tokenizer, raw, GenerationRequest(prompt="hi", tools=(WEATHER,)))
    [call] = result.tool_calls
    assert result.finish_reason == "length" and "cut off" in (call.error or "")


def test_a_prefilled_call_header_counts_as_the_models_own(tokenizer: Any) -> None:
    """tool_choice naming a function puts the call's header in the prompt; the model writes the arguments."""
    request = GenerationRequest(
        prompt="hi", tools=(WEATHER,), tool_choice="required", tool_name="get_weather"
    )
    prefill = "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
    deltas, result = run(tokenizer, '{"city": "Oslo"}<|call|>', request, prefill=prefill)
    [call] = result.tool_calls
    assert (call.name, call.arguments, call.error, result.finish_reason) == (
        "get_weather", '{"city": "Oslo"}', None, "tool_calls"
    )  # fmt: skip
    assert result.completion_tokens == len(
        tokenizer('{"city": "Oslo"}<|call|>', add_special_tokens=False)["input_ids"]
    )
    assert streamed_calls(deltas)[0]["name"] == "get_weather"
