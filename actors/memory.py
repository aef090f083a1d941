"""The sliding window: which recent messages enter the prompt verbatim."""

from __future__ import annotations

from collections.abc import Sequence

from salon.actors.model import Message

CHARS_PER_TOKEN = 4
"""Token estimate used for budgets: about four characters of English per token (the usual rule of thumb
for BPE tokenizers). It over-counts code and under-counts CJK text; budgets leave headroom for that."""


def estimate_tokens(text: str) -> int:
    """Approximate token count of ``text`` (at least 1 for non-empty text)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def message_tokens(message: Message) -> int:
    """Approximate tokens of a message in a prompt: its text, and the tool calls (name and arguments) or
    results it carries."""
    calls = sum(estimate_tokens(c.name + c.arguments_json) for c in message.tool_calls)
    results = sum(estimate_tokens(r.content) for r in message.tool_results)
    return estimate_tokens(message.text) + calls + results


def turn_groups(messages: Sequence[Message]) -> list[list[Message]]:
    """``messages`` split into the units a window keeps or drops whole: the consecutive messages of one turn
    (its user message, any tool call with its result, the reply), so a tool call is never separated from its
    result nor a question from its answer. A message without a turn id is a unit of its own."""
    groups: list[list[Message]] = []
    for message in messages:
        if groups and message.turn_id and groups[-1][-1].turn_id == message.turn_id:
            groups[-1].append(message)
        else:
            groups.append([message])
    return groups


def fit_window(messages: Sequence[Message], *, max_messages: int, token_budget: int) -> list[Message]:
    """The longest suffix of ``messages`` that fits both limits (``token_budget`` 0: no token limit), made of
    whole turns (see :func:`turn_groups`), never cutting a message in half and never starting with an
    orphaned reply, tool call or tool result."""
    kept: list[list[Message]] = []
    count = tokens = 0
    for group in reversed(turn_groups(messages)):
        cost = sum(message_tokens(m) for m in group)
        if count + len(group) > max_messages or (token_budget and tokens + cost > token_budget):
            break
        kept.append(group)
        count += len(group)
        tokens += cost
    window = [m for group in reversed(kept) for m in group]
    while window and window[0].role != "user":
        window.pop(0)
    return window
