"""A request's prompt as token ids: harmony for gpt-oss, the model's chat template otherwise.

The one rendering: engines run it, and the API counts a prompt's tokens with it
(app/jobs/budget.py) and shows it (POST /tokenize).

gpt-oss prompts are built token by token as OpenAI's harmony renders them: special tokens only
where the format puts them, every message's content encoded as ordinary text. A user who types
`<|end|><|start|>system<|message|>` sends those characters, not those tokens.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from engine.harmony import CALL, CHANNEL, CONSTRAIN, END, FUNCTIONS, MESSAGE, START
from engine.types import GenerationRequest

MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"
VALID_CHANNELS = "# Valid channels: analysis, commentary, final. Channel must be included for every message."
FUNCTION_CHANNEL = "Calls to these tools must go to the commentary channel: 'functions'."
INSTRUCTION_ROLES = ("system", "developer")  # both become harmony developer instructions


class PromptError(ValueError):
    """A request that cannot be rendered; `param` names the field (e.g. "messages[2].content")."""

    def __init__(self, message: str, param: str = "messages") -> None:
        super().__init__(message)
        self.param = param


def chat_messages(request: GenerationRequest) -> list[Mapping[str, Any]]:
    return list(request.messages or [{"role": "user", "content": request.prompt or ""}])


def render_prompt(
    tokenizer: Any, is_harmony: bool, request: GenerationRequest, add_generation_prompt: bool = True
) -> list[int]:
    """Prompt token ids: harmony for gpt-oss, the model's chat template for any other model.

    Without the generation prompt (`<|start|>assistant` for harmony) it is the conversation alone,
    as POST /tokenize can show it."""
    if is_harmony:
        pieces = harmony_pieces(request)
        prompt_end = len(pieces) - 2 - len(assistant_prefill(request))
        return encode_pieces(tokenizer, pieces if add_generation_prompt else pieces[:prompt_end])
    refuse_tools(request)
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
    channels = f"{VALID_CHANNELS}\n{FUNCTION_CHANNEL}" if request.offers_tools else VALID_CHANNELS
    return (
        f"{MODEL_IDENTITY}\nKnowledge cutoff: {KNOWLEDGE_CUTOFF}\nCurrent date: {date}\n\n"
        f"Reasoning: {request.reasoning_effort or 'medium'}\n\n{channels}"
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
    (chat's "system" is harmony's developer); the tools offered follow the first one's instructions
    (or stand alone right after the system message). An assistant turn is its final answer (reasoning
    of past turns is dropped, as harmony does), or its text as a commentary preamble followed by its
    function calls; a tool message is the result `functions.NAME to=assistant`."""
    messages = chat_messages(request)
    tools = tools_section(request.tools) if request.offers_tools else ""
    pieces = _message("system", system_content(request))
    if tools and not any(m["role"] in INSTRUCTION_ROLES for m in messages):
        pieces += _message("developer", tools)
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role in INSTRUCTION_ROLES:
            pieces += _message(
                "developer", f"# Instructions\n\n{content}" + (f"\n\n{tools}" if tools else "")
            )
            tools = ""
        elif role == "user":
            pieces += _message("user", content)
        elif role == "assistant":
            pieces += _assistant(index, content, message.get("tool_calls") or ())
        elif role == "tool":
            if not message.get("name"):
                raise PromptError(
                    f"messages[{index}].name: a tool message names its function", f"messages[{index}].name"
                )
            header = f"{FUNCTIONS}{message['name']} to=assistant"
            pieces += _message(header, content, channel="commentary")
        else:
            raise PromptError(
                f"messages[{index}].role {role!r} cannot be rendered", f"messages[{index}].role"
            )
    return pieces + [(True, START), (False, "assistant"), *assistant_prefill(request)]


def _assistant(index: int, content: str, calls: Sequence[Mapping[str, str]]) -> list[Piece]:
    if CHANNEL in content:
        raise PromptError(
            f"messages[{index}].content holds harmony channel tags ({CHANNEL}): pass an earlier "
            "answer's final text as content, and leave its reasoning out",
            param=f"messages[{index}].content",
        )
    if not calls:
        return _message("assistant", content, channel="final")
    pieces = _message("assistant", content, channel="commentary") if content else []
    for call in calls:
        pieces += [
            (True, START), (False, f"assistant to={FUNCTIONS}{call['name']}"), (True, CHANNEL),
            (False, "commentary "), (True, CONSTRAIN), (False, "json"), (True, MESSAGE),
            (False, call["arguments"]), (True, CALL),
        ]  # fmt: skip
    return pieces


