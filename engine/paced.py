"""The paced engine: a stand-in for a model that writes tokens at a set rate and does no CPU work.

For benchmarks and dry runs only (a profile's `model = "paced:200"`, never a default, never a
fallback): the pipeline around it is measured as it behaves beside a GPU, whose decoding costs the
host nothing. It batches continuously like engine/engine.py: requests join the running batch at the
next step, and each step gives every running request one token after 1/rate seconds of sleep, so
eight requests take as long as one.

The tokens are real: the tiny gpt-oss's harmony tokenizer (engine/tiny.py) and a final-channel
answer cycling over one sentence, so the worker renders prompts, decodes and parses harmony as it
would for gpt-oss. Every request runs to its max_tokens (finish_reason "length") unless a stop string
ends it ("stop") or it is cancelled. Results are tagged engine="paced", model_id "paced-<rate>tps":
they can never pass for a model's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.engine import BatchEngine, _ImmediateLoop
from engine.harmony import CHANNEL, MESSAGE
from engine.preflight import PACED_CONTEXT
from engine.tiny import build_harmony_tokenizer, harmony_eos_ids
from engine.types import GenerationRequest, ModelTags

log = logging.getLogger(__name__)

ENGINE_NAME = "paced"
SENTENCE = "The paced engine writes this sentence at a set rate, so the queue is measured on its own. "


@dataclass(frozen=True)
class PacedOutput:
    """One step's output of a request, cumulative like transformers' GenerationOutput."""

    request_id: str
    generated_tokens: list[int]
    timestamps: list[float]  # time.perf_counter() of each token, as transformers records them
    error: str | None = None
    finished: bool = False

    def is_finished(self) -> bool:
        return self.finished


@dataclass
class _Sequence:
    request_id: str
    max_tokens: int
    on_output: Callable[[Any], None]
    loop: Any
    tokens: list[int] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)


def answer_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """(the answer's harmony header, the sentence's ids that follow it, cycled)."""
    ids = tokenizer.convert_tokens_to_ids
    header = [ids(CHANNEL), *tokenizer.encode("final", add_special_tokens=False), ids(MESSAGE)]
    return header, list(tokenizer.encode(SENTENCE, add_special_tokens=False))


class PacedEngine(BatchEngine):
    """`rate` tokens per second per request, up to `max_batch` requests at once; submit, cancel, tags,
    load and shutdown like engine.engine.Engine."""

    def __init__(self, rate: float, profile: str, max_batch: int) -> None:
        self.tokenizer = build_harmony_tokenizer()
        self.is_harmony = True
        self.eos_ids = set(harmony_eos_ids(self.tokenizer))
        self.max_context = PACED_CONTEXT
        self.max_batch = max_batch
        self.step_s = 1.0 / rate
        self.tags = ModelTags(ENGINE_NAME, f"paced-{rate:g}tps", "none", "none", profile)
        super().__init__()
        self._header, self._sentence = answer_ids(self.tokenizer)
        self._waiting: dict[str, _Sequence] = {}
        self._running: dict[str, _Sequence] = {}
        self._wake = threading.Condition()
        self._stopping = False
        self._loop = _ImmediateLoop()
        self._thread = threading.Thread(target=self._generate, name=f"paced-{profile}", daemon=True)
        self._thread.start()

    # -- requests ---------------------------------------------------------------------------

    def add_prepared(
        self,
        request_id: str,
        input_ids: list[int],
        request: GenerationRequest,
        on_output: Callable[[Any], None],
        loop: Any = None,
    ) -> None:
        """Add a rendered prompt: it joins the batch as the step under way ends, then gets a token a step."""
        sequence = _Sequence(request_id, request.max_tokens, on_output, loop or self._loop)
        with self._wake:
            if self._stopping:
                raise RuntimeError("the engine is not accepting requests (stopping)")
            self._waiting[request_id] = sequence
            self._wake.notify()

    def drop(self, request_id: str) -> None:
        """Remove a request from the batch without telling its handle."""
        with self._wake:
            self._waiting.pop(request_id, None)
            self._running.pop(request_id, None)

    # -- state ------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._thread.is_alive()

    def load(self) -> dict[str, int]:
        """Running and waiting request counts (for metrics)."""
        return {"running": len(self._running), "waiting": len(self._waiting)}

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the step loop; unfinished requests end with an error (their handles see it stopped)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)

    # -- the step loop ----------------------------------------------------------------------

    def _generate(self) -> None:
        last_step = 0.0
        while self._admit():
            # busy: steps stay 1/rate apart, whatever delivering took; after an idle spell: one step from now
            now = time.perf_counter()
            last_step = (last_step if now - last_step < self.step_s else now) + self.step_s
            time.sleep(max(0.0, last_step - now))
            self._deliver(self._step(time.perf_counter()))

    def _admit(self) -> bool:
        """Wait for work; move waiting requests into free batch slots. False once stopping."""
        with self._wake:
            while not self._stopping and not self._running and not self._waiting:
                self._wake.wait()
            while self._waiting and len(self._running) < self.max_batch:
                request_id = next(iter(self._waiting))
                self._running[request_id] = self._waiting.pop(request_id)
            return not self._stopping

    def _step(self, now: float) -> list[tuple[_Sequence, PacedOutput]]:
        """One token for every running request; those at their max_tokens leave the batch."""
        made = []
        with self._wake:
            for sequence in list(self._running.values()):
                sequence.timestamps.append(now)  # before the token: a reader sees both or fewer
                sequence.tokens.append(self._token(len(sequence.tokens)))
                finished = len(sequence.tokens) >= sequence.max_tokens
                if finished:
                    del self._running[sequence.request_id]
                # the lists themselves, not copies (no work per token but the token): readers take the ids
                # past those they have, as from transformers' cumulative outputs
                tokens, timestamps = sequence.tokens, sequence.timestamps
                made.append((sequence, PacedOutput(sequence.request_id, tokens, timestamps, None, finished)))
        return made

    def _token(self, index: int) -> int:
        if index < len(self._header):
            return self._header[index]
        return self._sentence[(index - len(self._header)) % len(self._sentence)]

    def _deliver(self, made: list[tuple[_Sequence, PacedOutput]]) -> None:
        """Each step's outputs through their loops, one call per loop (engine/process.py sends them as one
        message), as transformers' output router does."""
        by_loop: dict[int, tuple[Any, list[tuple[_Sequence, PacedOutput]]]] = {}
        for sequence, output in made:
            by_loop.setdefault(id(sequence.loop), (sequence.loop, []))[1].append((sequence, output))
        for loop, outputs in by_loop.values():
            loop.call_soon_threadsafe(_hand_over, outputs)


def _hand_over(outputs: list[tuple[_Sequence, PacedOutput]]) -> None:
    for sequence, output in outputs:
        try:
            sequence.on_output(output)
        except Exception:  # one request's handler, never the step loop every request needs
            log.exception("request %s: its output handler failed", output.request_id)
