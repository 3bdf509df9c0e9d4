"""Split gpt-oss "harmony" output into final content and reasoning, on token ids, whole or streaming.

Structure is decided by token ids alone: `<|channel|>` is a channel only when the model emitted the
special token; the same characters spelled with ordinary tokens are text. A message counts as the
answer only when its header names the assistant and the final channel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from engine.detokenize import IncrementalDecoder

BOS, EOT, RETURN, CONSTRAIN = "<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>"
CHANNEL, START, END, MESSAGE, CALL = "<|channel|>", "<|start|>", "<|end|>", "<|message|>", "<|call|>"
SPECIAL_TOKENS = (BOS, EOT, RETURN, CONSTRAIN, CHANNEL, START, END, MESSAGE, CALL)
RESERVED = "<|reserved|>"  # any other special token of the vocabulary (reserved ids, <|endofprompt|>)
CHANNELS = frozenset({"analysis", "commentary", "final"})
ASSISTANT = "assistant"
FUNCTIONS = "functions."  # the recipient prefix of a function call: `to=functions.NAME`


def special_token_names(tokenizer: Any) -> dict[int, str]:
    """id -> harmony token for every special token of `tokenizer` (RESERVED for ids harmony never uses)."""
    names = {}
    for token_id, token in tokenizer.added_tokens_decoder.items():
        if token.special:
            names[token_id] = token.content if token.content in SPECIAL_TOKENS else RESERVED
    return names


@dataclass(frozen=True)
class HarmonyMessage:
    """One message: role, channel ("" if the header had none), recipient, body, and whether it was closed."""

    role: str
    channel: str
    recipient: str | None
    body: str
    complete: bool  # closed by <|end|>, <|return|> or <|call|>


@dataclass(frozen=True)
class HarmonyParse:
    """The answer, the reasoning and the shape of one harmony generation."""

    content: str  # the assistant's final-channel bodies, joined with "\n"
    reasoning: str  # every other body and stray text, joined with "\n"
    ok: bool  # well-formed harmony that holds a final message (or ends in an offered tool call)
    truncated: bool  # the output stopped inside a message or its header
    messages: tuple[HarmonyMessage, ...]
    ended_by: str = ""  # <|return|> or <|call|> when one of them ended the generation
    reasoning_tokens: int = 0  # the ordinary ids that became reasoning


Piece = tuple[Literal["text", "special"], str]


def _parse_header(pieces: Sequence[Piece], has_role: bool) -> tuple[str, str, str | None, bool]:
    """(role, channel, recipient, well_formed) of the header between `<|start|>` and `<|message|>`."""
    segments: list[list[str]] = [[]]
    separators: list[str] = []
    for kind, value in pieces:
        if kind == "special":
            separators.append(value)
            segments.append([])
        else:
            segments[-1].append(value)
    words = ["".join(segment).split() for segment in segments]
    head = words[0]
    role = ASSISTANT
    if has_role:
        role = head[0] if head and not head[0].startswith("to=") else ""
        head = head[1:] if role else head
    has_channel = separators[:1] == [CHANNEL] and separators.count(CHANNEL) == 1
    channel, *tail = (words[1] if has_channel else []) or [""]
    recipients = [word[3:] for word in head + tail if word.startswith("to=")]
    # After the channel a bare word may be a content type ("json"); before it only a recipient fits.
    well_formed = (
        has_channel
        and role == ASSISTANT
        and channel in CHANNELS
        and all(word.startswith("to=") for word in head)
        and all(sep == CONSTRAIN for sep in separators[1:])
        and len(separators) <= 2
    )
    return role, channel if has_channel else "", (recipients[-1] if recipients else None), well_formed


def is_function_call(message: HarmonyMessage) -> bool:
    """An assistant message addressed to a function (`to=functions.NAME`)."""
    return message.role == ASSISTANT and (message.recipient or "").startswith(FUNCTIONS)


class HarmonyStreamParser:
    """Incremental harmony parser over token ids: `feed` new ids, get `(new_content, new_reasoning)`.

    `special` maps the vocabulary's special ids to harmony tokens (see `special_token_names`);
    every other id is ordinary text, decoded with `tokenizer`. `tools` says whether the request
    offered any: a tool call the request never offered is not well-formed harmony. When it did, a
    function call's body is its arguments, not reasoning: `take_tool_deltas` hands out its pieces."""

    def __init__(self, tokenizer: Any, special: dict[int, str], tools: bool = False) -> None:
        self._tokenizer = tokenizer
        self._special_ids = special
        self._known_ids = len(tokenizer)  # ids past the tokenizer's (gpt-oss's reserved tail) name nothing
        self._tools = tools
        self._run = IncrementalDecoder(tokenizer, skip_special_tokens=False)
        self._state: Literal["outside", "header", "body"] = "outside"
        self._header: list[Piece] = []
        self._has_role = False
        self._role, self._channel = ASSISTANT, ""
        self._recipient: str | None = None
        self._is_content = False
        self._call_index: int | None = None  # the function call whose arguments the body is
        self._calls = 0
        self._tool_deltas: list[dict[str, Any]] = []
        self._body: list[str] = []
        self._messages: list[HarmonyMessage] = []
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._new_content: list[str] = []
        self._new_reasoning: list[str] = []
        self._answers = 0  # final messages started so far; each after the first gets a "\n" separator
        self._pieces = 0  # reasoning pieces started so far; likewise
        self._stray_open = False  # stray text continues the current piece until a special token
        self._bad = False
        self._ended_by = ""  # <|return|> or <|call|> once the generation has ended
        self._reasoning_tokens = 0

    def feed(self, ids: Iterable[int]) -> tuple[str, str]:
        """Consume the next generated ids and return the content and reasoning they complete."""
        self._new_content, self._new_reasoning = [], []
        ordinary: list[int] = []
        for token_id in ids:
            name = self._special_ids.get(token_id, RESERVED if token_id >= self._known_ids else None)
            if name is None:
                ordinary.append(token_id)
                self._reasoning_tokens += self._is_reasoning()
                continue
            self._text(self._run.push(ordinary) + self._run.flush())
            ordinary = []
            self._run = IncrementalDecoder(self._tokenizer, skip_special_tokens=False)
            self._special(name)
        if ordinary:
            self._text(self._run.push(ordinary))
        return self._take_new()

    def finish(self) -> tuple[tuple[str, str], HarmonyParse]:
        """The last held-back text (a partial character), then the parse of everything fed."""
        self._new_content, self._new_reasoning = [], []
        self._text(self._run.flush())
        tail = self._take_new()
        messages = list(self._messages)
        if self._state == "body":
            messages.append(
                HarmonyMessage(self._role, self._channel, self._recipient, "".join(self._body), False)
            )
        truncated = self._state != "outside"
        # A final counts when it was closed, or when it is the message the output was cut off in.
        has_final = any(
            m.role == ASSISTANT
            and m.channel == "final"
            and m.recipient is None
            and (m.complete or m is messages[-1])
            for m in messages
        )
        ok = not self._bad and (has_final or (self._ended_by == CALL and self._tools))
        parse = HarmonyParse(
            "".join(self._content),
            "".join(self._reasoning),
            ok,
            truncated,
            tuple(messages),
            self._ended_by,
            self._reasoning_tokens,
        )
        return tail, parse

    def _is_reasoning(self) -> bool:
        """Whether an ordinary id read now is reasoning: a message body that is neither the answer nor a
        call's arguments, or stray text outside any message (kept as reasoning)."""
        if self._state == "body":
            return not self._is_content and self._call_index is None
        return self._state == "outside"

    def take_tool_deltas(self) -> list[dict[str, Any]]:
        """Function-call pieces since the last call: {"index", "name"} when a call opens, then
        {"index", "arguments"} for each piece of its body."""
        deltas, self._tool_deltas = self._tool_deltas, []
        return deltas

    def _take_new(self) -> tuple[str, str]:
        new_content, new_reasoning = "".join(self._new_content), "".join(self._new_reasoning)
        self._content.append(new_content)
        self._reasoning.append(new_reasoning)
        return new_content, new_reasoning

    def _reason(self, text: str, new_piece: bool) -> None:
        if new_piece:
            if self._pieces:
                self._new_reasoning.append("\n")
            self._pieces += 1
        self._new_reasoning.append(text)

    def _text(self, text: str) -> None:
        if not text:
            return
        if self._state == "header":
            self._header.append(("text", text))
        elif self._state == "body":
            self._body.append(text)
            # Content is decided by the header alone, and only once it is complete.
            if self._call_index is not None:
                self._tool_deltas.append({"index": self._call_index, "arguments": text})
            else:
                (self._new_content if self._is_content else self._new_reasoning).append(text)
        else:
            # Text outside any message is malformed; keep it as reasoning so nothing vanishes silently.
            self._bad = True
            self._reason(text, new_piece=not self._stray_open)
            self._stray_open = True

    def _special(self, tok: str) -> None:
        self._stray_open = False
        if self._state == "header":
            if tok in (CHANNEL, CONSTRAIN):
                self._header.append(("special", tok))
                return
            if tok == MESSAGE:
                self._open_body(*_parse_header(self._header, self._has_role))
                return
            # Any other token cuts the header short: keep its words as reasoning, then re-read the token.
            self._bad = True
            words = "".join(value for kind, value in self._header if kind == "text")
            if words.strip():
                self._reason(words, new_piece=True)
            self._state = "outside"
        elif self._state == "body":
            if tok in (END, RETURN, CALL):
                self._close(complete=True)
                if tok != END:
                    self._ended_by = tok
                self._bad |= tok == CALL and not self._tools  # a call to a tool nobody offered
                return
            self._bad = True  # a message must be closed before anything else starts
            self._close(complete=False)
        self._outside_special(tok)

    def _outside_special(self, tok: str) -> None:
        if self._ended_by and tok != EOT:
            self._bad = True  # <|return|> and <|call|> end the generation
        if tok in (START, CHANNEL):
            # A header may open with <|channel|> only right after the prompt's `<|start|>assistant`.
            self._bad |= tok == CHANNEL and bool(self._messages)
            self._state, self._has_role = "header", tok == START
            self._header = [("special", CHANNEL)] if tok == CHANNEL else []
        elif tok == MESSAGE:
            self._open_body("", "", None, False)
        elif tok not in (BOS, EOT):
            self._bad = True  # <|end|> outside a message, a reserved token: structure the format never has

    def _open_body(self, role: str, channel: str, recipient: str | None, well_formed: bool) -> None:
        self._bad |= not well_formed
        self._state, self._body = "body", []
        self._role, self._channel, self._recipient = role, channel, recipient
        self._is_content = role == ASSISTANT and channel == "final" and recipient is None
        self._call_index = None
        if self._is_content:
            if self._answers:
                self._new_content.append("\n")
            self._answers += 1
        elif self._tools and role == ASSISTANT and (recipient or "").startswith(FUNCTIONS):
            self._call_index = self._calls
            self._calls += 1
            name = (recipient or "")[len(FUNCTIONS) :]
            self._tool_deltas.append({"index": self._call_index, "name": name})
        else:
            self._reason("", new_piece=True)

    def _close(self, complete: bool) -> None:
        self._call_index = None
        body = "".join(self._body)
        self._messages.append(HarmonyMessage(self._role, self._channel, self._recipient, body, complete))
        self._state = "outside"


def parse_harmony(tokenizer: Any, ids: Sequence[int], tools: bool = False) -> HarmonyParse:
    """Parse one complete (or truncated) generation, with or without its `<|start|>assistant` prefix."""
    parser = HarmonyStreamParser(tokenizer, special_token_names(tokenizer), tools)
    parser.feed(ids)
    return parser.finish()[1]
