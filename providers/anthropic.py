"""Claude through the official ``anthropic`` SDK's streaming Messages API: one attempt per :meth:`stream` call.

The SDK's own retries are off (``max_retries=0``): :class:`~salon.providers.resilience.ProviderChain` retries,
because only it knows whether a token already reached the session. Every failure leaves here as a
:class:`~salon.actors.model.ModelError` classified by :mod:`salon.providers.errors`.

Sampling parameters (temperature) are not sent: the Messages API version of SDK 2.x rejects them.

Prompt caching: the system prompt (the stable prefix: instructions, summary) carries a ``cache_control``
breakpoint; in ``conversation`` mode the newest user message carries one too, so the next turn reads the whole
conversation so far from the cache. Prompts shorter than the model's minimum cacheable length are simply not
cached by the API.

Tools: the request's tools go out as ``tools`` (name, description, ``input_schema``); an assistant message's
calls as ``tool_use`` blocks and the results after it as ``tool_result`` blocks of the next user message. A
``tool_use`` block of the answer is assembled from its ``input_json_delta`` pieces; the complete calls are
yielded once the message has ended (a stream that fails first yields none, so a retry cannot run a call twice),
then the result with ``stop_reason="tool_use"``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import anthropic
import httpx2
from anthropic.types import (
    ContentBlockParam,
    MessageParam,
    RawMessageStreamEvent,
    TextBlockParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)

from salon.actors.model import (
    ModelChunk,
    ModelError,
    ModelRequest,
    ModelResult,
    StopReason,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from salon.providers import errors
from salon.providers.factory import PROMPT_CACHE_MODES
from salon.providers.pricing import PriceTable
from salon.providers.turns import Entry, HeldBackWhitespace, conversation, split_prefill

log = logging.getLogger(__name__)

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "refusal": "refusal",
    # Only client tools are offered (no server tools), so a paused server-tool turn is as good as ended; a full
    # context window ends the answer the way max_tokens does.
    "pause_turn": "end_turn",
    "model_context_window_exceeded": "max_tokens",
}

_EPHEMERAL: dict[str, str] = {"type": "ephemeral"}


def build_params(request: ModelRequest, model: str, prompt_cache: str) -> dict[str, Any]:
    """The Messages API parameters for ``request`` (without ``stream``)."""
    messages: list[MessageParam] = [
        cast(MessageParam, {"role": entry.role, "content": _content(entry)})
        for entry in conversation(request.messages, tools=bool(request.tools))
    ]
    if prompt_cache == "conversation" and messages:
        last = cast(list[TextBlockParam], messages[-1]["content"])
        last[-1]["cache_control"] = cast(Any, _EPHEMERAL)
    prefill, _ = split_prefill(request.prefill)
    if prefill:
        # The documented "prefill": a trailing assistant message that the answer continues.
        messages.append({"role": "assistant", "content": [{"type": "text", "text": prefill}]})
    params: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens, "messages": messages}
    if request.system:
        system: TextBlockParam = {"type": "text", "text": request.system}
        if prompt_cache != "off":
            system["cache_control"] = cast(Any, _EPHEMERAL)
        params["system"] = [system]
    # No temperature: the API version the SDK speaks (2026-10-21) rejects every sampling parameter with a 400,
    # and the SDK no longer accepts one. A session's temperature applies to the other providers only.
    if request.stop_sequences:
        params["stop_sequences"] = list(request.stop_sequences)
    if request.tools:
        params["tools"] = [_tool(spec) for spec in request.tools]
    return params


def _tool(spec: ToolSpec) -> ToolParam:
    tool: ToolParam = {"name": spec.name, "input_schema": json.loads(spec.input_schema_json or '{"type": "object"}')}
    if spec.description:
        tool["description"] = spec.description
    return tool


def _content(entry: Entry) -> list[ContentBlockParam]:
    """An entry's blocks: tool results first in a user message (the API requires it), calls last in an
    assistant message."""
    blocks: list[ContentBlockParam] = []
    for result in entry.results:
        block: ToolResultBlockParam = {"type": "tool_result", "tool_use_id": result.call_id, "content": result.content}
        if result.is_error:
            block["is_error"] = True
        blocks.append(block)
    if entry.text:
        blocks.append({"type": "text", "text": entry.text})
    for call in entry.calls:
        use: ToolUseBlockParam = {"type": "tool_use", "id": call.call_id, "name": call.name, "input": _input(call)}
        blocks.append(use)
    return blocks


def _input(call: ToolCall) -> dict[str, object]:
    # The API only sends object inputs; a call recorded with other arguments (a model's mistake, already
    # answered with an error) is sent back with none.
    try:
        value = json.loads(call.arguments_json or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def classify(exc: BaseException, idle_timeout_s: float) -> ModelError:
    """The :class:`ModelError` for an exception raised by the SDK or its HTTP client."""
    name = AnthropicProvider.name
    if isinstance(exc, anthropic.APIStatusError):
        headers: Mapping[str, str] = exc.response.headers
        return errors.http_error(
            exc.status_code,
            error_type=exc.type,
            error_code=exc.error_code,
            retry_after_s=errors.parse_retry_after(headers),
            provider=name,
        )
    if isinstance(exc, anthropic.CredentialsError) or (isinstance(exc, TypeError) and "authentication" in str(exc)):
        # The SDK found no key (nor profile): say so instead of a bare TypeError.
        return ModelError(f"{name} has no credentials: set ANTHROPIC_API_KEY", reason=errors.AUTH_FAILED)
    if isinstance(exc, anthropic.APITimeoutError | httpx2.ReadTimeout):
        return errors.stalled(name, idle_timeout_s)
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        return errors.connection_lost(name, type(exc).__name__)
    if isinstance(exc, anthropic.APIResponseValidationError | ValueError):
        return errors.protocol_error(name, type(exc).__name__)
    return ModelError(f"{name} failed: {type(exc).__name__}", reason="MODEL_ERROR")


class AnthropicProvider:
    """Streams Claude's answer; one upstream request per call, no retries of its own."""

    name = "anthropic"

    def __init__(
        self,
        *,
        model: str = "",
        api_key: str = "",
        base_url: str = "",
        prompt_cache: str = "conversation",
        idle_timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        prices: PriceTable | None = None,
    ) -> None:
        if prompt_cache not in PROMPT_CACHE_MODES:
            raise ValueError(f"prompt_cache must be one of {', '.join(PROMPT_CACHE_MODES)}")
        self.model = model
        self.prompt_cache = prompt_cache
        self.idle_timeout_s = idle_timeout_s
        self.prices = prices or PriceTable()
        # The read timeout is the idle timeout: no bytes (pings included) for that long fails the read.
        timeout = httpx2.Timeout(idle_timeout_s, connect=connect_timeout_s)
        self._client = anthropic.AsyncAnthropic(
            # An explicit key stops the SDK reading the environment or profiles; without one it resolves them.
            api_key=api_key or None,
            base_url=base_url or None,
            max_retries=0,
            timeout=timeout,
        )

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections."""
        await self._client.close()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """One streamed Messages API call: text deltas as they arrive, then the complete tool calls (if the model
        called any), then the result with usage and cost."""
        model, upstream = await self._open(request)
        unrepeat = HeldBackWhitespace(split_prefill(request.prefill)[1])
        answer = _Answer(model)
        finished = False
        try:
            async for event in cast(AsyncIterator[RawMessageStreamEvent], upstream):
                if event.type == "message_stop":
                    finished = True
                    break
                text = unrepeat(answer.feed(event))
                if text:
                    yield TextDelta(text)
        except Exception as exc:
            raise classify(exc, self.idle_timeout_s) from exc
        finally:
            # Closing the response closes the connection: an abandoned or cancelled turn stops upstream now.
            await upstream.close()
        if not finished and answer.stop_reason is None:
            raise errors.connection_lost(self.name, "the stream ended before message_stop")
        calls = answer.calls
        result = self._result(answer.usage, answer.stop_reason, answer.stop_sequence, answer.model, len(calls))
        if result.stop_reason == "tool_use":
            for call in calls:
                yield call
        yield result

    async def _open(self, request: ModelRequest) -> tuple[str, Any]:
        """The model asked for and the opened stream."""
        model = request.model or self.model
        if not model:
            raise ModelError("no Anthropic model is configured", reason=errors.NOT_CONFIGURED)
        params = build_params(request, model, self.prompt_cache)
        if not params["messages"]:
            raise ModelError("the request has no message to answer", reason=errors.INVALID_REQUEST)
        try:
            return model, await self._client.messages.create(**params, stream=True)
        except Exception as exc:
            raise classify(exc, self.idle_timeout_s) from exc

    def _result(
        self, usage: dict[str, int], stop_reason: str | None, stop_sequence: str | None, model: str, calls: int = 0
    ) -> ModelResult:
        mapped = _STOP_REASONS.get(stop_reason or "end_turn", "end_turn")
        extra = {"upstream_stop_reason": stop_reason} if stop_reason and stop_reason != mapped else {}
        if calls and mapped != "max_tokens":
            mapped = "tool_use"
        elif calls:
            # Cut off by max_tokens: the last call's input may be incomplete, and none may run.
            extra["incomplete_tool_calls"] = str(calls)
        inp, out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        read, write = usage.get("cache_read_input_tokens", 0), usage.get("cache_creation_input_tokens", 0)
        return ModelResult(
            stop_reason=mapped,
            stop_sequence=stop_sequence or "",
            input_tokens=inp,
            output_tokens=out,
            cache_read_input_tokens=read,
            cache_creation_input_tokens=write,
            provider=self.name,
            model=model,
            estimated_cost_usd=self.prices.cost(
                model, input_tokens=inp, output_tokens=out, cache_read_tokens=read, cache_write_tokens=write
            ),
            extra=extra,
        )


class _Answer:
    """Reads the events of one streamed message: its text, its tool calls, why it stopped and its usage."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: dict[str, int] = {}
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self._uses: dict[int, tuple[str, str, list[str]]] = {}
        """tool_use blocks by index: id, name, the pieces of their input JSON."""
        self._complete: list[int] = []

    @property
    def calls(self) -> list[ToolCall]:
        """The tool calls whose blocks ended, in the order of the message."""
        calls = []
        for index in sorted(self._complete):
            call_id, name, pieces = self._uses[index]
            calls.append(ToolCall(call_id=call_id, name=name, arguments_json="".join(pieces).strip() or "{}"))
        return calls

    def feed(self, event: RawMessageStreamEvent) -> str:
        """Take one event; returns the text it adds to the answer."""
        if event.type == "content_block_delta":
            if event.delta.type == "text_delta":
                return event.delta.text
            if event.delta.type == "input_json_delta" and event.index in self._uses:
                self._uses[event.index][2].append(event.delta.partial_json)
            # thinking, signatures: not part of the answer
        elif event.type == "content_block_start" and event.content_block.type == "tool_use":
            block = event.content_block
            # The input arrives in deltas, the start holding {}; a start that carries it whole counts too.
            self._uses[event.index] = (block.id, block.name, [json.dumps(block.input)] if block.input else [])
        elif event.type == "content_block_stop" and event.index in self._uses:
            self._complete.append(event.index)
        elif event.type == "message_start":
            self.model = event.message.model or self.model
            _merge_usage(self.usage, event.message.usage)
        elif event.type == "message_delta":
            self.stop_reason = event.delta.stop_reason
            self.stop_sequence = event.delta.stop_sequence
            _merge_usage(self.usage, event.usage)
        return ""


def _merge_usage(usage: dict[str, int], reported: object) -> None:
    """Fold usage figures into ``usage``: ``message_delta`` reports cumulative counts, so later values win."""
    for key in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        value = getattr(reported, key, None)
        if isinstance(value, int):
            usage[key] = value
