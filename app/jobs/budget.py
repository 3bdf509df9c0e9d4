"""Refuse a job whose prompt plus max_tokens exceeds its model's context: 400 before it is queued.

The API never loads a model, nor imports torch. Once per process it reads the tokenizer and config.json
of the model the profile's worker loads (engine/loader.py local_model_dir) and renders the prompt as
the engine does. Without a tokenizer prompt tokens are estimated as characters / 4; without a config the check
is left to the worker, whose engine refuses such a prompt too.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from app.errors import ApiError
from app.jobs.schemas import JobCreate, generation_request
from app.services import services
from engine.loader import local_model_dir
from engine.preflight import PACED_CONTEXT, is_paced
from engine.prompt import PromptError, prompt_tokens_at_most, refuse_tools, render_prompt
from engine.tiny import build_harmony_tokenizer
from engine.types import GenerationRequest

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4  # the fallback estimate when no tokenizer can be read

_counters: dict[tuple[str, Path], TokenCounter] = {}  # (model source, cache dir) -> its counter
_counters_lock = threading.Lock()
_warned: set[tuple[str, str]] = set()  # (source, problem): each said once per process


@dataclass
class TokenCounter:
    """Counts a request's prompt tokens for one model; `context` is None when unknown."""

    tokenizer: Any | None
    context: int | None
    is_harmony: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)  # a fast tokenizer is not thread-safe

    def prompt_tokens(self, request: GenerationRequest) -> int:
        if self.tokenizer is None:
            messages = request.messages or ({"content": request.prompt or ""},)
            return sum(len(m["content"]) for m in messages) // CHARS_PER_TOKEN
        return len(self.prompt_ids(request))

    def fits(self, request: GenerationRequest, max_tokens: int) -> bool:
        """Whether the prompt surely fits with max_tokens, by a bound that needs no tokenizing
        (engine/prompt.py prompt_tokens_at_most); False means: count exactly."""
        if self.tokenizer is None or self.context is None:
            return False
        with self.lock:
            bound = prompt_tokens_at_most(self.tokenizer, self.is_harmony, request)
        return bound + max_tokens <= self.context

    def prompt_ids(self, request: GenerationRequest, add_generation_prompt: bool = True) -> list[int]:
        """The ids the engine reads for `request`; 400 naming the field it cannot render."""
        try:
            with self.lock:
                return render_prompt(self.tokenizer, self.is_harmony, request, add_generation_prompt)
        except PromptError as exc:
            raise ApiError(400, str(exc), param=exc.param, code="invalid_prompt") from exc


def load_token_counter(source: str, cache_dir: Path) -> TokenCounter:
    """The tokenizer and context length of the model a worker loads for `source`, as far as they exist."""
    if is_paced(source):  # the paced engine's own (engine/paced.py): prompts are counted as for gpt-oss
        return TokenCounter(build_harmony_tokenizer(), PACED_CONTEXT, is_harmony=True)
    directory = local_model_dir(source, cache_dir)
    if directory is None:
        warn_once(source, "is not on this machine (yet): prompt lengths are checked by the worker")
        return TokenCounter(None, None)
    try:
        context, is_harmony = read_context(directory)
    except Exception as exc:
        warn_once(source, f"has no readable config ({exc}): prompt lengths are checked by the worker")
        return TokenCounter(None, None)
    try:
        tokenizer = read_tokenizer(directory)
        if not is_harmony and not tokenizer.chat_template:  # gpt-oss renders harmony without one
            raise ValueError("the tokenizer has no chat template")
    except Exception as exc:
        warn_once(source, f"has no usable tokenizer ({exc}): prompt tokens are estimated as characters / 4")
        tokenizer = None
    return TokenCounter(tokenizer, context, is_harmony)


def read_context(directory: Path) -> tuple[int | None, bool]:
    """The model's context length and whether it speaks harmony, from its config.json as transformers
    reads them (a multimodal config's text_config). Read as JSON: transformers' AutoConfig imports the
    model's code and torch, seconds of CPU in every API process."""
    config = json.loads((directory / "config.json").read_text())
    if not isinstance(config, dict):
        raise ValueError("config.json is not a JSON object")
    text = config.get("text_config")
    context = (text if isinstance(text, dict) else config).get("max_position_embeddings")
    if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context <= 0):
        raise ValueError(f"max_position_embeddings is {context!r}, not a positive integer")
    return context, config.get("model_type") == "gpt_oss"


# The tokenizer classes AutoTokenizer resolves to transformers' generic fast tokenizer (one class in
# transformers 5): loaded as that class directly, without AutoTokenizer's imports of the model's config
# code and torch. Any other class goes through AutoTokenizer, as the engine loads it.
GENERIC_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


def read_tokenizer(directory: Path) -> Any:
    """The model's tokenizer, the class the engine's AutoTokenizer gives."""
    settings = directory / "tokenizer_config.json"
    named = json.loads(settings.read_text()).get("tokenizer_class") if settings.is_file() else None
    if named in GENERIC_TOKENIZER_CLASSES and (directory / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


def token_counter(app: Flask, profile: str) -> TokenCounter:
    """The profile's counter, loaded on first use and then shared by every thread of this process."""
    source = services(app).profiles[profile].model
    cache_key = (source, services(app).settings.model_cache_dir)
    with _counters_lock:  # requests arriving while the tokenizer loads wait for it
        counter = _counters.get(cache_key)
        if counter is None:
            counter = load_token_counter(*cache_key)
            if counter.context is not None:  # a model not there yet (the demo converting) is looked for again
                _counters[cache_key] = counter
    return counter


def warn_once(source: str, problem: str) -> None:
    if (source, problem) not in _warned:
        _warned.add((source, problem))
        log.warning("model %s %s", source, problem)


def warm_up_in_background(app: Flask) -> None:
    """Load every profile's tokenizer now, in a thread (the first submit then does not wait for it)."""

    def load_all() -> None:
        for profile in services(app).profiles:
            token_counter(app, profile)

    threading.Thread(target=load_all, name="tokenizer-warm-up", daemon=True).start()


def check_prompt_fits(body: JobCreate) -> None:
    """400 context_length_exceeded when prompt tokens + max_tokens exceed the model's context, and
    400 naming the message when the prompt cannot be rendered at all."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    counter = token_counter(app, body.queue_profile)
    request = generation_request(body.model_dump(mode="json", exclude_none=True))
    try:
        if counter.context is None:
            if services(app).profiles[body.queue_profile].model == "demo":  # SmolLM2: no harmony
                refuse_tools(request)
            return
        if counter.fits(request, body.max_tokens or 0):
            return  # no tokenizing on the way of a submit that surely fits
        prompt_tokens = counter.prompt_tokens(request)
    except PromptError as exc:
        raise ApiError(400, str(exc), param=exc.param, code="invalid_prompt") from exc
    if body.max_tokens is not None and prompt_tokens + body.max_tokens > counter.context:
        raise ApiError(
            400,
            f"This model's maximum context length is {counter.context} tokens. However, you requested "
            f"{prompt_tokens + body.max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{body.max_tokens} for max_tokens). Please reduce the length of the messages or max_tokens.",
            param="messages" if body.messages is not None else "prompt",
            code="context_length_exceeded",
        )
