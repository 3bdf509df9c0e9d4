"""bench/device_check.py's measurements on a model loaded in this process: plain `generate` and the
engine's logits against a plain forward pass."""

from __future__ import annotations

import time
from typing import Any

import torch

from engine.cpu.threads import in_short_lived_thread
from engine.engine import Engine
from engine.prompt import render_prompt
from engine.types import GenerationRequest

GiB = 1024**3


def plain_generate_tok_s(loaded: Any, request: GenerationRequest) -> float:
    """Single-stream greedy `model.generate` on the request's prompt (after one warm-up), tok/s."""
    ids = torch.tensor(
        [render_prompt(loaded.tokenizer, loaded.is_harmony, request)], device=loaded.model.device
    )
    in_short_lived_thread(generate, loaded.model, ids, 4)
    start = time.perf_counter()
    new = in_short_lived_thread(generate, loaded.model, ids, request.max_tokens)
    return round(new / (time.perf_counter() - start), 1)


@torch.inference_mode()
def generate(model: Any, ids: torch.Tensor, new_tokens: int) -> int:
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=new_tokens,
        eos_token_id=None,  # like the engine's ignore_eos
        pad_token_id=model.generation_config.pad_token_id,
    )
    _synchronize()
    return int(out.shape[1] - ids.shape[1])


def engine_logits_gap(loaded: Any, request: GenerationRequest) -> dict[str, Any]:
    """The engine's logits (its lm_head's output, in-process, one greedy request) at each generated token
    against a plain forward pass over the prompt and those tokens: max abs diff and argmax agreement."""
    captured: list[torch.Tensor] = []
    hook = loaded.model.lm_head.register_forward_hook(
        lambda _module, _args, output: captured.append(output[0, -1].float().cpu())
    )
    engine = in_short_lived_thread(Engine.from_loaded, loaded, "latency_first", 1)
    try:
        result = engine.submit(request).result(timeout=300)
    finally:
        engine.shutdown()
        hook.remove()
    steps = captured[-result.completion_tokens :]  # one lm_head call per token; before: prefill chunks
    tokens = [int(step.argmax()) for step in steps]  # greedy: each token is its step's argmax
    prompt = render_prompt(loaded.tokenizer, loaded.is_harmony, request)
    ids = torch.tensor([prompt + tokens[:-1]], device=loaded.model.device)
    with torch.inference_mode():
        plain = loaded.model(input_ids=ids).logits[0, len(prompt) - 1 :].float().cpu()
    engine_logits = torch.stack(steps)
    return {
        "steps": len(steps),
        "max_abs_diff": float(f"{float((engine_logits - plain).abs().max()):.3g}"),
        "logit_range": float(f"{float(plain.max() - plain.min()):.3g}"),
        "lm_head_calls": len(captured),
        "argmax_agree": int((plain.argmax(-1) == engine_logits.argmax(-1)).sum()),
    }


def peak_memory(engine_device_peak: int) -> str:
    """This process's torch peak (plain generate, logits) and the device's peak in use during the
    engine child's runs (every process, sampled), in GiB."""
    if not torch.cuda.is_available():
        return "n/a (no CUDA device)"
    here = torch.cuda.max_memory_allocated() / GiB
    engine = engine_device_peak / GiB
    return f"plain/logits max_memory_allocated {here:.1f} GiB; engine runs, device in use {engine:.1f} GiB"


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
