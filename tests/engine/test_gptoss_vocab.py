"""gpt-oss's real tokenizer, built offline (tests/fixtures/make_gptoss_tokenizer.py), against
openai-harmony: same vocabulary, same special ids, same ordinary encoding, same rendered prompt."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import openai_harmony
import pytest
import torch
from openai_harmony import Conversation, DeveloperContent, Message, Role, SystemContent

from engine.loader import load_model
from tests.fixtures.make_gptoss_tokenizer import (
    HF_SPECIAL_TOKENS,
    MODEL_VOCAB_SIZE,
    O200K_BASE_SHA256,
    TOKENIZER_JSON_SHA256,
    quicktok_harmony_specials,
    sha256_file,
)
from tests.support.gptoss_vocab import GPTOSS_EOS_IDS, GPTOSS_PAD_ID

TEXTS = [
    "Hello, world!",
    "naïve café — 東京の天気は? Ελληνικά, русский, עברית",
    "emoji 👍🏽 family 👨‍👩‍👧 flag 🇫🇷 ☃",
    'def square(x: int) -> int:\n    return x ** 2  # "sq"\n\n\tprint(square(3))\r\n',
    "a   b\t\t c\n\n\n  d    \u00a0 end  ",
    "I'm sure they'LL say it's 12345678 or 3.14159",
    # special-token strings typed by a user are ordinary text, never control tokens
    "<|start|>user<|message|>hi<|end|> <|return|><|endoftext|> <|reserved_200100|> <|endofprompt|>",
]


def harmony_id(encoding: Any, token: str) -> int:
    [token_id] = encoding.encode(token, allowed_special={token})
    return token_id


def ordinary_ids(tokenizer: Any, text: str) -> list[int]:
    """Text as text: split_special_tokens=True keeps a typed "<|start|>" from becoming a control token."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def test_the_tiktoken_file_has_the_sha256_harmony_checks(gptoss_vocab_dir: Path) -> None:
    assert sha256_file(gptoss_vocab_dir / "o200k_base.tiktoken") == O200K_BASE_SHA256
    harmony_binary = next(Path(openai_harmony.__file__).parent.glob("openai_harmony*.so"))
    assert O200K_BASE_SHA256.encode() in harmony_binary.read_bytes()


def test_harmony_loads_offline_from_the_built_file(harmony_encoding: Any) -> None:
    assert harmony_encoding.name == "HarmonyGptOss"
    ids = harmony_encoding.encode("Hello, world!")
    assert ids == [13225, 11, 2375, 0] and harmony_encoding.decode(ids) == "Hello, world!"
    assert set(harmony_encoding.stop_tokens_for_assistant_actions()) == {200012, 200002}  # call, return


def test_the_tokenizer_is_gptoss_published_one(gptoss_vocab_dir: Path, gptoss_tokenizer: Any) -> None:
    assert sha256_file(gptoss_vocab_dir / "tokenizer" / "tokenizer.json") == TOKENIZER_JSON_SHA256
    # 199,998 o200k ids and 21 special ones; the model's 201,088 rows go beyond the tokenizer
    assert (gptoss_tokenizer.vocab_size, len(gptoss_tokenizer)) == (199_998, 200_019)
    assert MODEL_VOCAB_SIZE == 201_088
    assert (gptoss_tokenizer.bos_token, gptoss_tokenizer.eos_token, gptoss_tokenizer.pad_token) == (
        "<|startoftext|>",
        "<|return|>",
        "<|endoftext|>",
    )
    added = gptoss_tokenizer.added_tokens_decoder
    assert {t.content: i for i, t in added.items()} == HF_SPECIAL_TOKENS
    assert all(t.special for t in added.values())


def test_special_token_ids_are_harmonys_and_tiktokens(gptoss_tokenizer: Any, harmony_encoding: Any) -> None:
    for token, token_id in HF_SPECIAL_TOKENS.items():
        assert gptoss_tokenizer.convert_tokens_to_ids(token) == token_id
        if token != "<|endofprompt|>":  # harmony names 200018 <|reserved_200018|>; tiktoken both
            assert harmony_id(harmony_encoding, token) == token_id, token
    tiktoken_ids = dict(quicktok_harmony_specials())  # tiktoken's o200k_harmony, as quicktok ships it
    assert {t: tiktoken_ids[t] for t in HF_SPECIAL_TOKENS} == HF_SPECIAL_TOKENS
    named = {t for t in harmony_encoding.special_tokens_set if not t.startswith("<|reserved_")}
    assert named <= set(HF_SPECIAL_TOKENS)


