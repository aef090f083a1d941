"""The rolling summary: what the messages that left the sliding window said, rewritten after turns.

A session folds the messages that left its window into its summary after a turn has ended, in a background
task, so summarising never delays a first token. The session's model provider writes the summary with a
summarising prompt; providers that are not language models (the offline responder, the scripted test
provider) get a deterministic extractive summary instead, and so does a turn whose provider fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from salon.actors.memory import CHARS_PER_TOKEN
from salon.actors.model import Message, ModelProvider, ModelRequest, ModelResult, TextDelta

log = logging.getLogger(__name__)

NON_MODEL_PROVIDERS = frozenset({"offline", "scripted"})
"""Providers that do not understand instructions: their summaries are extractive."""

SUMMARY_PROMPT = (
    "You maintain the running summary of a conversation between a user and an assistant. You get the "
    "current summary and the messages that follow it. Write the new summary: keep every fact, name, number, "
    "decision, preference and open question that may matter later, drop small talk, write plain prose in "
    "the third person, and stay under {max_words} words. Answer with the summary only."
)

_LINE_CHARS = 240


@dataclass(frozen=True, slots=True)
class Summary:
    """A version of a session's rolling summary."""

    text: str = ""
    version: int = 0
    """0: no summary yet; each rewrite adds one."""
    through_turn_index: int = 0
    """The summary covers the messages of turns up to this index."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"text": self.text, "version": self.version, "through": self.through_turn_index}

    @classmethod
    def from_dict(cls, data: Any) -> Summary:
        """Rebuild from :meth:`to_dict` output (anything else gives the empty summary)."""
        if not isinstance(data, dict):
            return cls()
        return cls(
            text=str(data.get("text", "")),
            version=int(data.get("version", 0)),
            through_turn_index=int(data.get("through", 0)),
        )


class Summarizer(Protocol):
    """Writes a new summary from the previous one and the messages that follow it."""

    async def summarize(
        self, previous: str, messages: Sequence[Message], *, max_tokens: int, provider: str = "", model: str = ""
    ) -> str:
        """The summary of ``previous`` followed by ``messages``, in about ``max_tokens`` tokens, written by the
        session's ``provider`` and ``model`` (empty: the deployment's)."""
        ...


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def spoken(message: Message) -> str:
    """A message as a summary reads it: its text, with a tool call folded in beside it and a tool message as
    its results (so a call and its result are summarised together, never one without the other)."""
    parts = [message.text] if message.text.strip() else []
    parts += [f"called {c.name}({c.arguments_json})" for c in message.tool_calls]
    parts += [f"{r.name} {'failed' if r.is_error else 'returned'}: {r.content}" for r in message.tool_results]
    return "; ".join(parts)


def extractive_summary(previous: str, messages: Sequence[Message], *, max_tokens: int) -> str:
    """A deterministic summary: the previous one's lines, then one line per folded message (shortened),
    oldest lines dropped first when over ``max_tokens`` (they remain in long-term memory)."""
    lines = [line for line in previous.splitlines() if line.strip()]
    for message in messages:
        said = spoken(message)
        if not said.strip():
            continue
        who = {"user": "User", "tool": "Tools"}.get(message.role, "Assistant")
        where = f"turn {message.turn_index}: " if message.turn_index else ""
        lines.append(f"- {where}{who}: {_one_line(said, _LINE_CHARS)}")
    budget = max(max_tokens, 1) * CHARS_PER_TOKEN
    while len(lines) > 1 and sum(len(line) + 1 for line in lines) > budget:
        lines.pop(0)
    return "\n".join(lines)[:budget]


class ExtractiveSummarizer:
    """:func:`extractive_summary` as a :class:`Summarizer`."""

    async def summarize(
        self, previous: str, messages: Sequence[Message], *, max_tokens: int, provider: str = "", model: str = ""
    ) -> str:
        """See :func:`extractive_summary`."""
        return extractive_summary(previous, messages, max_tokens=max_tokens)


def _transcript(previous: str, messages: Sequence[Message]) -> str:
    parts = [f"Current summary:\n{previous or '(none yet)'}", "Messages that follow it:"]
    parts += [f"{m.role}: {spoken(m)}" for m in messages]
    return "\n\n".join(parts)


class ModelSummarizer:
    """Asks the session's provider for the summary; falls back to the extractive one when the provider fails
    or when the answer came from a provider that is not a language model (a chain's offline fallback)."""

    def __init__(self, provider: ModelProvider) -> None:
        self._provider = provider

    async def summarize(
        self, previous: str, messages: Sequence[Message], *, max_tokens: int, provider: str = "", model: str = ""
    ) -> str:
        """See :class:`Summarizer`."""
        request = ModelRequest(
            system=SUMMARY_PROMPT.format(max_words=max(max_tokens * 3 // 4, 20)),
            messages=(Message("user", _transcript(previous, messages)),),
            model=model,
            max_tokens=max_tokens,
            temperature=0.0,
            provider=provider,
        )
        parts: list[str] = []
        result: ModelResult | None = None
        try:
            async for chunk in self._provider.stream(request):
                if isinstance(chunk, TextDelta):
                    parts.append(chunk.text)
                elif isinstance(chunk, ModelResult):
                    result = chunk
        except Exception as exc:
            log.warning("summarising with the model failed (%s); using an extractive summary", type(exc).__name__)
            return extractive_summary(previous, messages, max_tokens=max_tokens)
        text = "".join(parts).strip()
        if not text or result is None or result.provider in NON_MODEL_PROVIDERS:
            return extractive_summary(previous, messages, max_tokens=max_tokens)
        return text


def summarizer_for(provider: ModelProvider) -> Summarizer:
    """The summarizer of sessions answered by ``provider``."""
    if provider.name in NON_MODEL_PROVIDERS:
        return ExtractiveSummarizer()
    return ModelSummarizer(provider)
