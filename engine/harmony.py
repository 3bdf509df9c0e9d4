"""Split gpt-oss "harmony" output into final content and reasoning, whole or while streaming."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

BOS, EOT, RETURN, CONSTRAIN = "<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>"
CHANNEL, START, END, MESSAGE, CALL = "<|channel|>", "<|start|>", "<|end|>", "<|message|>", "<|call|>"
SPECIAL_TOKENS = (BOS, EOT, RETURN, CONSTRAIN, CHANNEL, START, END, MESSAGE, CALL)
CHANNELS = frozenset({"analysis", "commentary", "final"})

_SPECIAL_RE = re.compile("|".join(re.escape(tok) for tok in SPECIAL_TOKENS))
_MAX_PARTIAL = max(len(tok) for tok in SPECIAL_TOKENS) - 1


@dataclass(frozen=True)
class HarmonyMessage:
    """One message: channel ("" if the header had none), recipient, body, and whether it was closed."""

    channel: str
    recipient: str | None
    body: str
    complete: bool  # closed by <|end|>, <|return|> or <|call|>


@dataclass(frozen=True)
class HarmonyParse:
    """The answer, the reasoning and the shape of one harmony generation."""

    content: str  # all final-channel bodies, concatenated
    reasoning: str  # analysis/commentary bodies and stray text, joined with "\n"
    ok: bool  # well-formed harmony that holds a final message (or ends in a tool call)
    truncated: bool  # the text stopped inside a message or its header
    messages: tuple[HarmonyMessage, ...]


def strip_special_tokens(text: str) -> str:
    """Remove every harmony special token from `text` (for non-harmony fallbacks)."""
    return _SPECIAL_RE.sub("", text)


def parse_harmony(text: str) -> HarmonyParse:
    """Parse one complete (or truncated) generation, with or without its `<|start|>assistant` prefix."""
    parser = HarmonyStreamParser()
    parser.feed(text)
    return parser.finish()


def _partial_token_start(text: str) -> int:
    """Index where a suffix of `text` that may still grow into a special token starts (len(text) if none)."""
    for i in range(max(0, len(text) - _MAX_PARTIAL), len(text)):
        if any(tok.startswith(text[i:]) for tok in SPECIAL_TOKENS):
            return i
    return len(text)


def _parse_header(raw: str, has_role: bool) -> tuple[str, str | None, bool]:
    """Read (channel, recipient, well_formed) from the header text between `<|start|>` and `<|message|>`."""
    before, sep, rest = raw.partition(CHANNEL)
    chan_part = rest.partition(CONSTRAIN)[0]  # what follows <|constrain|> is a free-form content type
    head = before.split()
    role_ok = not has_role or (bool(head) and not head[0].startswith("to="))
    if has_role:
        head = head[1:]
    channel, *tail = chan_part.split() or [""]
    if CHANNEL in rest:
        channel = ""  # two channels (e.g. "final <|channel|>analysis"): trust neither with content
    recipients = [word[3:] for word in head + tail if word.startswith("to=")]
    # After the channel a bare word may be a content type ("json"); before it only a recipient fits.
    well_formed = (
        bool(sep)
        and role_ok
        and channel in CHANNELS
        and all(word.startswith("to=") for word in head)
        and CONSTRAIN not in before
    )
    return channel, (recipients[-1] if recipients else None), well_formed


class HarmonyStreamParser:
    """Incremental harmony parser: `feed` decoded text deltas, get `(new_content, new_reasoning)` back."""

    def __init__(self) -> None:
        self._pending = ""  # a tail that may be the start of a special token, held until it resolves
        self._state: Literal["outside", "header", "body"] = "outside"
        self._header: list[str] = []
        self._has_role = False
        self._channel = ""
        self._recipient: str | None = None
        self._body: list[str] = []
        self._messages: list[HarmonyMessage] = []
        self._content = ""
        self._reasoning = ""
        self._new_content: list[str] = []
        self._new_reasoning: list[str] = []
        self._pieces = 0  # reasoning pieces started so far; pieces after the first get a "\n" separator
        self._stray_open = False  # stray text continues the current piece until a special token
        self._bad = False
        self._ended_by = ""  # <|return|> or <|call|> once the generation has ended

    def feed(self, text_delta: str) -> tuple[str, str]:
        """Consume the next decoded text and return the content and reasoning it completes."""
        self._new_content, self._new_reasoning = [], []
        text = self._pending + text_delta
        pos = 0
        for match in _SPECIAL_RE.finditer(text):
            self._text(text[pos : match.start()])
            self._special(match.group())
            pos = match.end()
        rest = text[pos:]
        cut = _partial_token_start(rest)
        self._text(rest[:cut])
        self._pending = rest[cut:]
        new_content, new_reasoning = "".join(self._new_content), "".join(self._new_reasoning)
        self._content += new_content
        self._reasoning += new_reasoning
        return new_content, new_reasoning

    def finish(self) -> HarmonyParse:
        """Return the parse of everything fed so far (the same as `parse_harmony` on the whole text)."""
        messages = list(self._messages)
        if self._state == "body":
            messages.append(HarmonyMessage(self._channel, self._recipient, "".join(self._body), False))
        # A held-back partial special token (e.g. "<|sta") is a header cut short, so it is dropped:
        # the stream could never have emitted it, and whole-text parsing must agree with the stream.
        truncated = self._state != "outside" or (bool(self._pending) and not self._ended_by)
        # A final counts when it was closed, or when it is the message the text was cut off in.
        has_final = any(m.channel == "final" and (m.complete or m is messages[-1]) for m in messages)
        ok = not self._bad and (has_final or self._ended_by == CALL)
        return HarmonyParse(self._content, self._reasoning, ok, truncated, tuple(messages))

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
            self._header.append(text)
        elif self._state == "body":
            self._body.append(text)
            # Content is decided by the channel name alone, and only once its header is complete.
            (self._new_content if self._channel == "final" else self._new_reasoning).append(text)
        else:
            # Text outside any message is malformed; keep it as reasoning so nothing vanishes silently.
            self._bad = True
            self._reason(text, new_piece=not self._stray_open)
            self._stray_open = True

    def _special(self, tok: str) -> None:
        self._stray_open = False
        if self._state == "header":
            if tok in (CHANNEL, CONSTRAIN):
                self._header.append(tok)
                return
            if tok == MESSAGE:
                self._open_body(*_parse_header("".join(self._header), self._has_role))
                return
            # Any other token cuts the header short: keep its words as reasoning, then re-read the token.
            self._bad = True
            words = strip_special_tokens("".join(self._header))
            if words.strip():
                self._reason(words, new_piece=True)
            self._state = "outside"
        elif self._state == "body":
            if tok in (END, RETURN, CALL):
                self._close(complete=True)
                if tok != END:
                    self._ended_by = tok
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
            self._header = [CHANNEL] if tok == CHANNEL else []
        elif tok == MESSAGE:
            self._open_body("", None, False)
        elif tok not in (BOS, EOT):
            self._bad = True

    def _open_body(self, channel: str, recipient: str | None, well_formed: bool) -> None:
        self._bad |= not well_formed
        self._state, self._channel, self._recipient, self._body = "body", channel, recipient, []
        if channel != "final":
            self._reason("", new_piece=True)

    def _close(self, complete: bool) -> None:
        self._messages.append(HarmonyMessage(self._channel, self._recipient, "".join(self._body), complete))
        self._state = "outside"
