"""One submitted request's handle: its events as a stream, its result, its cancel.

The engine's outputs for a request (cumulative token ids and their times, an error, a finished flag)
become text through the request's RequestStream. That work runs on one of two threads:
  pull  the caller's thread, as it iterates `events()` (engine.engine.Engine: its outputs arrive on
        the generation thread, which must not spend time decoding);
  push  the engine's delivery thread, through `push()` (engine.process: one thread decodes
        every request's step, so a step wakes no job thread).
With `on_delta`, every TokenDelta goes to that callback (on whichever thread decoded it), and
`events()` yields only the first delta (generation has begun) and the result: a job thread then
wakes twice per job, not once per token. When the request ends in the output that brought its first
token, `events()` yields the result alone: it tells that generation began (its token times), and the
job thread, which stamps first_token_at on the first delta, would only delay the result.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from engine.request_stream import RequestStream
from engine.types import GenerationResult, TokenDelta

log = logging.getLogger(__name__)

CANCELLED = object()  # queued to a handle when its request is cancelled
ENGINE_STOPPED = "generation loop stopped before the request finished"  # the engine died, not the request

DeltaCallback = Callable[[TokenDelta], None]


class HandleOwner(Protocol):
    """What a RequestHandle asks of the engine it came from."""

    def drop(self, request_id: str) -> None: ...
    def forget(self, request_id: str) -> None: ...
    def cancel(self, request_id: str) -> None: ...
    def is_running(self) -> bool: ...


class RequestHandle:
    """One submitted request: iterate its events, wait for its result, or cancel it.

    Its `outputs` queue takes, in pull mode, transformers GenerationOutput-like items (cumulative
    `generated_tokens` and `timestamps`, `error`, `is_finished()`); in push mode, the TokenDelta and
    GenerationResult events `push()` made; in both, CANCELLED."""

    def __init__(
        self, engine: HandleOwner, stream: RequestStream, on_delta: DeltaCallback | None = None
    ) -> None:
        self.engine = engine
        self.stream = stream
        self.request_id = stream.request_id
        self.on_delta = on_delta
        self.outputs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done = False  # the stream is closed: its result is made
        self._consumed = False  # events() has yielded the result
        self._yielded_delta = False
        self._lock = threading.Lock()  # push mode: the delivery thread and a cancelling caller

    # -- the caller's side ------------------------------------------------------------------

    def events(self, timeout: float | None = None) -> Iterator[TokenDelta | GenerationResult]:
        """Yield TokenDelta events (with `on_delta`, only the first), then exactly one GenerationResult."""
        if self._consumed:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                item = self._next_output(deadline)
                if isinstance(item, GenerationResult):
                    self._consumed = True
                    yield item
                    return
                if isinstance(item, TokenDelta):  # made by push()
                    yield item
                    continue
                if item is None:
                    made = self._close_once("error", ENGINE_STOPPED)
                elif item is CANCELLED:
                    made = self._close_once("cancelled")
                else:
                    made = self._advance(item)
                ending = _ends(made)
                for event in made:  # empty when push() closed it meanwhile: its result is queued
                    if isinstance(event, GenerationResult):
                        self._consumed = True
                        yield event
                        return
                    if self._deliver(event, ending):
                        yield event
        finally:
            self.engine.forget(self.request_id)

    def result(self, timeout: float | None = None) -> GenerationResult:
        """Wait for the final result (consuming the events)."""
        for event in self.events(timeout):
            if isinstance(event, GenerationResult):
                return event
        raise RuntimeError(f"request {self.request_id} already consumed")

    def cancel(self) -> None:
        """Stop generating; the result keeps the text produced so far."""
        self.engine.cancel(self.request_id)

    # -- the delivery thread's side (push mode) ---------------------------------------------

    def push(self, item: Any) -> None:
        """Decode one engine output here; queue the first delta and the result for `events()`."""
        made = self._advance(item)
        ending = _ends(made)
        for event in made:
            if isinstance(event, GenerationResult) or self._deliver(event, ending):
                self.outputs.put(event)

    def fail(self, error: str) -> None:
        """End the request with an error now (its delivery went wrong); no-op once it has ended."""
        for event in self._close_once("error", error):
            if isinstance(event, GenerationResult):
                self.outputs.put(event)

    # -- internals --------------------------------------------------------------------------

    def _deliver(self, delta: TokenDelta, ending: bool) -> bool:
        """Hand a delta to `on_delta`; True when it should also reach `events()`: every delta without
        `on_delta`; with it, the first one, unless the request ends in the same output (`ending`)."""
        if self.on_delta is None:
            return True
        try:
            self.on_delta(delta)
        except Exception:
            log.exception("request %s: the delta callback failed", self.request_id)
        first, self._yielded_delta = not self._yielded_delta, True
        return first and not ending

    def _advance(self, item: Any) -> list[TokenDelta | GenerationResult]:
        """The events one engine output makes; closes the stream when the request ended."""
        with self._lock:
            if self._done:
                return []
            made: list[TokenDelta | GenerationResult] = []
            delta = self.stream.on_output(item.generated_tokens, item.timestamps)
            if delta is not None:
                made.append(delta)
            if self.stream.stopped_by_string:
                self.engine.drop(self.request_id)
                made += self._close("stop")
            elif item.error is not None:
                made += self._close("error", str(item.error))
            elif item.is_finished():
                made += self._close(None)
            return made

    def _close_once(self, reason: Any, error: str | None = None) -> list[TokenDelta | GenerationResult]:
        with self._lock:
            return [] if self._done else self._close(reason, error)

    def _close(self, reason: Any, error: str | None = None) -> list[TokenDelta | GenerationResult]:
        self._done = True
        tail, result = self.stream.finish(reason, error)
        return [tail, result] if tail is not None else [result]

    def _next_output(self, deadline: float | None) -> Any:
        while True:
            try:
                return self.outputs.get(timeout=0.25)
            except queue.Empty:
                if not self.engine.is_running():
                    return None
                if deadline is not None and time.monotonic() > deadline:
                    self.engine.cancel(self.request_id)
                    return CANCELLED


def _ends(made: list[TokenDelta | GenerationResult]) -> bool:
    """The events of one output include the request's result."""
    return bool(made) and isinstance(made[-1], GenerationResult)
