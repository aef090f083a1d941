"""A deterministic provider for tests and benchmarks: known tokens, configurable delays and failures, and tool
calls scripted in the user's message.

Tool calls: lines of the user's message of the form ``$CALL name {"json": "arguments"}`` are the calls of the
turn's first model round (several lines: parallel calls); a line ``$THEN`` starts the next round's calls. Each
round after the first is counted from the assistant messages with calls since that user message, so a round
is answered the same way however often it is asked. Once the rounds run out the model answers, as without
calls, with the words of the rest of the message, where ``$RESULTS`` stands for the words of the results the
last round got. Arguments are sent as written (invalid JSON included); call ids are ``call_<round>_<n>``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

from salon.actors.memory import estimate_tokens
from salon.actors.model import (
    Message,
    ModelChunk,
    ModelError,
    ModelRequest,
    ModelResult,
    StopReason,
    TextDelta,
    ToolCall,
    continue_after,
)

ECHO_SYSTEM = "$SYSTEM"
"""A word of the user's message that the scripted provider replaces with the words of its system prompt, as
a model that obeys "repeat your instructions" would (tests of the system-prompt canary)."""
CALL = "$CALL"
"""A line ``$CALL name {arguments}`` of the user's message: a scripted tool call."""
THEN = "$THEN"
"""A line of the user's message that ends one round's scripted calls."""
RESULTS = "$RESULTS"
"""A word of the final answer's script replaced by the words of the last round's tool results."""


@dataclass(frozen=True, slots=True)
class ToolScript:
    """The tool calls scripted in a user message, round by round, and the text left for the answer."""

    rounds: tuple[tuple[tuple[str, str], ...], ...]
    """Per round, (tool name, arguments JSON) of each call."""
    text: str

    @classmethod
    def parse(cls, user_text: str) -> ToolScript:
        """The script in ``user_text`` (no rounds when it has no ``$CALL`` line)."""
        rounds: list[list[tuple[str, str]]] = [[]]
        rest: list[str] = []
        for line in user_text.splitlines():
            words = line.strip().split(maxsplit=2)
            if words and words[0] == CALL and len(words) > 1:
                rounds[-1].append((words[1], words[2] if len(words) > 2 else "{}"))
            elif words == [THEN]:
                rounds.append([])
            else:
                rest.append(line)
        return cls(tuple(tuple(r) for r in rounds if r), "\n".join(rest))

    def calls(self, round_index: int) -> list[ToolCall]:
        """The calls of round ``round_index`` (0: the first); none once the rounds have run out."""
        if round_index >= len(self.rounds):
            return []
        return [
            ToolCall(call_id=f"call_{round_index + 1}_{n + 1}", name=name, arguments_json=arguments)
            for n, (name, arguments) in enumerate(self.rounds[round_index])
        ]


def _turn_so_far(messages: tuple[Message, ...]) -> tuple[str, int, str]:
    """The message answered (the user message that opened the turn), the rounds of calls made since, and the
    last results' text."""
    if messages and messages[-1].role != "tool":
        return messages[-1].text, 0, ""  # as before tools: the newest message is the one answered
    rounds, results = 0, ""
    for message in reversed(messages):
        if message.role == "user":
            return message.text, rounds, results
        if message.tool_calls:
            rounds += 1
        if message.tool_results and not results and rounds == 0:
            results = " ".join(r.content for r in message.tool_results)
    return "", rounds, results


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
        """Yield the scripted tokens (or this round's scripted tool calls), then the result."""
        self.calls += 1
        user_text, rounds, results = _turn_so_far(request.messages)
        script = ToolScript.parse(user_text)
        if self.first_token_delay_s:
            await asyncio.sleep(self.first_token_delay_s)
        if calls := script.calls(rounds):
            if self.fail_after == 0:
                raise ModelError("scripted failure", reason="MODEL_UNAVAILABLE", retryable=True)
            for call in calls:
                yield call
            yield self._result(request, "tool_use", len(calls))
            return
        answer = script.text.replace(RESULTS, results) if script.rounds else user_text
        tokens = scripted_reply(answer, self.tokens, request.system)
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
        yield self._result(request, "end_turn", self.tokens)

    def _result(self, request: ModelRequest, stop: StopReason, output_tokens: int) -> ModelResult:
        parts = [request.system]
        for m in request.messages:
            parts += [m.text, *(c.arguments_json for c in m.tool_calls), *(r.content for r in m.tool_results)]
        return ModelResult(
            stop_reason=stop,
            input_tokens=estimate_tokens("".join(parts)),
            output_tokens=output_tokens,
            provider=self.name,
            model="scripted",
        )

    async def aclose(self) -> None:
        """Nothing to release."""