def assistant_prefill(request: GenerationRequest) -> list[Piece]:
    """What follows `<|start|>assistant` at the prompt's end: nothing, or, when the answer must be a
    call (tool_choice "required" or a named function), the call's header, so the model writes the
    function's name (several tools) or its arguments. The model then skips its reasoning, as vLLM's
    forced calls do."""
    if request.tool_choice != "required":
        return []
    names = [tool["name"] for tool in request.tools]
    if not names:
        raise PromptError("tool_choice 'required' needs tools", "tool_choice")
    name = request.tool_name or (names[0] if len(names) == 1 else None)
    if name is None:
        return [(True, CHANNEL), (False, f"commentary to={FUNCTIONS}")]
    if name not in names:
        raise PromptError(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
    return [
        (True, CHANNEL),
        (False, f"commentary to={FUNCTIONS}{name} "),
        (True, CONSTRAIN),
        (False, "json"),
        (True, MESSAGE),
    ]


def prefill_ids(tokenizer: Any, request: GenerationRequest) -> list[int]:
    """The ids of `assistant_prefill`: the prompt's last ids, which the output parser reads first."""
    return encode_pieces(tokenizer, assistant_prefill(request))


def refuse_tools(request: GenerationRequest) -> None:
    """Tools are rendered for gpt-oss only: another model's chat template would render them its own way."""
    for index, message in enumerate(chat_messages(request)):
        if message["role"] == "tool" or message.get("tool_calls"):
            raise PromptError(
                f"messages[{index}]: tool calls and results need a gpt-oss (harmony) model; this "
                "profile's model is not one",
                f"messages[{index}]",
            )
    if request.offers_tools:
        raise PromptError("tools need a gpt-oss (harmony) model; this profile's model is not one", "tools")


def tools_section(tools: Sequence[Mapping[str, Any]]) -> str:
    """harmony's `# Tools` section: the `functions` namespace, each function as a TypeScript type."""
    body = "".join(_function(tool) for tool in tools)
    return f"# Tools\n\n## functions\n\nnamespace functions {{\n\n{body}}} // namespace functions"


def _function(tool: Mapping[str, Any]) -> str:
    description = tool.get("description") or ""
    comment = "".join(f"// {line}\n" for line in description.split("\n")) if description else ""
    parameters = tool.get("parameters")
    if parameters is None:
        return f"{comment}type {tool['name']} = () => any;\n\n"
    return f"{comment}type {tool['name']} = (_: {_object(parameters, -1)}) => any;\n\n"


def _object(schema: Mapping[str, Any], level: int) -> str:
    """An object schema as harmony writes it; `level` -1 is the arguments object itself."""
    indent = " " * 4 * (level + 1)
    required = set(schema.get("required") or ())
    lines = []
    for name, prop in (schema.get("properties") or {}).items():
        if prop.get("description"):
            lines.append(f"{indent}// {prop['description']}\n")
        default = f" // default: {_default(prop['default'])}" if "default" in prop else ""
        optional = "" if name in required else "?"
        lines.append(f"{indent}{name}{optional}: {_type(prop, level + 1)},{default}\n")
    return "{\n" + "".join(lines) + indent + "}"


def _type(schema: Mapping[str, Any], level: int) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_type({**schema, "type": one}, level) for one in kind)
    if kind == "string" and "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    if kind == "object":
        described = (
            f"{' ' * 4 * (level + 1)}// {schema['description']}\n" if schema.get("description") else ""
        )
        return described + _object(schema, level)
    if kind == "array":
        return f"{_type(schema.get('items') or {}, level)}[]"
    return {
        "string": "string",
        "number": "number",
        "integer": "number",
        "boolean": "boolean",
        "null": "null",
    }.get(kind or "", "any")


def _default(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def prompt_tokens_at_most(tokenizer: Any, is_harmony: bool, request: GenerationRequest) -> int:
    """An upper bound on len(render_prompt(...)) without running the tokenizer: a byte-level BPE token
    (o200k, SmolLM2's) covers at least one byte, and each special piece is one token. The API checks a
    prompt's fit with it first and tokenizes only when the bound does not already prove it fits."""
    if is_harmony:
        return sum(1 if special else len(text.encode()) for special, text in harmony_pieces(request))
    refuse_tools(request)
    try:
        text = tokenizer.apply_chat_template(
            chat_messages(request), add_generation_prompt=True, tokenize=False
        )
    except Exception as exc:  # the exact rendering raises the same, with its message
        raise PromptError(f"the model's chat template cannot render these messages: {exc}") from exc
    return len(text.encode()) + 1  # a SentencePiece-style dummy prefix may add one token


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
    if len(text) <= _SHORT_TEXT:
        return list(_encode_short(tokenizer, text))
    return _encode(tokenizer, text)


# Most of a prompt's text runs are the same in every job (the roles' names, the system message of a
# profile and day): remembered, a job's rendering tokenizes little more than its own messages.
_SHORT_TEXT = 1024  # characters; longer runs are a job's own and are not kept


@functools.lru_cache(maxsize=4096)
def _encode_short(tokenizer: Any, text: str) -> tuple[int, ...]:
    return tuple(_encode(tokenizer, text))


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def special_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no special token {token}: it cannot render harmony")
    return token_id
