"""A random-weight gpt-oss checkpoint in the released MXFP4 layout, written tensor by tensor.

gpt-oss ships its MoE experts as MXFP4: `*_blocks` (two FP4 values a byte, [E, out, in/32, 16]) and
`*_scales` (one power-of-two exponent, bias 127, per block of 32: [E, out, in/32]), with
`quantization_config: {"quant_method": "mxfp4"}` in config.json; everything else is bf16. The tests
write a tiny one, bench/device_check.py one of gpt-oss-20b's shape: no bf16 model of that size is
built, the packed bytes are drawn and saved one layer (one safetensors shard) at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# FP4 (e2m1) values by nibble, as the MXFP4 format defines them (low nibble first in each byte).
FP4_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
MXFP4_QUANTIZATION = {
    "quant_method": "mxfp4",
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
}
# gpt-oss-20b's layer, as its config.json gives it (24 of them, vocab 201,088); the 120b is wider in
# experts (128) and deeper (36)
GPTOSS_20B_SHAPE = {
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "num_local_experts": 32,
    "num_experts_per_tok": 4,
    "sliding_window": 128,
    "max_position_embeddings": 131072,
}
EXPERT_WEIGHTS = ("experts.gate_up_proj", "experts.down_proj")
# Exponents 2^-7 .. 2^-5: random FP4 values (std ~2.9) then have a std of about 0.02-0.1, like a
# trained model's, so activations stay finite through 24 layers in bf16.
SCALE_EXPONENTS = (120, 123)
DENSE_STD = 0.02


def save_random_mxfp4_gptoss(
    directory: Path, config: Any, tokenizer: Any, generation_config: Any, seed: int = 0, device: str = "cpu"
) -> Path:
    """Write config, tokenizer and random weights (one shard per layer, an index); `device` draws them."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    shards = shard_shapes(config)
    generator = torch.Generator(device=device).manual_seed(seed)
    weight_map: dict[str, str] = {}
    for number, shapes in enumerate(shards, start=1):
        name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        state = {key: tensor.cpu() for key, tensor in random_tensors(shapes, generator, device).items()}
        save_file(state, directory / name, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(state, name)
        del state
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    config.save_pretrained(directory)
    stored = json.loads((directory / "config.json").read_text())
    stored |= {"quantization_config": MXFP4_QUANTIZATION, "dtype": "bfloat16"}
    (directory / "config.json").write_text(json.dumps(stored, indent=1))
    generation_config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def shard_shapes(config: Any) -> list[dict[str, tuple[int, ...]]]:
    """The model's tensor names and shapes (from a model on the meta device): the layers one shard
    each, then the rest (embeddings, final norm, head)."""
    import torch
    from transformers import GptOssForCausalLM

    with torch.device("meta"):
        model = GptOssForCausalLM(config)
    layers: list[dict[str, tuple[int, ...]]] = [{} for _ in range(config.num_hidden_layers)]
    rest: dict[str, tuple[int, ...]] = {}
    for key, tensor in model.state_dict().items():
        parts = key.split(".")
        target = layers[int(parts[2])] if parts[:2] == ["model", "layers"] else rest
        target[key] = tuple(tensor.shape)
    return [*layers, rest]


def random_tensors(shapes: dict[str, tuple[int, ...]], generator: Any, device: str) -> dict[str, Any]:
    """Expert weights as MXFP4 blocks and scales; norms 1, biases 0, other weights N(0, 0.02) in bf16."""
    import torch

    state = {}
    for key, shape in shapes.items():
        if key.endswith(EXPERT_WEIGHTS):
            experts, inputs, outputs = shape  # [E, in, out]; MXFP4 stores [E, out, in/32, 16]
            packed = (experts, outputs, inputs // 32)
            state[f"{key}_blocks"] = torch.randint(
                0, 256, (*packed, 16), dtype=torch.uint8, generator=generator, device=device
            )
            state[f"{key}_scales"] = torch.randint(
                *SCALE_EXPONENTS, packed, dtype=torch.uint8, generator=generator, device=device
            )
        elif key.endswith("norm.weight"):
            state[key] = torch.ones(shape, dtype=torch.bfloat16, device=device)
        elif key.endswith("bias"):
            state[key] = torch.zeros(shape, dtype=torch.bfloat16, device=device)
        else:
            dense = torch.randn(shape, generator=generator, device=device) * DENSE_STD
            state[key] = dense.to(torch.bfloat16)
    return state
