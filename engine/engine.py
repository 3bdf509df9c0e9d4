"""The generation engine: one model, one continuous batch, many concurrent requests.

Built once per worker process (lazily, after the fork) around transformers' continuous
batching: requests join and leave the running batch at every decode step, so a short job never
waits behind a long one. Any number of threads may `submit` at once; each gets a handle whose
`events()` yields text deltas and then one final result.
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.cpu.attention import attention_choice, restore_attention, use_cpu_paged_attention
from engine.cpu.priority import lower_pool_after_first_step, nice_from_env
from engine.cpu.threads import CoreShare
from engine.request_handle import DeltaCallback, RequestHandle
from engine.request_table import RequestTable
from engine.sampling import install_request_sampler
from engine.types import GenerationRequest, ModelTags

log = logging.getLogger(__name__)

ENGINE_NAME = "transformers-cb"


@dataclass(frozen=True)
class CacheSizing:
    """Paged KV cache limits (TGI-style names). None lets transformers size it (GPU)."""

    page_size: int | None = None
    num_blocks: int | None = None
    max_batch_tokens: int | None = None
    max_memory_percent: float | None = None  # of free GPU memory for the KV cache (None: transformers' 0.8)

    @classmethod
    def for_cpu(cls, max_batch: int, tokens_per_request: int = 1024) -> CacheSizing:
        # transformers' defaults target GPUs and were ~10x slower on CPU: small pages, small prefill chunks.
        page_size = 32
        num_blocks = max(128, max_batch * tokens_per_request // page_size)
        return cls(page_size=page_size, num_blocks=num_blocks, max_batch_tokens=512)

    @classmethod
    def for_cuda(cls, attention: str) -> CacheSizing:
        # Without a flash kernel (none can be fetched offline) gpt-oss runs "paged|eager", which builds
        # [heads, step tokens, batch keys] scores: on an H200 transformers' sizing left too little memory for
        # them (a 16.5 GB softmax failed with 108 GB held by the cache). Smaller steps, half the memory.
        if "flash" in attention:
            return cls()
        return cls(max_batch_tokens=512, max_memory_percent=0.5)


class _ImmediateLoop:
    """Stands in for an asyncio loop in transformers' OutputRouter: run callbacks in place."""

    def call_soon_threadsafe(self, callback: Any, *args: Any) -> None:
        callback(*args)


class BatchEngine(RequestTable):
    """An engine whose batch runs in this process: a request joins it as prompt ids (`add_prepared`, which
    the engine process's loop calls too, engine/process.py)."""

    def submit(self, request: GenerationRequest, on_delta: DeltaCallback | None = None) -> RequestHandle:
        """Queue a request into the running batch; thread-safe. Its text is decoded on the thread that
        iterates the handle's events (engine/request_handle.py)."""
        handle, input_ids = self.open_request(request, on_delta)
        try:
            self.add_prepared(handle.request_id, input_ids, request, handle.outputs.put)
        except RuntimeError:
            self.forget(handle.request_id)
            raise
        return handle

    @abstractmethod
    def add_prepared(
        self,
        request_id: str,
        input_ids: list[int],
        request: GenerationRequest,
        on_output: Callable[[Any], None],
        loop: Any = None,
    ) -> None:
        """Add rendered prompt ids to the batch; each of its outputs goes to `on_output`, called through
        `loop.call_soon_threadsafe` (default: in place, on the generation thread); RuntimeError when the
        engine takes no more requests."""


