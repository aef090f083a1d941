"""The ``ModelProvider`` seam: what a session needs from a language model.

A provider turns a :class:`ModelRequest` into an async stream of :class:`TextDelta` and :class:`ToolCall`
chunks followed by exactly one :class:`ModelResult`. A model that calls tools ends its round with
``stop_reason="tool_use"`` after the complete calls (arguments fully assembled from the vendor's streamed
deltas); the session runs them and asks again with the calls and their results appended to ``messages``.

Closing the stream (or cancelling the task consuming it) must stop the upstream generation. Implementations
live in ``providers``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from salon.storage import Passage
from salon.storage.errors import SalonError
from salon.storage.reasons import Reason

Role = Literal["user", "assistant", "tool"]
"""``tool`` messages carry the results of the calls made by the assistant message before them."""
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and the JSON Schema of its arguments."""

    name: str
    description: str = ""
    input_schema_json: str = '{"type": "object"}'
    """The arguments' JSON Schema (an object schema), as JSON text."""
    requires_approval: bool = False
    """A person approves or rejects each call before it runs."""
    server: str = ""
    """The MCP server that runs it; empty: the client runs it."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a tool to run (``arguments_json`` is complete, valid or not)."""

    call_id: str
    name: str
    arguments_json: str = "{}"


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call produced (or why it failed, with ``is_error``), as the model will see it."""

    call_id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation as the model sees it.

    An ``assistant`` message may carry the tool calls it made (its text may then be empty); the ``tool``
    message after it carries their results, in the same order."""

    role: Role
    text: str
    turn_id: str = ""
    turn_index: int = field(default=0, compare=False)
    """Index of the turn the message belongs to (0: not recorded yet). Bookkeeping of the session's memory,
    not part of what the model sees, so equality ignores it."""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Everything a provider needs to answer one turn."""

    system: str
    messages: tuple[Message, ...]
    model: str = ""
    max_tokens: int = 1024
    temperature: float | None = None
    stop_sequences: tuple[str, ...] = ()
    prefill: str = ""
    """The start of the answer, already sent to the client by an earlier attempt: continue after it."""
    provider: str = ""
    """The session's provider; empty: the deployment's chain."""
    fallback_providers: tuple[str, ...] = ()
    """Providers to try after it, in order, when it fails before its first token."""
    instructions: str = ""
    """The session's own system prompt. ``system`` is what providers send: these instructions followed by
    the rolling summary and the numbered passages (see ``actors.context``)."""
    summary: str = ""
    """The rolling summary in ``system``, for providers that answer without a model (the offline one)."""
    passages: tuple[Passage, ...] = ()
    """The retrieved passages in ``system``, numbered [1], [2] … in this order."""
    tools: tuple[ToolSpec, ...] = ()
    """Tools the model may call in this round; empty: none (providers then send no tool definitions)."""
    canary_line: str = ""
    """The line the engine appended to ``system`` to carry the session's guardrail canary (empty: none).
    Providers send ``system`` whole; code that quotes the instructions back to people (the offline
    responder) leaves this line out."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ModelResult:
    """The end of an answer: why it stopped and what it cost."""

    stop_reason: StopReason = "end_turn"
    stop_sequence: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    provider: str = ""
    model: str = ""
    estimated_cost_usd: float = 0.0
    """From the provider's price table; 0 when unknown."""
    extra: dict[str, str] = field(default_factory=dict)


ModelChunk = TextDelta | ToolCall | ModelResult


class ModelError(SalonError):
    """The provider failed. ``retryable`` says whether the same request may succeed later."""

    reason: str = Reason.MODEL_ERROR

    def __init__(
        self,
        message: str,
        *,
        reason: str = Reason.MODEL_ERROR,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, retry_after_s=retry_after_s)
        self.retryable = retryable


def continue_after(tokens: list[str], prefill: str) -> list[str]:
    """The tokens left to send when ``prefill`` (a prefix of the answer) was already sent: for providers
    whose answer is deterministic, continuing means skipping what the client has."""
    sent, index = "", 0
    while index < len(tokens) and prefill.startswith(sent + tokens[index]):
        sent += tokens[index]
        index += 1
    return tokens[index:]


@runtime_checkable
class ModelProvider(Protocol):
    """A source of streamed answers."""

    @property
    def name(self) -> str:
        """Short provider name, reported in usage events and transcripts."""
        ...

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Stream the answer to ``request``: text deltas and tool calls, then one :class:`ModelResult`."""
        ...

    async def aclose(self) -> None:
        """Release connections held by the provider."""
        ...
