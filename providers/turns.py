"""Shaping a conversation for chat APIs: shared by the HTTP providers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from salon.actors.model import Message, ToolCall, ToolResult

MISSING_RESULT = "No result was recorded for this call."
"""What the model is told for a call whose result the conversation lacks (the vendors refuse a call without
one): memory keeps calls and results together, so this only covers a conversation cut short."""


@dataclass
class Entry:
    """One vendor message: a user turn (tool results first, then text) or an assistant turn (text, then calls).
    A ``tool`` message belongs to the user side, as Anthropic sends tool results."""

    role: Literal["user", "assistant"]
    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    results: list[ToolResult] = field(default_factory=list)


def conversation(messages: tuple[Message, ...], *, tools: bool = True) -> list[Entry]:
    """The messages as strictly alternating entries: empty messages dropped, consecutive messages of one side
    joined (a failed turn leaves two user messages in a row), every call answered by exactly one result in the
    next entry. With ``tools`` False, calls and results are written out as text instead (a vendor refuses tool
    blocks in a request that offers no tools, and some servers have no tool support)."""
    entries: list[Entry] = []
    for message in messages:
        role: Literal["user", "assistant"] = "assistant" if message.role == "assistant" else "user"
        calls, results, text = list(message.tool_calls), list(message.tool_results), message.text
        if not tools:
            text = "\n\n".join(t for t in [text, *map(_call_text, calls), *map(_result_text, results)] if t)
            calls, results = [], []
        if not (text or calls or results):
            continue
        if not entries or entries[-1].role != role:
            entries.append(Entry(role))
        entry = entries[-1]
        entry.text = _join(entry.text, text)
        entry.calls += calls
        entry.results += results
    return _paired(entries) if tools else entries


def _paired(entries: list[Entry]) -> list[Entry]:
    """Each assistant entry's calls answered in the next entry, in call order (a missing result is supplied);
    results that answer no call of the entry before are dropped, and so is an entry left empty."""
    if entries and entries[-1].calls:
        entries.append(Entry("user"))  # the conversation ends on calls: answer them to keep it well-formed
    asked: list[ToolCall] = []
    for entry in entries:
        if entry.role == "user":
            by_id = {r.call_id: r for r in entry.results}
            entry.results = [by_id.get(c.call_id) or ToolResult(c.call_id, c.name, MISSING_RESULT, True) for c in asked]
        asked = entry.calls
    kept: list[Entry] = []
    for entry in entries:
        if not (entry.text or entry.calls or entry.results):
            continue
        if kept and kept[-1].role == entry.role:
            # Only a user entry left empty separates two assistant entries; the first of them made no calls.
            kept[-1].text = _join(kept[-1].text, entry.text)
            kept[-1].calls += entry.calls
            continue
        kept.append(entry)
    return kept


def _join(first: str, second: str) -> str:
    return f"{first}\n\n{second}" if first and second else first or second


def _call_text(call: ToolCall) -> str:
    return f"[called the tool {call.name} with {call.arguments_json or '{}'}]"


def _result_text(result: ToolResult) -> str:
    return f"[{'error from' if result.is_error else 'result of'} the tool {result.name}: {result.content}]"


def merge_turns(messages: tuple[Message, ...]) -> list[tuple[str, str]]:
    """(role, text) pairs with empty messages dropped and consecutive messages of one role joined, as chat APIs
    and chat templates want strictly alternating turns; tool calls and results are written out as text."""
    return [(entry.role, entry.text) for entry in conversation(messages, tools=False)]


def split_prefill(prefill: str) -> tuple[str, str]:
    """The prefill as it can be sent (Anthropic rejects a final assistant message ending in whitespace) and the
    whitespace held back, which the continuation must not repeat."""
    sent = prefill.rstrip()
    return sent, prefill[len(sent) :]


class HeldBackWhitespace:
    """Drops, from the start of a continuation, the whitespace that ended the prefill (the client has it)."""

    def __init__(self, held_back: str) -> None:
        self._held_back = held_back

    def __call__(self, text: str) -> str:
        """``text`` without leading whitespace the client already has."""
        if not self._held_back:
            return text
        stripped = text.lstrip()
        skipped = min(len(text) - len(stripped), len(self._held_back))
        self._held_back = "" if stripped else self._held_back[skipped:]
        return text[skipped:]
