"""A tiny random-weight gpt-oss model and a harmony tokenizer, for tests and benchmarks.

The model is a real `GptOssForCausalLM` (MoE, attention sinks, sliding window), only small,
so the true gpt-oss code path runs on a CPU in seconds. The tokenizer is byte-level (any text
encodes) and carries the harmony special tokens. It has no chat template: gpt-oss prompts are
rendered by engine/prompt.py token by token, never through a template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HARMONY_SPECIAL_TOKENS = [
    "<|startoftext|>",
    "<|endoftext|>",
    "<|return|>",
    "<|constrain|>",
    "<|channel|>",
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|call|>",
]


def build_harmony_tokenizer() -> Any:
    """Return a byte-level fast tokenizer with the harmony special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|startoftext|>",
        eos_token="<|return|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": HARMONY_SPECIAL_TOKENS})
    return tokenizer


# The tiny model's shape; bench/device_check.py passes gpt-oss-20b's layer shape instead.
TINY_SHAPE: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "sliding_window": 16,
    "max_position_embeddings": 4096,
}


def harmony_eos_ids(tokenizer: Any) -> list[int]:
    """gpt-oss ends a turn with <|return|> or <|call|>."""
    return [tokenizer.convert_tokens_to_ids(t) for t in ("<|return|>", "<|call|>")]


def gptoss_config(tokenizer: Any, **shape: int) -> Any:
    """A GptOssConfig for the harmony tokenizer: TINY_SHAPE with `shape` overrides; layers alternate
    sliding-window and full attention, as gpt-oss's do."""
    from transformers import GptOssConfig

    sized: dict[str, Any] = {**TINY_SHAPE, **shape}
    kinds = ("sliding_attention", "full_attention")
    return GptOssConfig(
        vocab_size=len(tokenizer),
        layer_types=[kinds[i % 2] for i in range(sized["num_hidden_layers"])],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=harmony_eos_ids(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
        **sized,
    )


def build_tiny_gptoss(seed: int = 0) -> tuple[Any, Any]:
    """Build (model, tokenizer): a random-weight GptOssForCausalLM small enough for CI."""
    import torch
    from transformers import GenerationConfig, GptOssForCausalLM

    tokenizer = build_harmony_tokenizer()
    eos_ids = harmony_eos_ids(tokenizer)
    config = gptoss_config(tokenizer)
    torch.manual_seed(seed)
    model = GptOssForCausalLM(config).float().eval()
    # Random init is near-uniform; scale the head so greedy decoding has clear winners.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    return model, tokenizer


def save_tiny_gptoss(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny model and tokenizer to `directory` (a local model dir any loader can read)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny_gptoss(seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
