"""Splitting documents into overlapping chunks of about a given number of tokens.

A chunk ends at the best boundary that keeps it within the budget: a paragraph, then a line, then a
sentence, then a word (a single word longer than the budget is cut). Each chunk after the first of a
section starts with the end of the one before (about ``overlap_tokens``, whole sentences or words where
possible), so a fact stated across a boundary is whole in one of them. In markdown, a heading starts a new
chunk and names the chunks under it; headings inside fenced code blocks are code, not headings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
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


_HEADING: Final = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE: Final = re.compile(r"^ {0,3}(```|~~~)")
_PARAGRAPH_BREAK: Final = re.compile(r"\n[ \t]*\n+")
_SENTENCE_END: Final = re.compile(r"(?<=[.!?…。！？])[\"')\]]*\s+")


def chunk_text(text: str, *, markdown: bool = False, chunk_tokens: int = 200, overlap_tokens: int = 40) -> list[Chunk]:
    """Split ``text`` into chunks of at most about ``chunk_tokens`` tokens, each after the first of its
    section starting with the last ``overlap_tokens`` or so of the one before; no chunk is empty or blank.

    ``markdown``: headings start new chunks and become their ``heading`` (the heading path, e.g.
    ``"Setup / Linux"``).
    """
    if chunk_tokens < 1 or overlap_tokens < 0:
        raise ValueError("chunk_tokens must be at least 1 and overlap_tokens at least 0")
    max_chars = chunk_tokens * CHARS_PER_TOKEN
    # Overlap of at most half a chunk: more would make each chunk mostly a copy of the previous one.
    overlap_chars = min(overlap_tokens * CHARS_PER_TOKEN, max_chars // 2)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    sections = _markdown_sections(text) if markdown else [("", text)]
    chunks: list[Chunk] = []
    for heading, body in sections:
        chunks.extend(Chunk(t, heading) for t in _pack(_pieces(body, max_chars), max_chars, overlap_chars))
    return chunks


def _markdown_sections(text: str) -> list[tuple[str, str]]:
    """(heading path, body) of each section; the text before the first heading has an empty path."""
    sections: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match is None:
            body.append(line)
            continue
        sections.append((_path_title(path), "\n".join(body)))
        body = []
        level = len(match.group(1))
        path = [(lvl, title) for lvl, title in path if lvl < level]
        if match.group(2):
            path.append((level, match.group(2)))
    sections.append((_path_title(path), "\n".join(body)))
    return [(h, b) for h, b in sections if b.strip()]


def _path_title(path: list[tuple[int, str]]) -> str:
    return " / ".join(title for _, title in path)


@dataclass(frozen=True, slots=True)
class _Piece:
    """A unit no larger than a chunk, and the separator that joins it to the previous piece."""

    text: str
    separator: str


def _pieces(body: str, max_chars: int) -> Iterator[_Piece]:
    """The body's paragraphs, each split further (lines, sentences, words) only if longer than a chunk."""
    for paragraph in _PARAGRAPH_BREAK.split(body):
        stripped = paragraph.strip("\n")
        if not stripped.strip():
            continue
        for piece, separator in _split(stripped, max_chars, 0, "\n\n"):
            yield _Piece(piece, separator)


_SPLITTERS: Final = (re.compile(r"\n"), _SENTENCE_END, re.compile(r"\s+"))


def _split(text: str, max_chars: int, level: int, separator: str) -> Iterator[tuple[str, str]]:
    """``text`` in parts of at most ``max_chars``, split at the coarsest boundary that makes them fit, each
    with the separator that joins it to the part before: ``separator`` for the first, then what was split
    (a line break between lines, so lists and code keep their lines; a space between sentences or words)."""
    if len(text) <= max_chars:
        if text.strip():
            yield text.strip(), separator
        return
    if level == len(_SPLITTERS):
        for start in range(0, len(text), max_chars):
            if part := text[start : start + max_chars].strip():
                yield part, separator
                separator = ""
        return
    joiner = "\n" if level == 0 else " "
    for part in _SPLITTERS[level].split(text):
        for piece in _split(part, max_chars, level + 1, separator):
            yield piece
            separator = joiner


def _pack(pieces: Iterator[_Piece], max_chars: int, overlap_chars: int) -> list[str]:
    """Greedily join pieces into chunks of at most ``max_chars``, each new chunk opening with an overlap."""
    chunks: list[str] = []
    current = ""
    fresh = True
    """Whether ``current`` holds only overlap carried from the previous chunk (nothing new yet)."""
    for piece in pieces:
        joined = f"{current}{piece.separator}{piece.text}" if current else piece.text
        if len(joined) <= max_chars:
            current, fresh = joined, False
            continue
        if current and not fresh:
            chunks.append(current)
        tail = _tail(current, overlap_chars)
        # The overlap gives way if it and the new piece do not fit in one chunk.
        joined = f"{tail} {piece.text}" if tail else piece.text
        current = joined if tail and len(joined) <= max_chars else piece.text
        fresh = False
    if current and not fresh:
        chunks.append(current)
    return chunks


def _tail(text: str, max_chars: int) -> str:
    """The end of ``text`` of at most ``max_chars``: whole sentences if they fit, else whole words."""
    if max_chars <= 0 or not text:
        return ""
    if len(text) <= max_chars:
        return text.strip()
    window = text[-max_chars:]
    sentence = _SENTENCE_END.search(window)
    if sentence is not None and window[sentence.end() :].strip():
        return window[sentence.end() :].strip()
    space = re.search(r"\s", window)
    return window[space.end() :].strip() if space is not None else ""