@pytest.mark.parametrize("text", TEXTS)
def test_ordinary_text_encodes_as_harmony_encodes_it(
    gptoss_tokenizer: Any, harmony_encoding: Any, text: str
) -> None:
    ids = ordinary_ids(gptoss_tokenizer, text)
    assert ids == harmony_encoding.encode(text, disallowed_special=())
    assert max(ids) < 199_998 and gptoss_tokenizer.decode(ids) == text


def test_special_token_text_needs_split_special_tokens(gptoss_tokenizer: Any) -> None:
    assert gptoss_tokenizer("<|start|>", add_special_tokens=False)["input_ids"] == [200006]
    # transformers resets the backend's encode_special_tokens from split_special_tokens on every call
    gptoss_tokenizer.backend_tokenizer.encode_special_tokens = True
    try:
        assert gptoss_tokenizer("<|start|>", add_special_tokens=False)["input_ids"] == [200006]
    finally:
        gptoss_tokenizer.backend_tokenizer.encode_special_tokens = False
    assert ordinary_ids(gptoss_tokenizer, "<|start|>") == [27, 91, 5236, 91, 29]


def harmony_prompt(encoding: Any, *messages: Message) -> list[int]:
    """harmony's prompt for the assistant's next turn, with today's date as the HF template writes it."""
    today = datetime.datetime.now().strftime("%Y-%m-%d")  # the template's strftime_now: local time
    system = SystemContent.new().with_conversation_start_date(today)
    conversation = Conversation.from_messages([Message.from_role_and_content(Role.SYSTEM, system), *messages])
    return encoding.render_conversation_for_completion(conversation, Role.ASSISTANT)


def template_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_the_official_template_renders_a_chat_as_harmony_does(
    gptoss_tokenizer: Any, harmony_encoding: Any
) -> None:
    chat = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4", "thinking": "Simple sum."},  # past reasoning is dropped
        {"role": "user", "content": "And 3+3? 👀"},
    ]
    expected = harmony_prompt(
        harmony_encoding,
        Message.from_role_and_content(Role.USER, "What is 2+2?"),
        Message.from_role_and_content(Role.ASSISTANT, "4").with_channel("final"),
        Message.from_role_and_content(Role.USER, "And 3+3? 👀"),
    )
    assert template_prompt(gptoss_tokenizer, chat) == expected
    text = gptoss_tokenizer.decode(expected)
    assert text.startswith("<|start|>system<|message|>You are ChatGPT")
    assert text.endswith("<|end|><|start|>assistant")
    assert "Reasoning: medium" in text and "Current date: " in text and "Simple sum." not in text


def test_the_official_template_ends_developer_instructions_with_a_blank_line(
    gptoss_tokenizer: Any, harmony_encoding: Any
) -> None:
    chat = [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
    developer = DeveloperContent.new().with_instructions("Be terse.")
    expected = harmony_prompt(
        harmony_encoding,
        Message.from_role_and_content(Role.DEVELOPER, developer),
        Message.from_role_and_content(Role.USER, "Hi"),
    )
    rendered = gptoss_tokenizer.decode(template_prompt(gptoss_tokenizer, chat))
    by_harmony = harmony_encoding.decode(expected)
    assert "# Instructions\n\nBe terse.<|end|>" in by_harmony
    assert rendered == by_harmony.replace("Be terse.<|end|>", "Be terse.\n\n<|end|>")


def test_tiny_real_vocab_model_loads_and_generates(tiny_gptoss_real_vocab_dir: Path) -> None:
    loaded = load_model(str(tiny_gptoss_real_vocab_dir), allow_demo_fallback=False)
    assert loaded.is_harmony and loaded.model_size == "13m"  # 201,088 x 64 tied embeddings, most of it
    model, tokenizer = loaded.model, loaded.tokenizer
    assert model.config.vocab_size == MODEL_VOCAB_SIZE and len(tokenizer) == 200_019
    assert model.generation_config.eos_token_id == GPTOSS_EOS_IDS
    assert model.generation_config.pad_token_id == GPTOSS_PAD_ID
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1] :].tolist()
    assert 1 <= len(new) <= 4 and all(0 <= i < MODEL_VOCAB_SIZE for i in new)
    assert isinstance(tokenizer.decode(new), str)
