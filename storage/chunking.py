"""Splitting documents into overlapping chunks of about a given number of tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CHARS_PER_TOKEN: Final = 4
"""Token estimate: about four characters of English per token (the usual rule of thumb for subword
tokenizers). Storage keeps its own copy of the estimate so it does not depend on the session code."""


def estimate_tokens(text: str) -> int:
    """Approximate token count of ``text`` (at least 1 for non-empty text)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document: its text and the markdown heading it falls under (empty if none)."""

    text: str
    heading: str = ""


def chunk_text(text: str, *, markdown: bool = False, chunk_tokens: int = 200, overlap_tokens: int = 40) -> list[Chunk]:
    """Split ``text`` into chunks of at most about ``chunk_tokens`` tokens, each starting with the last
    ``overlap_tokens`` of the one before; no chunk is empty."""
    raise NotImplementedError
