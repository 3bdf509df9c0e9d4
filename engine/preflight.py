"""Before a worker takes work: can its profile's model, GPU mode and memory work on this machine?

Pure functions over what a profile asks for (ProfileSpec), what was found of its model (Located, by
engine/loader.py) and what the machine has (Machine): they unit-test with fake GPUs. Each refusal is
one PreflightError naming the setting, e.g. `profiles.toml [profiles.quality_first] model =
"/models/gpt-oss-120b": no such directory, .gguf file or cached model id ...`. Only detect_machine()
imports torch, and only on a machine with a GPU device node.

The memory estimate: the checkpoint's weights as the loader holds them on GPU (bf16; MXFP4 experts
packed or dequantized to bf16) plus the KV cache of `max_batch` requests of `max_tokens` +
PROMPT_TOKENS tokens each, against the free memory of the visible GPUs less HEADROOM.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

GPU_MODES = ("pipeline", "tensor")
GiB = 1024**3
PROMPT_TOKENS = 1024  # prompt tokens per request assumed in the KV estimate, on top of max_tokens
HEADROOM = 0.10  # of the GPUs' free memory kept for activations, the CUDA context and fragmentation
BF16_BYTES = 2
MXFP4_KERNELS_REPO = "kernels-community/gpt-oss-triton-kernels"  # what transformers asks `kernels` for
PACED_PREFIX = "paced:"  # model = "paced:TOKENS_PER_S": the paced stand-in for benchmarks (engine/paced.py)
PACED_CONTEXT = 131072  # the paced engine's context: gpt-oss's


class PreflightError(RuntimeError):
    """This profile cannot work on this machine; the message names the setting and why."""


@dataclass(frozen=True)
class ProfileSpec:
    """What a profile asks of the machine (from profiles.toml)."""

    name: str
    model: str
    gpu_mode: str
    max_batch: int
    max_tokens: int
    allow_demo: bool | None = None  # None: true without CUDA GPUs, false with them
    profiles_file: str = "profiles.toml"

    def setting(self, key: str, value: object) -> str:
        """`profiles.toml [profiles.<name>] key = value`, the way the user wrote it."""
        return f"{self.profiles_file} [profiles.{self.name}] {key} = {json.dumps(value)}"


@dataclass(frozen=True)
class Machine:
    """What this machine offers a model: its visible CUDA GPUs and how the process was launched."""

    gpu_free_bytes: tuple[int, ...] = ()  # free memory of each visible CUDA device; () = no CUDA
    distributed: bool = False  # torch.distributed initialised, or a torchrun launch (WORLD_SIZE > 1)
    mxfp4_kernels: bool = False  # MXFP4 can stay packed offline: `kernels`, Triton, the kernel repo cached

    @property
    def has_gpus(self) -> bool:
        return bool(self.gpu_free_bytes)


@dataclass(frozen=True)
class Located:
    """Where a profile's `model` was found (engine/loader.py locate_model)."""

    kind: Literal["dir", "gguf", "demo", "paced", "absent", "incomplete"]
    path: Path | None = None
    detail: str = ""  # why absent or incomplete


@dataclass(frozen=True)
class Checkpoint:
    """A model dir's sizes, read from config.json and the safetensors headers (no tensor is read)."""

    packed_bytes: int  # weights on GPU: bf16, MXFP4 experts packed (blocks and scales as stored)
    dequantized_bytes: int  # weights on GPU: bf16, MXFP4 experts dequantized to bf16
    mxfp4: bool  # config.json quantization_config.quant_method == "mxfp4"
    windows: tuple[int | None, ...]  # per layer: its sliding window, or None (full attention)
    kv_bytes_per_layer_token: int  # K and V of one token in one layer, bf16
    max_context: int

    def kv_bytes(self, requests: int, tokens: int) -> int:
        """The KV cache of `requests` requests of `tokens` tokens each (sliding layers keep a window)."""
        tokens = min(tokens, self.max_context)
        held = sum(tokens if window is None else min(tokens, window) for window in self.windows)
        return requests * held * self.kv_bytes_per_layer_token


@dataclass(frozen=True)
class Plan:
    """What the loader does for a profile that passed: what it loads, how, and the memory estimate."""

    source: str  # a model dir, a .gguf file, or "demo"
    gpu_mode: str  # "cpu", "single", "pipeline" or "tensor": what will really run
    demo_fallback: bool  # the configured model is absent and the demo serves in its place
    mxfp4_packed: bool | None  # None: not an MXFP4 checkpoint; False: dequantized to bf16
    needed_bytes: int | None = None  # the estimate checked against the GPUs (None: not checked)


