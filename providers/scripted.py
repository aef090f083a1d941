"""A deterministic provider for tests and benchmarks: known tokens, configurable delays and failures."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

from actors.memory import estimate_tokens
from actors.model import ModelChunk, ModelError, ModelRequest, ModelResult, TextDelta, continue_after

ECHO_SYSTEM = "$SYSTEM"
"""A word of the user's message that the scripted provider replaces with the words of its system prompt, as
a model that obeys "repeat your instructions" would (tests of the system-prompt canary)."""


def scripted_reply(user_text: str, tokens: int, system: str = "") -> list[str]:
    """The tokens the scripted provider answers ``user_text`` with: its words, cycled, ``tokens`` long; the
    word ``$SYSTEM`` stands for the words of ``system``."""
    words = [w for word in user_text.split() for w in (system.split() if word == ECHO_SYSTEM else [word])]
    words = words or ["…"]
    return [f"{word} " for word in itertools.islice(itertools.cycle(words), tokens)]


class ScriptedProvider:
    """Answers with :func:`scripted_reply` of the last user message.

    ``fail_after`` raises a retryable :class:`ModelError` after that many tokens (0: before the first).
    """

    name = "scripted"

    def __init__(
        self,
        *,
        tokens: int = 16,
        first_token_delay_s: float = 0.0,
        token_delay_s: float = 0.0,
        fail_after: int | None = None,
    ) -> None:
        self.tokens = tokens
        self.first_token_delay_s = first_token_delay_s
        self.token_delay_s = token_delay_s
        self.fail_after = fail_after
        self.calls = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Yield the scripted tokens, then the result."""
        self.calls += 1
        user_text = request.messages[-1].text if request.messages else ""
        if self.first_token_delay_s:
            await asyncio.sleep(self.first_token_delay_s)
        tokens = scripted_reply(user_text, self.tokens, request.system)
        skipped = len(tokens) - len(continue_after(tokens, request.prefill))
        for i, token in enumerate(tokens):
            if i < skipped:
                continue
            if self.fail_after is not None and i == self.fail_after:
                raise ModelError("scripted failure", reason="MODEL_UNAVAILABLE", retryable=True)
            if i and self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            yield TextDelta(token)
        if self.fail_after is not None and self.fail_after >= self.tokens:
            raise ModelError("scripted failure", reason="MODEL_UNAVAILABLE", retryable=True)
        prompt = request.system + "".join(m.text for m in request.messages)
        yield ModelResult(
            stop_reason="end_turn",
            input_tokens=estimate_tokens(prompt),
            output_tokens=self.tokens,
            provider=self.name,
            model="scripted",
        )

    async def aclose(self) -> None:
        """Nothing to release."""
