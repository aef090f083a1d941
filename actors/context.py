"""Context assembly: what a turn's prompt is made of, and the record of it (explainable context).

The prompt is, in order: the session's instructions, the rolling summary of messages that left the window,
the retrieved passages (the tenant's knowledge base and this session's long-term memories no longer in the
window), numbered [1], [2] … with a request to cite them, then the window of recent messages (whole turns,
within the window's token budget) and the new message. Token counts are estimates (``actors.memory``).

Budgets: the window has ``window_token_budget``; the summary is kept under ``summary_max_tokens`` when it is
written; each passage is cut to :data:`PASSAGE_MAX_CHARS`; at most ``retrieval_top_k`` passages enter, best
first, within ``retrieval_token_budget`` tokens together (:func:`within_budget`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from salon.actors.memory import estimate_tokens
from salon.actors.memory import message_tokens as tokens_of
from salon.actors.model import Message
from salon.actors.summary import Summary
from salon.storage import Passage

PASSAGE_MAX_CHARS = 1600
"""A passage longer than this (about 400 tokens) is cut in the prompt: memories are whole turns and a user
message may be long; knowledge chunks are shorter than this by construction."""

SUMMARY_HEADING = "Summary of the earlier conversation:"
PASSAGES_HEADING = (
    "Passages retrieved for this message (from the knowledge base and from earlier in this conversation). "
    "Use them when they help, and cite the ones you use by their number, like [1] or [2]:"
)


@dataclass(frozen=True, slots=True)
class WindowEntry:
    """A window message in the prompt."""

    turn_id: str
    turn_index: int
    role: str
    tokens: int
    tool_calls: int = 0
    """For an assistant message: the tool calls it made; for a tool message: the results it carries."""


@dataclass(frozen=True, slots=True)
class PassageEntry:
    """A retrieved passage in the prompt (what a citation names), without its text."""

    source: str
    document_id: str
    chunk_id: str
    score: float
    table_version: int
    title: str = ""
    turn_index: int = 0
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class TurnContext:
    """Exactly what entered one turn's prompt, with token counts. Stored in the turn's record as JSON."""

    window: tuple[WindowEntry, ...] = ()
    summary: Summary = field(default_factory=Summary)
    summary_tokens: int = 0
    passages: tuple[PassageEntry, ...] = ()
    system_tokens: int = 0
    message_tokens: int = 0
    total_tokens: int = 0
    retrieval_error_reason: str = ""

    def to_json(self) -> str:
        """The JSON object stored in ``TurnRecord.context_json``. It carries the summary's text too: that is
        how a session recovers its summary from the ledger."""
        data: dict[str, Any] = {
            "v": 1,
            "window": [_window_row(w) for w in self.window],
            "summary": self.summary.to_dict(),
            "summary_tokens": self.summary_tokens,
            "passages": [
                {
                    "source": p.source,
                    "document_id": p.document_id,
                    "chunk_id": p.chunk_id,
                    "score": p.score,
                    "table_version": p.table_version,
                    "title": p.title,
                    "turn_index": p.turn_index,
                    "tokens": p.tokens,
                }
                for p in self.passages
            ],
            "system_tokens": self.system_tokens,
            "message_tokens": self.message_tokens,
            "total_tokens": self.total_tokens,
            "retrieval_error_reason": self.retrieval_error_reason,
        }
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> TurnContext:
        """Parse ``TurnRecord.context_json`` ("" or anything unreadable: the empty context)."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls(
                window=tuple(_window_entry(row) for row in data.get("window", [])),
                summary=Summary.from_dict(data.get("summary")),
                summary_tokens=int(data.get("summary_tokens", 0)),
                passages=tuple(
                    PassageEntry(
                        source=str(p["source"]),
                        document_id=str(p["document_id"]),
                        chunk_id=str(p["chunk_id"]),
                        score=float(p["score"]),
                        table_version=int(p["table_version"]),
                        title=str(p.get("title", "")),
                        turn_index=int(p.get("turn_index", 0)),
                        tokens=int(p.get("tokens", 0)),
                    )
                    for p in data.get("passages", [])
                ),
                system_tokens=int(data.get("system_tokens", 0)),
                message_tokens=int(data.get("message_tokens", 0)),
                total_tokens=int(data.get("total_tokens", 0)),
                retrieval_error_reason=str(data.get("retrieval_error_reason", "")),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()


