"""The sliding window: which recent messages enter the prompt verbatim."""

from __future__ import annotations

from collections.abc import Sequence

from actors.model import Message

CHARS_PER_TOKEN = 4
"""Token estimate used for budgets: about four characters of English per token (the usual rule of thumb
for BPE tokenizers). It over-counts code and under-counts CJK text; budgets leave headroom for that."""


def estimate_tokens(text: str) -> int:
    """Approximate token count of ``text`` (at least 1 for non-empty text)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def fit_window(messages: Sequence[Message], *, max_messages: int, token_budget: int) -> list[Message]:
    """The longest suffix of ``messages`` that fits both limits, never cutting a message in half and never
    separating a turn's user message from its reply (a window never starts with an orphaned reply)."""
    kept: list[Message] = []
    tokens = 0
    for message in reversed(messages):
        cost = estimate_tokens(message.text)
        if len(kept) >= max_messages or (token_budget and tokens + cost > token_budget):
            break
        kept.append(message)
        tokens += cost
    kept.reverse()
    while kept and kept[0].role == "assistant":
        kept.pop(0)
    return kept
