"""The offline responder: the default when no model is configured.

It does not pretend to be a language model. It says what it is and answers from what the session holds
(its instructions, the messages in its window, the passages retrieved for the turn, cited by number), so
the engine's whole path runs with no API key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from salon.actors.memory import estimate_tokens
from salon.actors.model import ModelChunk, ModelRequest, ModelResult, StopReason, TextDelta, continue_after

_EXCERPT_CHARS = 120


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1].rstrip() + "…"


def offline_answer(request: ModelRequest) -> str:
    """The offline responder's whole answer to ``request``."""
    history, current = list(request.messages[:-1]), (request.messages[-1] if request.messages else None)
    earlier = [m.text for m in history if m.role == "user"]
    lines = [
        "I am Salon's offline responder: no language model is configured, so I can only answer from what "
        "this session holds."
    ]
    # ``system`` also holds the summary, the passages and the guardrail canary line (never quoted back); the
    # session's own instructions are apart.
    instructions = (
        request.instructions if (request.instructions or request.passages or request.summary) else request.system
    )
    if request.canary_line:
        instructions = instructions.removesuffix(request.canary_line).rstrip()
    if instructions:
        lines.append(f"My instructions for this session begin: “{_excerpt(instructions)}”.")
    if earlier:
        recalled = "; ".join(f"“{_excerpt(t)}”" for t in reversed(earlier[-3:]))
        lines.append(
            f"I remember {len(earlier)} earlier message(s) of yours in this session, most recent first: {recalled}."
        )
    else:
        lines.append("This is the first message of the session that I can see.")
    if current is not None and current.text.strip():
        lines.append(f"You just said: “{_excerpt(current.text)}”.")
    if request.tools:
        names = ", ".join(spec.name for spec in request.tools[:8]) + (", …" if len(request.tools) > 8 else "")
        lines.append(f"I cannot use tools, so I did not call any of the ones offered ({names}).")
    if request.passages:
        found = "; ".join(f"[{n}] “{_excerpt(p.text)}”" for n, p in enumerate(request.passages, start=1))
        lines.append(f"From the passages retrieved for this message: {found}.")
    elif request.summary:
        lines.append(f"Earlier in the session, in summary: “{_excerpt(request.summary.splitlines()[-1])}”.")
    return " ".join(lines)


class OfflineProvider:
    """Streams :func:`offline_answer` word by word, with a small delay so streaming is visible."""

    name = "offline"

    def __init__(self, *, token_delay_s: float = 0.02, max_tokens_cap: int | None = None) -> None:
        self.token_delay_s = token_delay_s
        self.max_tokens_cap = max_tokens_cap

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Yield the answer in word-sized deltas, then the result."""
        words = re.findall(r"\S+\s*", offline_answer(request))
        limit = min(request.max_tokens, self.max_tokens_cap or request.max_tokens)
        stop: StopReason = "max_tokens" if len(words) > limit else "end_turn"
        remaining = continue_after(words[:limit], request.prefill)
        for i, word in enumerate(remaining):
            if i and self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            yield TextDelta(word)
        prompt = request.system + "".join(m.text for m in request.messages)
        yield ModelResult(
            stop_reason=stop,
            input_tokens=estimate_tokens(prompt),
            output_tokens=min(len(words), limit),
            provider=self.name,
            model="offline",
        )

    async def aclose(self) -> None:
        """Nothing to release."""