def plan_profile(spec: ProfileSpec, machine: Machine, located: Located) -> Plan:
    """Check the profile against the machine; return what to load, or raise one PreflightError."""
    model = spec.setting("model", spec.model)
    if located.kind == "paced":  # no model, no device: nothing here to check but its rate
        try:
            paced_rate(spec.model)
        except ValueError as exc:
            raise PreflightError(f"{model}: {exc}") from exc
        return Plan(spec.model, "none", demo_fallback=False, mxfp4_packed=None)
    gpu_mode = check_gpu_mode(spec, machine)
    if located.kind == "incomplete":
        raise PreflightError(f"{model}: {located.detail}")
    if located.kind == "absent":
        check_demo_allowed(spec, machine, located.detail)
        return Plan("demo", gpu_mode, demo_fallback=True, mxfp4_packed=None)
    if located.kind == "demo" or located.path is None:
        return Plan("demo", gpu_mode, demo_fallback=False, mxfp4_packed=None)
    if located.kind == "gguf":
        return Plan(str(located.path), gpu_mode, demo_fallback=False, mxfp4_packed=None)
    try:
        checkpoint = read_checkpoint(located.path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PreflightError(f"{model}: cannot read the checkpoint in {located.path}: {exc}") from exc
    packed = choose_mxfp4(machine, checkpoint)
    needed = check_fits(spec, machine, checkpoint, packed) if machine.has_gpus else None
    return Plan(str(located.path), gpu_mode, demo_fallback=False, mxfp4_packed=packed, needed_bytes=needed)


def is_paced(model: str) -> bool:
    """`model` asks for the paced engine (engine/paced.py), never a model (and never the demo)."""
    return model.startswith(PACED_PREFIX)


def paced_rate(model: str) -> float:
    """The tokens per second per sequence of a `paced:N` model; ValueError unless N is a positive number."""
    text = model.removeprefix(PACED_PREFIX)
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(
            f"the paced engine needs a positive number of tokens per second (paced:200), not {text!r}"
        )
    return rate


def check_gpu_mode(spec: ProfileSpec, machine: Machine) -> str:
    """The mode that will run: "cpu" without GPUs; tensor parallelism only where it can really run."""
    if spec.gpu_mode not in GPU_MODES:
        setting = spec.setting("gpu_mode", spec.gpu_mode)
        raise PreflightError(f"{setting}: gpu_mode must be one of {GPU_MODES}")
    gpus = len(machine.gpu_free_bytes)
    if gpus == 0:
        return "cpu"
    if spec.gpu_mode == "pipeline":
        return "pipeline" if gpus > 1 else "single"
    if gpus > 1 and machine.distributed:
        return "tensor"
    missing = [f"{gpus} GPU visible" if gpus == 1 else "", "" if machine.distributed else "no torchrun"]
    raise PreflightError(
        f"{spec.setting('gpu_mode', spec.gpu_mode)}: tensor parallelism needs more than one visible GPU "
        f"and a torchrun launch (torch.distributed), and this worker has "
        f"{' and '.join(m for m in missing if m)}; start it under torchrun on several GPUs, or set "
        'gpu_mode = "pipeline" (layers split over the visible GPUs)'
    )


def allow_demo(spec: ProfileSpec, machine: Machine) -> bool:
    """The profile's allow_demo, else its default: true without CUDA GPUs (a laptop), false with them."""
    return spec.allow_demo if spec.allow_demo is not None else not machine.has_gpus


def check_demo_allowed(spec: ProfileSpec, machine: Machine, detail: str) -> None:
    """The configured model is absent: the demo may stand in only where allow_demo says so."""
    if allow_demo(spec, machine):
        return
    default = " (its default where CUDA GPUs are visible)" if spec.allow_demo is None else ""
    raise PreflightError(
        f"{spec.setting('model', spec.model)}: {detail}; "
        f"nothing is downloaded, and the demo model may not stand in: allow_demo is false for profile "
        f"{spec.name}{default}. Put the weights at that path or in the local HF cache, or set "
        "allow_demo = true to serve the demo model in its place"
    )


def choose_mxfp4(machine: Machine, checkpoint: Checkpoint) -> bool | None:
    """MXFP4 experts stay packed only on GPUs with kernels usable offline; else they are dequantized."""
    if not checkpoint.mxfp4:
        return None
    return machine.has_gpus and machine.mxfp4_kernels


def check_fits(spec: ProfileSpec, machine: Machine, checkpoint: Checkpoint, packed: bool | None) -> int:
    """Return the estimated bytes the profile needs on the visible GPUs; refuse when they do not fit."""
    weights = checkpoint.packed_bytes if packed or not checkpoint.mxfp4 else checkpoint.dequantized_bytes
    tokens = spec.max_tokens + PROMPT_TOKENS
    kv = checkpoint.kv_bytes(spec.max_batch, tokens)
    free = sum(machine.gpu_free_bytes)
    usable = int(free * (1 - HEADROOM))
    if weights + kv <= usable:
        return weights + kv
    per_request = checkpoint.kv_bytes(1, tokens)
    batch_fits = (usable - weights) // per_request if weights < usable and per_request else 0
    if batch_fits:
        fits = (
            f"at most max_batch = {batch_fits} fits. Lower max_batch or max_tokens, or make more GPUs visible"
        )
    else:
        fits = "the weights alone do not fit" if weights >= usable else "no request's KV cache fits too"
        fits += ". Make more GPUs visible or use a smaller model"
    how = ""
    if checkpoint.mxfp4 and not packed:
        how = (
            "; its MXFP4 experts are dequantized to bf16 here (packed, which needs the `kernels` package, "
            f"Triton and {MXFP4_KERNELS_REPO} in the local HF cache, the weights would take "
            f"{_gib(checkpoint.packed_bytes)})"
        )
    raise PreflightError(
        f"{spec.setting('model', spec.model)} with max_batch = {spec.max_batch}: needs about "
        f"{_gib(weights + kv)} (weights {_gib(weights)} + KV cache {_gib(kv)} for {spec.max_batch} x "
        f"{tokens} tokens) but the {len(machine.gpu_free_bytes)} visible GPU(s) have {_gib(free)} free "
        f"({_gib(usable)} usable, {HEADROOM:.0%} kept free){how}; {fits} (CUDA_VISIBLE_DEVICES)"
    )


def read_checkpoint(path: Path) -> Checkpoint:
    """Sizes of the model dir at `path` from its config.json and weight files' headers."""
    config = json.loads((path / "config.json").read_text())
    text = config.get("text_config") or config
    quantization = config.get("quantization_config") or {}
    packed = dequantized = 0
    for file in sorted(path.glob("*.safetensors")):
        for name, tensor in _safetensors_header(file).items():
            if name == "__metadata__":
                continue
            count = math.prod(tensor["shape"])
            if name.endswith("_blocks"):  # two FP4 values a byte, one bf16 each when dequantized
                packed, dequantized = packed + count, dequantized + count * 2 * BF16_BYTES
            elif name.endswith("_scales"):  # one byte a block of 32 values; none once dequantized
                packed += count
            else:
                packed, dequantized = packed + count * BF16_BYTES, dequantized + count * BF16_BYTES
    for file in sorted(path.glob("*.bin")):  # pickled weights: their size as stored
        packed, dequantized = packed + file.stat().st_size, dequantized + file.stat().st_size
    layers = int(text["num_hidden_layers"])
    kinds = text.get("layer_types") or ["full_attention"] * layers
    window = text.get("sliding_window")
    heads = int(text["num_attention_heads"])
    head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
    return Checkpoint(
        packed_bytes=packed,
        dequantized_bytes=dequantized,
        mxfp4=quantization.get("quant_method") == "mxfp4",
        windows=tuple(window if kind == "sliding_attention" and window else None for kind in kinds),
        kv_bytes_per_layer_token=2 * int(text.get("num_key_value_heads") or heads) * head_dim * BF16_BYTES,
        max_context=int(text.get("max_position_embeddings") or 4096),
    )


def has_weights(path: Path) -> bool:
    return any(path.glob("*.safetensors")) or any(path.glob("*.bin"))


def _safetensors_header(file: Path) -> dict[str, dict[str, Any]]:
    """The JSON header of a safetensors file: each tensor's dtype, shape and offsets."""
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, dict[str, Any]] = json.loads(handle.read(length))
    return header


