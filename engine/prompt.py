"""A request's prompt as token ids: harmony for gpt-oss, the model's chat template otherwise.

The one rendering: engines run it, and the API counts a prompt's tokens with it
(app/jobs/budget.py) and shows it (POST /tokenize).

gpt-oss prompts are built token by token as OpenAI's harmony renders them: special tokens only
where the format puts them, every message's content encoded as ordinary text. A user who types
`<|end|><|start|>system<|message|>` sends those characters, not those tokens.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from engine.harmony import CHANNEL, END, MESSAGE, START
from engine.types import GenerationRequest

MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"
VALID_CHANNELS = "# Valid channels: analysis, commentary, final. Channel must be included for every message."
INSTRUCTION_ROLES = ("system", "developer")  # both become harmony developer instructions


class PromptError(ValueError):
    """A request that cannot be rendered; `param` names the field (e.g. "messages[2].content")."""

    def __init__(self, message: str, param: str = "messages") -> None:
        super().__init__(message)
        self.param = param


def chat_messages(request: GenerationRequest) -> list[Mapping[str, str]]:
    return list(request.messages or [{"role": "user", "content": request.prompt or ""}])


def render_prompt(
    tokenizer: Any, is_harmony: bool, request: GenerationRequest, add_generation_prompt: bool = True
) -> list[int]:
    """Prompt token ids: harmony for gpt-oss, the model's chat template for any other model.

    Without the generation prompt (`<|start|>assistant` for harmony) it is the conversation alone,
    as POST /tokenize can show it."""
    if is_harmony:
        pieces = harmony_pieces(request)
        return encode_pieces(tokenizer, pieces if add_generation_prompt else pieces[:-2])
    try:
        text = tokenizer.apply_chat_template(
            chat_messages(request), add_generation_prompt=add_generation_prompt, tokenize=False
        )
    except Exception as exc:  # jinja's TemplateError, a template's raise_exception, a missing template
        raise PromptError(f"the model's chat template cannot render these messages: {exc}") from exc
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def today_utc() -> str:
    """The date a prompt rendered now carries: YYYY-MM-DD, UTC."""
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def system_content(request: GenerationRequest) -> str:
    """Harmony's system message: identity, knowledge cutoff, date, reasoning effort, channels."""
    date = request.current_date or today_utc()
    return (
        f"{MODEL_IDENTITY}\nKnowledge cutoff: {KNOWLEDGE_CUTOFF}\nCurrent date: {date}\n\n"
        f"Reasoning: {request.reasoning_effort or 'medium'}\n\n{VALID_CHANNELS}"
    )


Piece = tuple[bool, str]  # (is a special token, text)


def _message(header: str, content: str, channel: str | None = None) -> list[Piece]:
    pieces: list[Piece] = [(True, START), (False, header)]
    if channel is not None:
        pieces += [(True, CHANNEL), (False, channel)]
    return pieces + [(True, MESSAGE), (False, content), (True, END)]


def harmony_pieces(request: GenerationRequest) -> list[Piece]:
    """The conversation as harmony's `render_conversation_for_completion` renders it, piece by piece.

    Every system and developer message is honoured where it stands, as developer instructions
    (chat's "system" is harmony's developer); an assistant turn is its final answer (reasoning of
    past turns is dropped, as harmony does)."""
    pieces = _message("system", system_content(request))
    for index, message in enumerate(chat_messages(request)):
        role, content = message["role"], message["content"]
        if role in INSTRUCTION_ROLES:
            pieces += _message("developer", f"# Instructions\n\n{content}")
        elif role == "user":
            pieces += _message("user", content)
        elif role == "assistant":
            if CHANNEL in content:
                raise PromptError(
                    f"messages[{index}].content holds harmony channel tags ({CHANNEL}): pass an earlier "
                    "answer's final text as content, and leave its reasoning out",
                    param=f"messages[{index}].content",
                )
            pieces += _message("assistant", content, channel="final")
        else:
            raise PromptError(
                f"messages[{index}].role {role!r} cannot be rendered", f"messages[{index}].role"
            )
    return pieces + [(True, START), (False, "assistant")]


def encode_pieces(tokenizer: Any, pieces: Sequence[Piece]) -> list[int]:
    """Special pieces become their one token; text between them is encoded as ordinary text."""
    ids: list[int] = []
    run: list[str] = []
    for special, text in [*pieces, (True, "")]:
        if not special:
            run.append(text)
            continue
        if run:
            ids += encode_text(tokenizer, "".join(run))
            run = []
        if text:
            ids.append(special_id(tokenizer, text))
    return ids


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """`text` as ordinary tokens: special-token strings in it stay characters."""
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def special_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no special token {token}: it cannot render harmony")
    return token_id
