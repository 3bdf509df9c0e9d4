"""Tests for the harmony parser, whole-text and streaming."""

from __future__ import annotations

import random

import pytest

from engine.harmony import (
    SPECIAL_TOKENS,
    HarmonyMessage,
    HarmonyStreamParser,
    parse_harmony,
    strip_special_tokens,
)

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
    p = parse_harmony(prefix + WELL_FORMED)
    assert p.content == "The answer is 4."
    assert p.reasoning == "User asks 2+2. Simple."
    assert p.ok and not p.truncated
    assert p.messages == (
        HarmonyMessage("analysis", None, "User asks 2+2. Simple.", True),
        HarmonyMessage("final", None, "The answer is 4.", True),
    )


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_final_only_keeps_whitespace_exact(prefix: str) -> None:
    p = parse_harmony(prefix + "<|channel|>final<|message|>  4\n <|end|>")
    assert (p.content, p.reasoning, p.ok, p.truncated) == ("  4\n ", "", True, False)


def test_commentary_tool_call_with_recipient_and_constrain() -> None:
    p = parse_harmony(TOOL_CALL)
    assert p.content == ""
    assert p.reasoning == 'Need weather.\n{"city": "Oslo"}'
    assert p.ok and not p.truncated  # a tool call is a well-formed end of a generation
    assert p.messages[-1] == HarmonyMessage("commentary", "functions.get_weather", '{"city": "Oslo"}', True)


def test_recipient_before_channel() -> None:
    p = parse_harmony("<|start|>assistant to=functions.f<|channel|>commentary json<|message|>{}<|call|>")
    assert p.messages == (HarmonyMessage("commentary", "functions.f", "{}", True),)
    assert p.ok and p.reasoning == "{}" and p.content == ""


def test_truncated_in_analysis() -> None:
    p = parse_harmony("<|channel|>analysis<|message|>Thinking about it")
    assert (p.content, p.reasoning, p.truncated, p.ok) == ("", "Thinking about it", True, False)
    assert p.messages == (HarmonyMessage("analysis", None, "Thinking about it", False),)


def test_truncated_inside_final() -> None:
    p = parse_harmony(WELL_FORMED.removesuffix(" 4.<|return|>"))
    assert p.content == "The answer is"
    assert p.reasoning == "User asks 2+2. Simple."
    assert p.truncated and p.ok
    assert p.messages[-1] == HarmonyMessage("final", None, "The answer is", False)


@pytest.mark.parametrize(
    "text",
    [
        "<|channel|>analysis<|message|>hmm<|end|><|start|>assistant<|channel|>fin",
        "<|channel|>analysis<|message|>hmm<|end|><|start|>assistant<|chan",
        "<|channel|>analysis<|message|>hmm<|end|><|sta",
        PREFIX,
    ],
)
def test_truncated_header(text: str) -> None:
    p = parse_harmony(text)
    assert p.content == "" and p.truncated and not p.ok
    assert p.reasoning == ("hmm" if "hmm" in text else "")


def test_plain_text_without_header_is_malformed() -> None:
    p = parse_harmony("The answer is 4.")
    assert (p.content, p.reasoning, p.ok, p.truncated) == ("", "The answer is 4.", False, False)
    assert p.messages == ()


def test_garbage_before_header() -> None:
    p = parse_harmony("oops<|channel|>final<|message|>4<|return|>")
    assert (p.content, p.reasoning, p.ok) == ("4", "oops", False)


def test_unknown_channel_never_becomes_content() -> None:
    p = parse_harmony(
        "<|channel|>thoughts<|message|>x<|end|><|start|>assistant<|channel|>final<|message|>y<|return|>"
    )
    assert (p.content, p.reasoning, p.ok) == ("y", "x", False)


def test_two_channels_in_one_header_never_become_content() -> None:
    p = parse_harmony("<|channel|>final <|channel|>analysis<|message|>SECRET<|end|>")
    assert (p.content, p.reasoning, p.ok) == ("", "SECRET", False)