def hf_hub_cache() -> Path:
    """Return the HF hub cache dir as the environment names it now."""
    if hub_cache := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(hub_cache).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("HF_HOME") or Path(xdg) / "huggingface").expanduser() / "hub"


# Device nodes a CUDA (or ROCm) GPU shows in a Linux box, container or WSL2; with none of them torch
# finds no GPU either, and importing it only to be told so costs seconds at every worker start.
GPU_DEVICE_NODES = ("nvidia[0-9]*", "kfd", "dxg")


def gpu_device_nodes(dev: Path = Path("/dev")) -> list[Path]:
    """The GPU device nodes under /dev (none on a CPU-only machine)."""
    return [node for pattern in GPU_DEVICE_NODES for node in dev.glob(pattern)]


def detect_machine() -> Machine:
    """This process's visible CUDA GPUs (free memory), launch and MXFP4 kernels; imports torch where a
    GPU device node exists."""
    if not gpu_device_nodes():
        return Machine()
    import torch

    if not torch.cuda.is_available():
        return Machine()
    count = torch.cuda.device_count()
    free = tuple(torch.cuda.mem_get_info(index)[0] for index in range(count))
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    launched = int(os.environ.get("WORLD_SIZE") or 1) > 1  # torchrun: transformers initialises it at load
    capable = all(torch.cuda.get_device_capability(index) >= (7, 5) for index in range(count))
    return Machine(free, initialised or launched, capable and mxfp4_kernels_offline())


def mxfp4_kernels_offline() -> bool:
    """Whether transformers could keep MXFP4 packed without the hub: `kernels` and Triton importable and
    the kernel repo it fetches already in the local HF cache."""
    if importlib.util.find_spec("kernels") is None or importlib.util.find_spec("triton") is None:
        return False
    snapshots = hf_hub_cache() / f"models--{MXFP4_KERNELS_REPO.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def _gib(count: int) -> str:
    return f"{count / GiB:.1f} GiB"
