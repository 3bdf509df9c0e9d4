"""Turn one request's growing token list into text deltas and a final result.

Runs in the caller's thread (not the batch loop): incremental detokenisation, the harmony
channel split for gpt-oss, stop strings, and the finish reason.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.detokenize import IncrementalDecoder
from engine.harmony import HarmonyStreamParser
from engine.types import FinishReason, GenerationRequest, GenerationResult, TokenDelta


class StopScanner:
    """Find stop strings in the answer text, holding back a tail that might start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, new_text: str) -> str:
        """Add answer text; return what is safe to emit now."""
        if self.stopped:
            return ""
        self.text += new_text
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            self.stopped = True
            return self.flush()
        safe_end = max(self.emitted, len(self.text) - self.hold)
        out = self.text[self.emitted : safe_end]
        self.emitted = safe_end
        return out

    def flush(self) -> str:
        out = self.text[self.emitted :]
        self.emitted = len(self.text)
        return out


class RequestStream:
    """Everything the engine knows about one request while it runs."""

    def __init__(
        self,
        request_id: str,
        request: GenerationRequest,
        tokenizer: Any,
        harmony_specials: dict[int, str] | None,
        prompt_tokens: int,
        eos_ids: set[int],
        clock_offset: float,
    ) -> None:
        self.request_id = request_id
        self.request = request
        self.prompt_tokens = prompt_tokens
        self.eos_ids = eos_ids
        self.clock_offset = clock_offset  # time.time() - time.perf_counter()
        self.submitted_at = time.time()
        self.decoder = IncrementalDecoder(tokenizer, skip_special_tokens=True)
        self.harmony = None if harmony_specials is None else HarmonyStreamParser(tokenizer, harmony_specials)
        self.stop = StopScanner(request.stop)
        self.tokens: list[int] = []
        self.token_times: list[float] = []
        self.reasoning = ""

    @property
    def stopped_by_string(self) -> bool:
        return self.stop.stopped

    def on_output(self, generated: Sequence[int], timestamps: Sequence[float] | None) -> TokenDelta | None:
        """Take the request's cumulative tokens; return a delta when new text appeared."""
        new_ids = list(generated[len(self.tokens) :])
        if not new_ids or self.stop.stopped:
            return None
        self.tokens.extend(new_ids)
        now = time.time()
        if timestamps is not None and len(timestamps) >= len(self.tokens):
            self.token_times = [t + self.clock_offset for t in timestamps[: len(self.tokens)]]
        else:
            self.token_times.extend([now] * len(new_ids))
        if self.harmony is not None:
            content_part, reasoning_part = self.harmony.feed(new_ids)
        else:
            content_part, reasoning_part = self.decoder.push(new_ids), ""
        content_part = self.stop.push(content_part)
        self.reasoning += reasoning_part
        if not content_part and not reasoning_part:
            return None
        return TokenDelta(self.request_id, content_part, reasoning_part, len(self.tokens), now)

    def finish(
        self, reason: FinishReason | None, error: str | None = None
    ) -> tuple[TokenDelta | None, GenerationResult]:
        """Close the stream: the last held-back text (if any) and the final result."""
        if reason is None:
            reason = self.natural_finish_reason()
        tail_content, tail_reasoning, harmony_ok = "", "", True
        if self.harmony is not None:
            (tail_content, tail_reasoning), parsed = self.harmony.finish()
            harmony_ok = parsed.ok
        elif not self.stop.stopped:
            tail_content = self.decoder.flush()
        if self.stop.stopped:
            reason, tail_reasoning = "stop", ""  # nothing after the stop string is shown
        else:
            self.stop.push(tail_content)
            self.reasoning += tail_reasoning
        tail = self.stop.flush()
        content = self.stop.text
        last = None
        if tail or tail_reasoning:
            last = TokenDelta(self.request_id, tail, tail_reasoning, len(self.tokens), time.time())
        end = self.token_times[-1] if self.token_times else time.time()
        result = GenerationResult(
            request_id=self.request_id,
            content=content,
            reasoning=self.reasoning,
            finish_reason=reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(self.tokens),
            ttft_s=(self.token_times[0] - self.submitted_at) if self.token_times else None,
            e2e_s=max(0.0, (time.time() if reason == "cancelled" else end) - self.submitted_at),
            token_times=list(self.token_times),
            harmony_ok=harmony_ok,
            error=error,
        )
        return last, result

    def natural_finish_reason(self) -> FinishReason:
        if self.tokens and self.tokens[-1] in self.eos_ids and not self.request.ignore_eos:
            return "stop"
        return "length"