@pytest.mark.parametrize(
    "text",
    [
        "<|start|>assistant<|message|>Hello<|return|>",  # no channel
        "<|message|>Hello<|end|>",  # no header at all
    ],
)
def test_message_without_channel(text: str) -> None:
    p = parse_harmony(text)
    assert (p.content, p.reasoning, p.ok) == ("", "Hello", False)


def test_unclosed_message_and_broken_header_are_malformed() -> None:
    p = parse_harmony("<|channel|>final<|message|>a<|start|>assistant words<|end|>")
    assert (p.content, p.ok) == ("a", False)
    assert p.messages == (HarmonyMessage("final", None, "a", False),)
    assert p.reasoning == "assistant words"  # the broken header's text is kept, not dropped


def test_text_after_return_is_malformed() -> None:
    assert not parse_harmony(WELL_FORMED + "more").ok
    assert parse_harmony(WELL_FORMED + "<|endoftext|>").ok


def test_multiple_analysis_messages_join_with_newline() -> None:
    p = parse_harmony(
        "<|channel|>analysis<|message|>one<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>two<|end|>"
        "<|start|>assistant<|channel|>final<|message|>3<|end|>"
    )
    assert (p.content, p.reasoning, p.ok) == ("3", "one\ntwo", True)


def test_trailing_partial_special_token_is_dropped() -> None:
    # The stream must hold "<|" back (it may become <|return|>), so the whole-text parse drops it too.
    p = parse_harmony("<|channel|>final<|message|>cut <|")
    assert (p.content, p.truncated, p.ok) == ("cut ", True, True)


def test_strip_special_tokens() -> None:
    assert strip_special_tokens(PREFIX + WELL_FORMED) == (
        "assistantanalysisUser asks 2+2. Simple.assistantfinalThe answer is 4."
    )
    assert strip_special_tokens("".join(SPECIAL_TOKENS)) == ""


CASES = [
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
    "<|channel|>final<|message|>cut <|",
    "<|channel|>final <|channel|>analysis<|message|>SECRET<|end|>",
]


def _stream(text: str, sizes: list[int]) -> tuple[list[str], list[str], HarmonyStreamParser]:
    parser = HarmonyStreamParser()
    contents, reasonings = [], []
    pos = 0
    for size in sizes:
        content, reasoning = parser.feed(text[pos : pos + size])
        contents.append(content)
        reasonings.append(reasoning)
        pos += size
    assert pos >= len(text)
    return contents, reasonings, parser


def _random_sizes(rng: random.Random, n: int) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(rng.randint(0, 12))
    return sizes


@pytest.mark.parametrize("text", CASES)
def test_stream_matches_whole_text_parse(text: str) -> None:
    expected = parse_harmony(text)
    rng = random.Random(1234)
    splits = [[1] * len(text), [len(text)]] + [_random_sizes(rng, len(text)) for _ in range(200)]
    for sizes in splits:
        contents, reasonings, parser = _stream(text, sizes)
        assert "".join(contents) == expected.content
        assert "".join(reasonings) == expected.reasoning
        assert parser.finish() == expected


@pytest.mark.parametrize("text", [SECRET_TEXT, PREFIX + SECRET_TEXT])
def test_stream_never_emits_analysis_as_content(text: str) -> None:
    final = parse_harmony(text).content
    assert final == "visible answer, a < b <|ret"  # "<|ret" followed by "<" is plain text
    rng = random.Random(99)
    for sizes in [[1] * len(text)] + [_random_sizes(rng, len(text)) for _ in range(300)]:
        contents, _, _ = _stream(text, sizes)
        so_far = ""
        for delta in contents:
            assert "SECRET" not in delta
            so_far += delta
            # Content only ever grows along the final answer, so no reasoning character can slip in.
            assert final.startswith(so_far)