def _window_row(entry: WindowEntry) -> list[Any]:
    row: list[Any] = [entry.turn_id, entry.turn_index, entry.role, entry.tokens]
    return [*row, entry.tool_calls] if entry.tool_calls else row


def _window_entry(row: Sequence[Any]) -> WindowEntry:
    # Four fields, or five when the message carries tool calls or results.
    calls = int(row[4]) if len(row) > 4 else 0
    return WindowEntry(str(row[0]), int(row[1]), str(row[2]), int(row[3]), calls)


def window_entry(message: Message) -> WindowEntry:
    """What the record says of a window message."""
    calls = len(message.tool_calls) or len(message.tool_results)
    return WindowEntry(message.turn_id, message.turn_index, message.role, tokens_of(message), calls)


def passage_text(passage: Passage) -> str:
    """A passage's text as it enters the prompt (cut to :data:`PASSAGE_MAX_CHARS`)."""
    text = passage.text.strip()
    return text if len(text) <= PASSAGE_MAX_CHARS else text[: PASSAGE_MAX_CHARS - 1].rstrip() + "…"


def within_budget(passages: Sequence[Passage], budget: int, count: Callable[[str], int]) -> list[Passage]:
    """The passages (best first) whose prompt text fits ``budget`` tokens together, counted with ``count``:
    one that does not fit is left out and the next, shorter ones may still enter, in their order."""
    kept: list[Passage] = []
    used = 0
    for passage in passages:
        tokens = count(passage_text(passage))
        if used + tokens <= budget:
            kept.append(passage)
            used += tokens
    return kept


def _label(passage: Passage) -> str:
    if passage.source == "memory":
        return f"earlier in this conversation (turn {passage.turn_index})" if passage.turn_index else "memory"
    return f"document {passage.title or passage.document_id}"


def render_system(instructions: str, summary: str, passages: Sequence[Passage]) -> str:
    """The system prompt a provider sends: instructions, summary, numbered passages (empty parts left out)."""
    parts = [instructions.strip()] if instructions.strip() else []
    if summary.strip():
        parts.append(f"{SUMMARY_HEADING}\n{summary.strip()}")
    if passages:
        numbered = [f"[{n}] ({_label(p)}) {passage_text(p)}" for n, p in enumerate(passages, start=1)]
        parts.append(PASSAGES_HEADING + "\n" + "\n".join(numbered))
    return "\n\n".join(parts)


def explain(
    *,
    instructions: str,
    summary: Summary,
    passages: Sequence[Passage],
    window: Sequence[Message],
    user_text: str,
    retrieval_error_reason: str = "",
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> tuple[str, TurnContext]:
    """The system prompt and the record of what entered the prompt (passage tokens counted with
    ``count_tokens``, as the passage budget counts them)."""
    system = render_system(instructions, summary.text, passages)
    entries = tuple(window_entry(m) for m in window)
    passage_entries = tuple(
        PassageEntry(
            source=p.source,
            document_id=p.document_id,
            chunk_id=p.chunk_id,
            score=float(p.score),
            table_version=int(p.table_version),
            title=p.title,
            turn_index=int(p.turn_index),
            tokens=count_tokens(passage_text(p)),
        )
        for p in passages
    )
    summary_tokens = estimate_tokens(summary.text) if summary.text.strip() else 0
    message_tokens = estimate_tokens(user_text)
    context = TurnContext(
        window=entries,
        summary=summary if summary.text.strip() else Summary(),
        summary_tokens=summary_tokens,
        passages=passage_entries,
        system_tokens=estimate_tokens(instructions),
        message_tokens=message_tokens,
        total_tokens=estimate_tokens(system) + sum(e.tokens for e in entries) + message_tokens,
        retrieval_error_reason=retrieval_error_reason,
    )
    return system, context
