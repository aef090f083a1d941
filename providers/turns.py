"""Shaping a conversation for chat APIs: shared by the HTTP providers."""

from __future__ import annotations

from actors.model import Message


def merge_turns(messages: tuple[Message, ...]) -> list[tuple[str, str]]:
    """(role, text) pairs with empty messages dropped and consecutive messages of one role joined, as chat APIs
    and chat templates want strictly alternating turns (a failed turn leaves two user messages in a row)."""
    merged: list[tuple[str, str]] = []
    for message in messages:
        if not message.text:
            continue
        if merged and merged[-1][0] == message.role:
            merged[-1] = (message.role, merged[-1][1] + "\n\n" + message.text)
        else:
            merged.append((message.role, message.text))
    return merged


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
