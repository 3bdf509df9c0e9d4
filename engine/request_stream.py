"""Turn one request's growing token list into text deltas and a final result.

Runs in the caller's thread (not the batch loop): incremental detokenisation, the harmony
channel split for gpt-oss, stop strings, and the finish reason.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from engine.detokenize import IncrementalDecoder
from engine.harmony import CALL, FUNCTIONS, HarmonyParse, HarmonyStreamParser, is_function_call
from engine.types import FinishReason, GenerationRequest, GenerationResult, TokenDelta, ToolCall


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
        prefill_ids: Sequence[int] = (),
    ) -> None:
        """`prefill_ids`: the prompt's last ids that begin the answer (a forced call's header): the
        harmony parser reads them first, as if the model had written them."""
        self.request_id = request_id
        self.request = request
        self.prompt_tokens = prompt_tokens
        self.eos_ids = eos_ids
        self.clock_offset = clock_offset  # time.time() - time.perf_counter()
        self.submitted_at = time.time()
        self.decoder = IncrementalDecoder(tokenizer, skip_special_tokens=True)
        self.harmony = None
        if harmony_specials is not None:
            self.harmony = HarmonyStreamParser(tokenizer, harmony_specials, tools=request.offers_tools)
            self.harmony.feed(prefill_ids)
        self.call_ids: list[str] = []  # the id of each function call, by index
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
        had = len(self.tokens)
        self.tokens.extend(new_ids)
        now = time.time()
        if timestamps is not None and len(timestamps) >= len(self.tokens):
            # the new tokens' times only: redoing them all cost each step as much as the request was long
            self.token_times.extend(t + self.clock_offset for t in timestamps[had : len(self.tokens)])
        else:
            self.token_times.extend([now] * len(new_ids))
        tool_parts: tuple[dict[str, Any], ...] = ()
        if self.harmony is not None:
            content_part, reasoning_part = self.harmony.feed(new_ids)
            tool_parts = self.tool_deltas()
        else:
            content_part, reasoning_part = self.decoder.push(new_ids), ""
        content_part = self.stop.push(content_part)
        self.reasoning += reasoning_part
        if not content_part and not reasoning_part and not tool_parts:
            return None
        return TokenDelta(self.request_id, content_part, reasoning_part, len(self.tokens), now, tool_parts)

    def tool_deltas(self) -> tuple[dict[str, Any], ...]:
        """The parser's function-call pieces, each call's first one given the call's id."""
        assert self.harmony is not None
        parts = []
        for part in self.harmony.take_tool_deltas():
            if "name" in part:
                self.call_ids.append("call_" + uuid.uuid4().hex[:24])
                part = {"index": part["index"], "id": self.call_ids[part["index"]], **part}
            parts.append(part)
        return tuple(parts)

    def tool_calls(self, parsed: HarmonyParse) -> tuple[ToolCall, ...]:
        """The generation's function calls, each checked: a call that cannot run as written says why."""
        offered = {tool["name"] for tool in self.request.tools}
        calls = [m for m in parsed.messages if is_function_call(m)] if self.request.offers_tools else []
        made = []
        for index, message in enumerate(calls):
            name = (message.recipient or "")[len(FUNCTIONS) :]
            last = index == len(calls) - 1
            error: str | None
            if name not in offered:
                error = f"the model called {name!r}, which the request does not offer"
            elif not (last and parsed.ended_by == CALL and message.complete):
                error = "the call was cut off before it ended (<|call|>)"
            else:
                error = arguments_error(message.body)
            made.append(ToolCall(self.call_ids[index], name, message.body, error))
        return tuple(made)

    def finish(
        self, reason: FinishReason | None, error: str | None = None
    ) -> tuple[TokenDelta | None, GenerationResult]:
        """Close the stream: the last held-back text (if any) and the final result."""
        if reason is None:
            reason = self.natural_finish_reason()
        tail_content, tail_reasoning, harmony_ok, reasoning_tokens = "", "", True, 0
        tool_calls: tuple[ToolCall, ...] = ()
        tail_tools: tuple[dict[str, Any], ...] = ()
        if self.harmony is not None:
            (tail_content, tail_reasoning), parsed = self.harmony.finish()
            harmony_ok, reasoning_tokens = parsed.ok, parsed.reasoning_tokens
            tail_tools = self.tool_deltas()
            tool_calls = self.tool_calls(parsed)
            if tool_calls and reason == "stop" and parsed.ended_by == CALL:
                reason = "tool_calls"
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
        if tail or tail_reasoning or tail_tools:
            last = TokenDelta(
                self.request_id, tail, tail_reasoning, len(self.tokens), time.time(), tail_tools
            )
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
            tool_calls=tool_calls,
            reasoning_tokens=reasoning_tokens,
        )
        return last, result

    def natural_finish_reason(self) -> FinishReason:
        if self.tokens and self.tokens[-1] in self.eos_ids and not self.request.ignore_eos:
            return "stop"
        return "length"


def arguments_error(arguments: str) -> str | None:
    """Why a call's arguments are not a JSON object, or None."""
    try:
        value = json.loads(arguments)
    except ValueError as exc:
        return f"the arguments are not valid JSON: {exc}"
    return None if isinstance(value, dict) else "the arguments are JSON but not an object"