class Engine(BatchEngine):
    """A loaded model behind a running continuous-batching manager."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        tags: ModelTags,
        is_harmony: bool,
        max_batch: int,
        sizing: CacheSizing | None = None,
    ) -> None:
        from transformers import ContinuousBatchingConfig, GenerationConfig

        cpu_attention = attention_choice(os.environ.get("GPTOSS_CPU_ATTENTION", "auto"))  # read at start
        cpu_nice = nice_from_env()
        self.model = model
        self.tokenizer = tokenizer
        self.tags = tags
        self.is_harmony = is_harmony
        self.max_batch = max_batch
        self.max_context = int(getattr(model.config.get_text_config(), "max_position_embeddings", 4096))
        self.eos_ids = set(_eos_ids(model, tokenizer))
        self.core_share: CoreShare | None = None  # CPU: the pool follows the cores left free
        super().__init__()
        if sizing is None:
            attention = str(model.config._attn_implementation)
            cuda = model.device.type == "cuda"
            sizing = CacheSizing.for_cuda(attention) if cuda else CacheSizing.for_cpu(max_batch)
        cb_config = ContinuousBatchingConfig(
            page_size=sizing.page_size or 256,
            num_blocks=sizing.num_blocks,
            max_batch_tokens=sizing.max_batch_tokens,
            max_memory_percent=sizing.max_memory_percent,
            max_requests_per_batch=max_batch,
            scheduler_type="prefill_first",
            allow_block_sharing=False,
        )
        generation_config = GenerationConfig(
            do_sample=False,  # RequestSampler draws sampled rows itself; see engine/sampling.py
            max_new_tokens=256,
            eos_token_id=sorted(self.eos_ids) or -1,
            pad_token_id=tokenizer.pad_token_id,
        )
        self.manager = model.init_continuous_batching(
            generation_config=generation_config, continuous_batching_config=cb_config
        )
        install_request_sampler(self.manager)
        self.cpu_attention = use_cpu_paged_attention(model, cpu_attention)  # after the manager chose
        if model.device.type == "cpu":
            import torch

            self.core_share = CoreShare(torch.get_num_threads())
            self.core_share.install(self.manager)
            lower_pool_after_first_step(self.manager, cpu_nice)
        self._loop = _ImmediateLoop()
        self.manager.start()

    @classmethod
    def from_loaded(
        cls, loaded: Any, profile: str, max_batch: int, sizing: CacheSizing | None = None
    ) -> Engine:
        """Build an engine from engine.loader.LoadedModel."""
        tags = ModelTags(ENGINE_NAME, loaded.model_id, loaded.model_size, loaded.gpu_mode, profile)
        return cls(loaded.model, loaded.tokenizer, tags, loaded.is_harmony, max_batch, sizing)

    # -- requests ---------------------------------------------------------------------------

    def add_prepared(
        self,
        request_id: str,
        input_ids: list[int],
        request: GenerationRequest,
        on_output: Callable[[Any], None],
        loop: Any = None,
    ) -> None:
        router = self.manager.output_router
        with router._lock:
            router.result_handlers[request_id] = (on_output, loop or self._loop)
        sampling: dict[str, Any] = {"temperature": float(request.temperature), "top_p": float(request.top_p)}
        if request.seed is not None:
            sampling["seed"] = int(request.seed)
        added = self.manager.add_request(
            input_ids,
            request_id=request_id,
            max_new_tokens=request.max_tokens,
            streaming=True,
            record_timestamps=True,
            eos_token_id=[] if request.ignore_eos else sorted(self.eos_ids),
            **sampling,
        )
        if added is None:
            with router._lock:
                router.result_handlers.pop(request_id, None)
            raise RuntimeError("the engine is not accepting requests (stopping or failed)")

    def drop(self, request_id: str) -> None:
        """Remove a request from the batch without telling its handle."""
        router = self.manager.output_router
        with router._lock:
            router.result_handlers.pop(request_id, None)
        self.manager.cancel_request(request_id)

    def forget(self, request_id: str) -> None:
        super().forget(request_id)
        router = self.manager.output_router
        with router._lock:
            router.result_handlers.pop(request_id, None)

    # -- state ------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return bool(self.manager.is_running())

    def load(self) -> dict[str, int]:
        """Running and waiting request counts (for metrics)."""
        processor = self.manager.batch_processor
        if processor is None:
            return {"running": 0, "waiting": 0}
        scheduler = processor.scheduler
        return {"running": len(scheduler.active_requests), "waiting": len(scheduler.waiting_requests)}

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the batch loop; unfinished requests end with an error."""
        if self.manager.is_running():
            self.manager.stop(block=True, timeout=timeout)
        if self.core_share is not None:
            self.core_share.stop()
        restore_attention(self.model)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return [int(i) for i in ids if i is not None and int(i) >= 0]
