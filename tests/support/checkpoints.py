"""Checkpoints for the start checks: a tiny MXFP4 gpt-oss, and a header-only one of gpt-oss-20b's size."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from engine.mxfp4_checkpoint import FP4_VALUES, GPTOSS_20B_SHAPE, MXFP4_QUANTIZATION, save_random_mxfp4_gptoss


def save_tiny_mxfp4_gptoss(directory: Path, seed: int = 0) -> Path:
    """engine.tiny's gpt-oss, its experts stored as MXFP4 `*_blocks` / `*_scales` as gpt-oss ships them."""
    from transformers import GenerationConfig

    from engine.tiny import build_harmony_tokenizer, gptoss_config, harmony_eos_ids

    tokenizer = build_harmony_tokenizer()
    generation = GenerationConfig(
        eos_token_id=harmony_eos_ids(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    return save_random_mxfp4_gptoss(directory, gptoss_config(tokenizer), tokenizer, generation, seed)


def load_weights(directory: Path) -> dict[str, Any]:
    """Every tensor of a model dir's safetensors shards, by name."""
    from safetensors.torch import load_file

    return {
        key: value
        for file in sorted(directory.glob("*.safetensors"))
        for key, value in load_file(file).items()
    }


def dequantize_reference(blocks: Any, scales: Any) -> Any:
    """MXFP4 [E, out, in/32, 16] bytes and [E, out, in/32] exponents (bias 127) -> [E, in, out] floats."""
    import torch

    table = torch.tensor(FP4_VALUES)
    values = torch.stack([table[(blocks & 0x0F).long()], table[(blocks >> 4).long()]], dim=-1)  # lo, hi
    values = values.reshape(*blocks.shape[:-1], 32) * torch.exp2(scales.float() - 127).unsqueeze(-1)
    return values.reshape(*blocks.shape[:2], -1).transpose(1, 2)


GPTOSS_20B = {  # gpt-oss-20b's config.json, as far as the estimate reads it
    "model_type": "gpt_oss",
    "num_hidden_layers": 24,
    "vocab_size": 201088,
    **GPTOSS_20B_SHAPE,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "quantization_config": MXFP4_QUANTIZATION,
}


def save_header_only_gptoss_20b(directory: Path) -> Path:
    """gpt-oss-20b's tensor names and shapes in a sparse safetensors file: the size without the bytes."""
    c = GPTOSS_20B
    hidden, experts, heads, kv = c["hidden_size"], c["num_local_experts"], c["num_attention_heads"], 8
    tensors: dict[str, tuple[str, list[int]]] = {
        "model.embed_tokens.weight": ("BF16", [c["vocab_size"], hidden]),
        "lm_head.weight": ("BF16", [c["vocab_size"], hidden]),
    }
    for layer in range(c["num_hidden_layers"]):
        at = f"model.layers.{layer}"
        tensors |= {
            f"{at}.self_attn.q_proj.weight": ("BF16", [heads * 64, hidden]),
            f"{at}.self_attn.k_proj.weight": ("BF16", [kv * 64, hidden]),
            f"{at}.self_attn.v_proj.weight": ("BF16", [kv * 64, hidden]),
            f"{at}.self_attn.o_proj.weight": ("BF16", [hidden, heads * 64]),
            f"{at}.mlp.router.weight": ("BF16", [experts, hidden]),
            f"{at}.mlp.experts.gate_up_proj_blocks": ("U8", [experts, 2 * hidden, hidden // 32, 16]),
            f"{at}.mlp.experts.gate_up_proj_scales": ("U8", [experts, 2 * hidden, hidden // 32]),
            f"{at}.mlp.experts.down_proj_blocks": ("U8", [experts, hidden, hidden // 32, 16]),
            f"{at}.mlp.experts.down_proj_scales": ("U8", [experts, hidden, hidden // 32]),
        }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(c))
    write_sparse_safetensors(directory / "model.safetensors", tensors)
    return directory


def write_sparse_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A valid safetensors header whose data is a hole in the file (no disk used)."""
    itemsize = {"BF16": 2, "F32": 4, "U8": 1}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * itemsize[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        handle.truncate(8 + len(encoded) + offset)
