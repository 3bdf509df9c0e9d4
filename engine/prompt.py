"""A request's prompt as token ids: harmony for gpt-oss, the model's chat template otherwise.

The one rendering: engines run it, and the API counts a prompt's tokens with it
(app/jobs/budget.py) and shows it (POST /tokenize).
"""

from __future__ import annotations

from typing import Any

from engine.types import GenerationRequest


class PromptError(ValueError):
    """A request that cannot be rendered; `param` names the field (e.g. "messages[2].content")."""

    def __init__(self, message: str, param: str = "messages") -> None:
        super().__init__(message)
        self.param = param


def render_prompt(tokenizer: Any, is_harmony: bool, request: GenerationRequest) -> list[int]:
    """Prompt token ids: chat messages through the model's chat template (harmony for gpt-oss)."""
    messages = list(request.messages or [{"role": "user", "content": request.prompt or ""}])
    extra = {"reasoning_effort": request.reasoning_effort or "medium"} if is_harmony else {}
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **extra)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
