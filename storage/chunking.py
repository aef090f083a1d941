"""Splitting documents into overlapping chunks of about a given number of tokens.

A chunk ends at the best boundary that keeps it within the budget: a paragraph, then a line, then a
sentence, then a word (a single word longer than the budget is cut). Each chunk after the first of a
section starts with the end of the one before (about ``overlap_tokens``, whole sentences or words where
possible), so a fact stated across a boundary is whole in one of them. In markdown, a heading starts a new
chunk and names the chunks under it; headings inside fenced code blocks are code, not headings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
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


def chunk_text(
    text: str,
    *,
    markdown: bool = False,
    chunk_tokens: int = 200,
    overlap_tokens: int = 40,
    count_tokens: Callable[[str], int] | None = None,
) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``chunk_tokens`` tokens, each after the first of its section
    starting with the last ``overlap_tokens`` or so of the one before; no chunk is empty or blank.

    ``markdown``: headings start new chunks and become their ``heading`` (the heading path, e.g.
    ``"Setup / Linux"``). ``count_tokens``: the embedding model's own count (its tokenizer), so no chunk is
    longer than the model reads; without it, tokens are estimated as characters / 4.
    """
    if chunk_tokens < 1 or overlap_tokens < 0:
        raise ValueError("chunk_tokens must be at least 1 and overlap_tokens at least 0")
    if count_tokens is None:
        measure: Callable[[str], int] = len
        limit = chunk_tokens * CHARS_PER_TOKEN
    else:
        measure, limit = count_tokens, chunk_tokens
    # Overlap of at most half a chunk: more would make each chunk mostly a copy of the previous one. It is
    # taken in characters (about four per token): it need not be exact, the chunk it opens is measured.
    overlap_chars = min(overlap_tokens * CHARS_PER_TOKEN, chunk_tokens * CHARS_PER_TOKEN // 2)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    sections = _markdown_sections(text) if markdown else [("", text)]
    size = _Size(measure, limit)
    chunks: list[Chunk] = []
    for heading, body in sections:
        chunks.extend(Chunk(t, heading) for t in _pack(_pieces(body, size), size, overlap_chars))
    return chunks


@dataclass(frozen=True, slots=True)
class _Size:
    """How text is measured (characters, or the model's tokens) and the most a chunk may measure."""

    measure: Callable[[str], int]
    limit: int

    def fits(self, text: str) -> bool:
        # Bounds first, as tokenizing is the slow part: a token spans at least one character, and a text of
        # more than MAX_CHARS_PER_TOKEN characters per allowed token is taken as too long without counting.
        if len(text) <= self.limit:
            return True
        if len(text) > self.limit * MAX_CHARS_PER_TOKEN:
            return False
        return self.measure(text) <= self.limit


MAX_CHARS_PER_TOKEN: Final = 12
"""Above this many characters per token a text is not counted but split further (English averages about 4
characters per word piece; a whole chunk averaging 12 would be a run of very long words)."""


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


def _pieces(body: str, size: _Size) -> Iterator[_Piece]:
    """The body's paragraphs, each split further (lines, sentences, words) only if longer than a chunk."""
    for paragraph in _PARAGRAPH_BREAK.split(body):
        stripped = paragraph.strip("\n")
        if not stripped.strip():
            continue
        for piece, separator in _split(stripped, size, 0, "\n\n"):
            yield _Piece(piece, separator)


_SPLITTERS: Final = (re.compile(r"\n"), _SENTENCE_END, re.compile(r"\s+"))


def _split(text: str, size: _Size, level: int, separator: str) -> Iterator[tuple[str, str]]:
    """``text`` in parts that fit ``size``, split at the coarsest boundary that makes them fit, each
    with the separator that joins it to the part before: ``separator`` for the first, then what was split
    (a line break between lines, so lists and code keep their lines; a space between sentences or words)."""
    if size.fits(text):
        if text.strip():
            yield text.strip(), separator
        return
    if level == len(_SPLITTERS):
        # A word longer than a chunk is cut: at most ``limit`` characters, which no tokenizer counts as more
        # than ``limit`` tokens (each piece of a word spans at least one character).
        for start in range(0, len(text), size.limit):
            if part := text[start : start + size.limit].strip():
                yield part, separator
                separator = ""
        return
    joiner = "\n" if level == 0 else " "
    for part in _SPLITTERS[level].split(text):
        for piece in _split(part, size, level + 1, separator):
            yield piece
            separator = joiner


def _pack(pieces: Iterator[_Piece], size: _Size, overlap_chars: int) -> list[str]:
    """Greedily join pieces into chunks that fit ``size``, each new chunk opening with an overlap.

    Each piece is measured once and a chunk's size is the sum of its parts' (separators included): exact
    for characters, and for a tokenizer that splits at white space first (the bundled WordPiece one does),
    so long documents are not tokenized again for every piece added."""
    chunks: list[str] = []
    current, current_size = "", 0
    fresh = True
    """Whether ``current`` holds only overlap carried from the previous chunk (nothing new yet)."""
    for piece in pieces:
        piece_size = size.measure(piece.text)
        if current:
            joined, joined_size = (
                f"{current}{piece.separator}{piece.text}",
                current_size + size.measure(piece.separator) + piece_size,
            )
        else:
            joined, joined_size = piece.text, piece_size
        if joined_size <= size.limit:
            current, current_size, fresh = joined, joined_size, False
            continue
        if current and not fresh:
            chunks.append(current)
        tail = _tail(current, overlap_chars)
        # The overlap gives way if it and the new piece do not fit in one chunk.
        with_tail = size.measure(tail) + size.measure(" ") + piece_size if tail else size.limit + 1
        if with_tail <= size.limit:
            current, current_size = f"{tail} {piece.text}", with_tail
        else:
            current, current_size = piece.text, piece_size
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
