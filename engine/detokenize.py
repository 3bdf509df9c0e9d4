"""Token ids to text as they arrive, never splitting a multi-byte character."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def printable(text: str) -> str:
    """NUL cannot be stored in Postgres text columns; a model emitting one gets U+FFFD instead."""
    return text.replace("\x00", "\ufffd")


class IncrementalDecoder:
    """Decode tokens as they come without splitting multi-byte characters (TGI's offsets trick)."""

    def __init__(self, tokenizer: Any, skip_special_tokens: bool) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, new_ids: Sequence[int]) -> str:
        """Add tokens; return the newly complete text (may be empty while a character is partial)."""
        self.ids.extend(new_ids)
        decode = self.tokenizer.decode
        prefix = decode(
            self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=self.skip_special_tokens
        )
        text = decode(self.ids[self.prefix_offset :], skip_special_tokens=self.skip_special_tokens)
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return printable(text[len(prefix) :])
        return ""

    def flush(self) -> str:
        """Return whatever is still held back (a trailing partial character), even if incomplete."""
        prefix = self.tokenizer.decode(
            self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=self.skip_special_tokens
        )
        text = self.tokenizer.decode(
            self.ids[self.prefix_offset :], skip_special_tokens=self.skip_special_tokens
        )
        self.prefix_offset = self.read_offset = len(self.ids)
        return printable(text[len(prefix) :])
