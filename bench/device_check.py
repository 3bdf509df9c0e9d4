"""The engine on a CUDA GPU: a random-weight gpt-oss with gpt-oss-20b's layer shape, fewer layers.

No gpt-oss weights can be fetched on a lent GPU machine, so this builds one (random weights,
bf16, the harmony tokenizer of engine/tiny.py), saves it, and then runs what a worker
runs: `load_model` (device, dtype, attention), `Engine` (the CB manager sized by transformers
for the GPU), 8 concurrent threads with exact token counts, greedy agreement alone vs in a batch,
and cancel. Then `bench/engine_speed.py --model <dir>` measures scenarios a-d on it.

    python bench/device_check.py [--layers 4] [--out DIR] [--skip-bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.engine import Engine  # noqa: E402
from engine.loader import load_model  # noqa: E402
from engine.tiny import build_harmony_tokenizer, gptoss_config, harmony_eos_ids  # noqa: E402
from engine.types import GenerationRequest, GenerationResult, TokenDelta  # noqa: E402
from tests.support.engine_runs import run_all  # noqa: E402


def build_random_gptoss(directory: Path, layers: int) -> Path:
    """gpt-oss-20b's layer (2880 wide, 32 experts, top-4, 64 heads, 8 KV heads), `layers` deep."""
    from transformers import GenerationConfig, GptOssForCausalLM

    tokenizer = build_harmony_tokenizer()
    eos = harmony_eos_ids(tokenizer)
    config = gptoss_config(
        tokenizer,
        hidden_size=2880,
        intermediate_size=2880,
        num_hidden_layers=layers,
        num_attention_heads=64,
        num_key_value_heads=8,
        head_dim=64,
        num_local_experts=32,
        num_experts_per_tok=4,
        sliding_window=128,
        max_position_embeddings=8192,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = GptOssForCausalLM(config).bfloat16().eval()
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    torch.cuda.empty_cache()
    return directory


def ask(text: str, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": text},), **kwargs)  # type: ignore[arg-type]


def concurrent(engine: Engine, requests: list[GenerationRequest]) -> list[GenerationResult]:
    return run_all(engine, requests, timeout=300)


def checks(model_dir: Path) -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    report: dict = {"torch": torch.__version__, "gpu": gpu}
    import transformers

    report["transformers"] = transformers.__version__
    start = time.perf_counter()
    loaded = load_model(str(model_dir), allow_demo_fallback=False)
    model = loaded.model
    report["load"] = {
        "seconds": round(time.perf_counter() - start, 1),
        "device": loaded.device,
        "gpu_mode": loaded.gpu_mode,
        "dtype": str(model.dtype),
        "attn": model.config._attn_implementation,
        "params_b": round(model.num_parameters() / 1e9, 2),
    }
    print("load:", report["load"], flush=True)
    engine = Engine.from_loaded(loaded, "latency_first", 32)
    try:
        engine.submit(ask("warm up", max_tokens=4)).result(timeout=300)
        report["engine_attn"] = model.config._attn_implementation
        report["cache"] = engine.load()
        requests = [ask(f"job {i} " * (i + 1), max_tokens=16 + 8 * i, ignore_eos=True) for i in range(8)]
        results = concurrent(engine, requests)
        report["eight_threads_exact_counts"] = all(
            r.completion_tokens == q.max_tokens and r.finish_reason == "length"
            for q, r in zip(requests, results, strict=True)
        )
        target = ask("reference prompt", max_tokens=32, ignore_eos=True)
        alone = engine.submit(target).result(timeout=300)
        crowd = [ask(f"noise {i} " * (3 * i + 1), max_tokens=48, ignore_eos=True) for i in range(7)]
        batched = concurrent(engine, [*crowd[:3], target, *crowd[3:]])[3]
        report["greedy_alone_equals_batched"] = (alone.reasoning, alone.content) == (
            batched.reasoning,
            batched.content,
        )
        handle = engine.submit(ask("long", max_tokens=3000, ignore_eos=True))
        at_cancel, final = 0, None
        for event in handle.events(timeout=300):
            if isinstance(event, TokenDelta) and not at_cancel and event.completion_tokens >= 5:
                at_cancel = event.completion_tokens
                handle.cancel()
            if isinstance(event, GenerationResult):
                final = event
        report["cancel"] = {
            "at": at_cancel,
            "final_tokens": final.completion_tokens if final else None,
            "finish_reason": final.finish_reason if final else None,
        }
        timing = {}
        for n in (1, 8, 32):
            t0 = time.perf_counter()
            done = concurrent(engine, [ask(f"timing {i}", max_tokens=128, ignore_eos=True) for i in range(n)])
            wall = time.perf_counter() - t0
            timing[n] = round(sum(r.completion_tokens for r in done) / wall, 1)
        report["engine_tok_s_by_concurrency"] = timing
        print("engine:", {k: v for k, v in report.items() if k not in ("load",)}, flush=True)
    finally:
        engine.shutdown()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--model-dir", default="/tmp/gptoss-random")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "this check needs a CUDA GPU"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model_dir)
    t0 = time.perf_counter()
    build_random_gptoss(model_dir, args.layers)
    print(f"built {args.layers}-layer random gpt-oss in {time.perf_counter() - t0:.0f} s", flush=True)
    report = checks(model_dir)
    (out / "device_check.json").write_text(json.dumps(report, indent=2))
    if not args.skip_bench:
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "engine.py"), "--model", str(model_dir)], check=False
        )


if __name__ == "__main__":
    main()
