"""The requests an engine runs, by id: how a request becomes prompt ids and a handle.

Shared by engine.engine's engines and the engine-process proxy (engine/process.py). Kept apart from
engine.engine so that a worker, which only talks to its engine's child process, never imports torch's
and transformers' generation code (seconds of CPU at every worker start).
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from typing import Any

from engine.harmony import special_token_names
from engine.prompt import prefill_ids, render_prompt
from engine.request_handle import CANCELLED, DeltaCallback, RequestHandle
from engine.request_stream import RequestStream
from engine.types import GenerationRequest


class RequestTable(ABC):
    """The requests an engine runs, by id, and how a request becomes prompt ids and a handle: what
    Engine and the engine-process proxy (engine/process.py) share of `submit`."""

    tokenizer: Any
    is_harmony: bool
    eos_ids: set[int]
    max_context: int

    def __init__(self) -> None:
        self._handles: dict[str, RequestHandle] = {}
        self._lock = threading.Lock()
        self._clock_offset = time.time() - time.perf_counter()  # perf_counter is system-wide on Linux
        self._specials: dict[int, str] | None = None

    def harmony_specials(self) -> dict[int, str] | None:
        """The vocabulary's harmony special ids (None for a model that does not speak harmony)."""
        if not self.is_harmony:
            return None
        if self._specials is None:
            self._specials = special_token_names(self.tokenizer)
        return self._specials

    def render_prompt(self, request: GenerationRequest) -> list[int]:
        return render_prompt(self.tokenizer, self.is_harmony, request)

    def prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.render_prompt(request))

    def open_request(
        self, request: GenerationRequest, on_delta: DeltaCallback | None
    ) -> tuple[RequestHandle, list[int]]:
        """Render and check the prompt, and register the request's handle (forget it if it never runs)."""
        input_ids = self.render_prompt(request)
        if len(input_ids) + request.max_tokens > self.max_context:
            raise ValueError(
                f"prompt ({len(input_ids)} tokens) + max_tokens ({request.max_tokens}) exceeds "
                f"the model's context of {self.max_context} tokens"
            )
        request_id = request.request_id or uuid.uuid4().hex
        stream = RequestStream(
            request_id,
            request,
            self.tokenizer,
            self.harmony_specials(),
            len(input_ids),
            self.eos_ids,
            self._clock_offset,
            prefill_ids(self.tokenizer, request) if self.is_harmony else (),
        )
        handle = RequestHandle(self, stream, on_delta)
        with self._lock:
            if request_id in self._handles:
                raise ValueError(f"request id {request_id} is already running")
            self._handles[request_id] = handle
        return handle, input_ids

    def cancel(self, request_id: str) -> None:
        """Cancel a running request; its handle finishes with finish_reason 'cancelled'."""
        with self._lock:
            handle = self._handles.get(request_id)
        self.drop(request_id)
        if handle is not None:
            handle.outputs.put(CANCELLED)

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._handles.pop(request_id, None)

    @abstractmethod
    def drop(self, request_id: str) -> None:
        """Remove a request from the batch without telling its handle."""

    @abstractmethod
    def is_running(self) -> bool: ...
