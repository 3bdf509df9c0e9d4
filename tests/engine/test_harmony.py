"""Tests for the harmony parser on token ids, whole and streaming.

Text below spells the tokens the model emits: `emitted()` encodes special-token strings as the
special ids (what a model's output holds), `spelled()` encodes the same characters as ordinary
text (what a model may also write, and what must never count as structure).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine.harmony import (
    HarmonyMessage,
    HarmonyParse,
    HarmonyStreamParser,
    parse_harmony,
    special_token_names,
)
from engine.tiny import build_harmony_tokenizer

TOKENIZER = build_harmony_tokenizer()


def emitted(text: str, tokenizer: Any = TOKENIZER) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def spelled(text: str, tokenizer: Any = TOKENIZER) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def parse(text: str, tools: bool = False) -> HarmonyParse:
    return parse_harmony(TOKENIZER, emitted(text), tools=tools)


PREFIX = "<|start|>assistant"
WELL_FORMED = (
    "<|channel|>analysis<|message|>User asks 2+2. Simple.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>The answer is 4.<|return|>"
)
TOOL_CALL = (
    "<|channel|>analysis<|message|>Need weather.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city": "Oslo"}<|call|>'
)
SECRET_TEXT = (
    "<|channel|>analysis<|message|>SECRET plan, <| not a token<|end|>"
    "<|start|>assistant<|channel|>commentary<|message|>SECRET preamble<|end|>"
    "<|start|>assistant to=x<|channel|>analysis<|message|>more SECRET<|end|>"
    "<|start|>assistant<|channel|>final<|message|>visible answer, a < b <|ret<|return|>"
)


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_well_formed_analysis_then_final(prefix: str) -> None:
    p = parse(prefix + WELL_FORMED)
    assert p.content == "The answer is 4."
    assert p.reasoning == "User asks 2+2. Simple."
    assert p.ok and not p.truncated
    assert p.messages == (
        HarmonyMessage("assistant", "analysis", None, "User asks 2+2. Simple.", True),
        HarmonyMessage("assistant", "final", None, "The answer is 4.", True),
    )


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_final_only_keeps_whitespace_exact(prefix: str) -> None:
    p = parse(prefix + "<|channel|>final<|message|>  4\n <|end|>")
    assert (p.content, p.reasoning, p.ok, p.truncated) == ("  4\n ", "", True, False)


def test_commentary_tool_call_with_recipient_and_constrain() -> None:
    p = parse(TOOL_CALL, tools=True)
    assert p.content == ""
    assert p.reasoning == "Need weather."  # a function call's body is its arguments, not reasoning
    assert p.ok and not p.truncated  # a tool call is a well-formed end of a generation
    assert p.messages[-1] == HarmonyMessage(
        "assistant", "commentary", "functions.get_weather", '{"city": "Oslo"}', True
    )


def test_recipient_before_channel() -> None:
    p = parse("<|start|>assistant to=functions.f<|channel|>commentary json<|message|>{}<|call|>", tools=True)
    assert p.messages == (HarmonyMessage("assistant", "commentary", "functions.f", "{}", True),)
    assert p.ok and p.reasoning == "" and p.content == ""


def test_truncated_in_analysis() -> None:
    p = parse("<|channel|>analysis<|message|>Thinking about it")
    assert (p.content, p.reasoning, p.truncated, p.ok) == ("", "Thinking about it", True, False)
    assert p.messages == (HarmonyMessage("assistant", "analysis", None, "Thinking about it", False),)


def test_truncated_inside_final() -> None:
    p = parse(WELL_FORMED.removesuffix(" 4.<|return|>"))
    assert p.content == "The answer is"
    assert p.reasoning == "User asks 2+2. Simple."
    assert p.truncated and p.ok
    assert p.messages[-1] == HarmonyMessage("assistant", "final", None, "The answer is", False)


@pytest.mark.parametrize(
    "text",
    [
        "<|channel|>analysis<|message|>hmm<|end|><|start|>assistant<|channel|>fin",
        "<|channel|>analysis<|message|>hmm<|end|><|start|>assistant",
        "<|channel|>analysis<|message|>hmm<|end|><|start|>",
        PREFIX,
    ],
)
def test_truncated_header(text: str) -> None:
    p = parse(text)
    assert p.content == "" and p.truncated and not p.ok
    assert p.reasoning == ("hmm" if "hmm" in text else "")


def test_plain_text_without_header_is_malformed() -> None:
    p = parse("The answer is 4.")
    assert (p.content, p.reasoning, p.ok, p.truncated) == ("", "The answer is 4.", False, False)
    assert p.messages == ()


def test_garbage_before_header() -> None:
    p = parse("oops<|channel|>final<|message|>4<|return|>")
    assert (p.content, p.reasoning, p.ok) == ("4", "oops", False)


def test_unknown_channel_never_becomes_content() -> None:
    p = parse(
        "<|channel|>thoughts<|message|>x<|end|><|start|>assistant<|channel|>final<|message|>y<|return|>"
    )
    assert (p.content, p.reasoning, p.ok) == ("y", "x", False)


def test_two_channels_in_one_header_never_become_content() -> None:
    p = parse("<|channel|>final <|channel|>analysis<|message|>SECRET<|end|>")
    assert (p.content, p.reasoning, p.ok) == ("", "SECRET", False)


@pytest.mark.parametrize(
    "text",
    [
        "<|start|>assistant<|message|>Hello<|return|>",  # no channel
        "<|message|>Hello<|end|>",  # no header at all
    ],
)
def test_message_without_channel(text: str) -> None:
    p = parse(text)
    assert (p.content, p.reasoning, p.ok) == ("", "Hello", False)


def test_unclosed_message_and_broken_header_are_malformed() -> None:
    p = parse("<|channel|>final<|message|>a<|start|>assistant words<|end|>")
    assert (p.content, p.ok) == ("a", False)
    assert p.messages == (HarmonyMessage("assistant", "final", None, "a", False),)
    assert p.reasoning == "assistant words"  # the broken header's text is kept, not dropped


def test_text_after_return_is_malformed() -> None:
    assert not parse(WELL_FORMED + "more").ok
    assert parse(WELL_FORMED + "<|endoftext|>").ok


def test_multiple_analysis_messages_join_with_newline() -> None:
    p = parse(
        "<|channel|>analysis<|message|>one<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>two<|end|>"
        "<|start|>assistant<|channel|>final<|message|>3<|end|>"
    )
    assert (p.content, p.reasoning, p.ok) == ("3", "one\ntwo", True)


def test_analysis_that_spells_a_final_header_in_ordinary_tokens_stays_reasoning() -> None:
    ids = emitted("<|channel|>analysis<|message|>") + spelled("plan <|channel|>final<|message|>SECRET")
    ids += emitted("<|end|><|start|>assistant<|channel|>final<|message|>answer<|return|>")
    p = parse_harmony(TOKENIZER, ids)
    assert p.content == "answer" and p.ok
    assert p.reasoning == "plan <|channel|>final<|message|>SECRET"


def test_a_final_answer_that_mentions_end_is_not_cut() -> None:
    ids = emitted("<|channel|>final<|message|>") + spelled("close with <|end|> and <|return|>.")
    p = parse_harmony(TOKENIZER, ids + emitted("<|return|>"))
    assert (p.content, p.ok, p.truncated) == ("close with <|end|> and <|return|>.", True, False)


def test_a_hallucinated_user_turn_never_reaches_content() -> None:
    p = parse(
        "<|channel|>final<|message|>Paris.<|end|>"
        "<|start|>user<|channel|>final<|message|>Now tell me a secret<|end|>"
    )
    assert p.content == "Paris." and not p.ok
    assert p.messages[-1] == HarmonyMessage("user", "final", None, "Now tell me a secret", True)
    assert "Now tell me a secret" in p.reasoning  # kept where it can be read, never as the answer


def test_a_tool_call_nobody_offered_is_not_well_formed() -> None:
    text = "<|start|>assistant to=browser.search<|channel|>commentary json<|message|>{}<|call|>"
    assert not parse(text).ok
    assert parse(text, tools=True).ok


def test_two_final_messages_are_separated() -> None:
    p = parse(
        "<|channel|>final<|message|>One.<|end|><|start|>assistant<|channel|>final<|message|>Two.<|return|>"
    )
    assert (p.content, p.ok) == ("One.\nTwo.", True)


def test_a_final_message_to_a_recipient_is_not_the_answer() -> None:
    p = parse("<|start|>assistant to=functions.f<|channel|>final<|message|>{}<|end|>")
    assert p.content == "" and not p.ok


def test_a_reserved_token_is_malformed_and_never_content() -> None:
    tokenizer = build_harmony_tokenizer()
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|reserved_200013|>"]}, replace_extra_special_tokens=False
    )
    reserved = tokenizer.convert_tokens_to_ids("<|reserved_200013|>")
    assert special_token_names(tokenizer)[reserved] == "<|reserved|>"
    ids = emitted("<|channel|>final<|message|>a", tokenizer) + [reserved] + emitted("b<|return|>", tokenizer)
    p = parse_harmony(tokenizer, ids)
    assert not p.ok and "reserved" not in p.content + p.reasoning
    assert p.content == "a"


CASES = [
    "<|channel|>analysis<|message|>café 🙂 naïve<|end|>"
    "<|start|>assistant<|channel|>final<|message|>日本語 🙂<|return|>",
    WELL_FORMED,
    PREFIX + WELL_FORMED,
    TOOL_CALL,
    SECRET_TEXT,
    PREFIX + SECRET_TEXT,
    "The answer is 4.",
    "oops<|channel|>final<|message|>4<|return|>",
    "<|channel|>analysis<|message|>one<|end|><|start|>assistant<|channel|>analysis<|message|>two",
    "<|channel|>analysis<|message|>hmm<|end|><|start|>assistant<|channel|>fin",
    "<|channel|>final<|message|>a<|start|>assistant words<|end|>x<|start|><|return|>",
    "<|channel|>final <|channel|>analysis<|message|>SECRET<|end|>",
]


def _stream(ids: list[int], sizes: list[int]) -> tuple[list[str], list[str], HarmonyParse]:
    parser = HarmonyStreamParser(TOKENIZER, special_token_names(TOKENIZER))
    contents, reasonings = [], []
    pos = 0
    for size in sizes:
        content, reasoning = parser.feed(ids[pos : pos + size])
        contents.append(content)
        reasonings.append(reasoning)
        pos += size
    assert pos >= len(ids)
    (content, reasoning), parsed = parser.finish()
    return contents + [content], reasonings + [reasoning], parsed


def _random_sizes(rng: random.Random, n: int) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(rng.randint(0, 6))
    return sizes


@pytest.mark.parametrize("text", CASES)
def test_stream_matches_whole_parse(text: str) -> None:
    ids = emitted(text)
    expected = parse_harmony(TOKENIZER, ids)
    rng = random.Random(1234)
    splits = [[1] * len(ids), [len(ids)]] + [_random_sizes(rng, len(ids)) for _ in range(100)]
    for sizes in splits:
        contents, reasonings, parsed = _stream(ids, sizes)
        assert "".join(contents) == expected.content
        assert "".join(reasonings) == expected.reasoning
        assert parsed == expected


@pytest.mark.parametrize("text", [SECRET_TEXT, PREFIX + SECRET_TEXT])
def test_stream_never_emits_analysis_as_content(text: str) -> None:
    ids = emitted(text)
    final = parse_harmony(TOKENIZER, ids).content
    assert final == "visible answer, a < b <|ret"  # "<|ret" is plain text
    rng = random.Random(99)
    for sizes in [[1] * len(ids)] + [_random_sizes(rng, len(ids)) for _ in range(200)]:
        contents, _, _ = _stream(ids, sizes)
        so_far = ""
        for delta in contents:
            assert "SECRET" not in delta
            so_far += delta
            # Content only ever grows along the final answer, so no reasoning character can slip in.
            assert final.startswith(so_far)


def test_reasoning_tokens_count_the_ids_of_reasoning_only() -> None:
    def ids(text: str) -> int:
        return len(TOKENIZER(text, add_special_tokens=False)["input_ids"])

    assert parse(WELL_FORMED).reasoning_tokens == ids("User asks 2+2. Simple.")
    assert parse(TOOL_CALL, tools=True).reasoning_tokens == ids("Need weather.")  # not the arguments
    assert parse("<|channel|>final<|message|>Just 4.<|return|>").reasoning_tokens == 0
