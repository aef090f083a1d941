"""A local model server speaking OpenAI's streaming chat completions (vLLM, Ollama, llama.cpp's server).

One upstream request per :meth:`stream` call, over ``httpx2`` (the HTTP client the anthropic SDK brings):
``POST {base_url}/chat/completions`` with ``stream: true``, read as server-sent events until ``data: [DONE]``.
Retries, fallbacks and breakers are :class:`~salon.providers.resilience.ProviderChain`'s job.

Tools (function calling): the request's tools go out as ``tools`` of type ``function``; an assistant message's
calls as its ``tool_calls`` and each result as a ``tool`` message. Streamed ``delta.tool_calls`` pieces are
assembled by their ``index`` (id and name first, the arguments in fragments); the complete calls are yielded
once the stream has finished, then the result with ``stop_reason="tool_use"``. Servers differ: Ollama numbers
parallel calls all 0 (a new id then starts a new call), some send the arguments as an object rather than text,
some finish with ``stop`` after calls. A request without tools writes earlier calls and results as text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2

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
from salon.providers.pricing import PriceTable
from salon.providers.turns import Entry, conversation

log = logging.getLogger(__name__)

_FINISH_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
}

_ERROR_BODY_CHARS = 2000


def build_body(request: ModelRequest, model: str) -> dict[str, Any]:
    """The chat completions request body for ``request``."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for entry in conversation(request.messages, tools=bool(request.tools)):
        messages += _messages(entry)
    if request.prefill:
        # A trailing assistant message: llama.cpp's server and Ollama continue it (vLLM needs
        # continue_final_message, which other servers reject, so it is not sent).
        messages.append({"role": "assistant", "content": request.prefill})
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": request.max_tokens,
        "stream": True,
        # Usage arrives in a last chunk with no choices (vLLM, llama.cpp, Ollama all support this).
        "stream_options": {"include_usage": True},
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.stop_sequences:
        body["stop"] = list(request.stop_sequences)
    if request.tools:
        body["tools"] = [_tool(spec) for spec in request.tools]
    return body


def _tool(spec: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": spec.name}
    if spec.description:
        function["description"] = spec.description
    function["parameters"] = json.loads(spec.input_schema_json or '{"type": "object"}')
    return {"type": "function", "function": function}


def _messages(entry: Entry) -> list[dict[str, Any]]:
    """An entry as chat messages: a user entry's results as ``tool`` messages before its text; an assistant
    entry's calls in its ``tool_calls`` (its content null when it has no text, as the API documents)."""
    if entry.role == "assistant":
        message: dict[str, Any] = {"role": "assistant", "content": entry.text or None}
        if entry.calls:
            message["tool_calls"] = [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json or "{}"},
                }
                for call in entry.calls
            ]
        return [message]
    # The API has no error flag on a tool message: the model reads it from the text.
    messages: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": r.call_id, "content": f"Error: {r.content}" if r.is_error else r.content}
        for r in entry.results
    ]
    if entry.text:
        messages.append({"role": "user", "content": entry.text})
    return messages


class OpenAICompatibleProvider:
    """Streams chat completions from an OpenAI-compatible server."""

    name = "openai_compatible"

    def __init__(
        self,
        *,
        base_url: str,
        model: str = "",
        api_key: str = "",
        idle_timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        prices: PriceTable | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("the openai_compatible provider needs a base URL")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.idle_timeout_s = idle_timeout_s
        self.prices = prices or PriceTable()
        headers = {"accept": "text/event-stream"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        # The read timeout is the idle timeout: a server that sends nothing for that long is stalled.
        self._client = httpx2.AsyncClient(
            headers=headers, timeout=httpx2.Timeout(idle_timeout_s, connect=connect_timeout_s)
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """One streamed chat completion: text deltas as they arrive, then the complete tool calls (if the model
        called any), then the result."""
        model, response = await self._open(request)
        result = _Accumulator(model)
        try:
            async for sse in httpx2.EventSource(response):
                if sse.data.strip() == "[DONE]":
                    break
                for text in result.feed(_decode(sse.data)):
                    yield TextDelta(text)
        except httpx2.TransportError as exc:
            raise self._transport_error(exc) from exc
        finally:
            # Closing the response closes the connection: an abandoned or cancelled turn stops upstream now.
            await response.aclose()
        if result.finish_reason is None:
            raise errors.connection_lost(self.name, "the stream ended before a finish reason")
        final = result.result(self.name, self.prices, request.stop_sequences)
        if final.stop_reason == "tool_use":
            for call in result.calls:
                yield call
        yield final

    async def _open(self, request: ModelRequest) -> tuple[str, httpx2.Response]:
        """The model asked for and the response, its status checked."""
        model = request.model or self.model
        if not model:
            raise ModelError("no model is configured for the openai_compatible provider", reason=errors.NOT_CONFIGURED)
        http_request = self._client.build_request("POST", self.url, json=build_body(request, model))
        try:
            response = await self._client.send(http_request, stream=True)
        except httpx2.TransportError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code != 200:
            try:
                raise await self._status_error(response)
            finally:
                await response.aclose()
        return model, response

    def _transport_error(self, exc: httpx2.TransportError) -> ModelError:
        if isinstance(exc, httpx2.ReadTimeout):
            return errors.stalled(self.name, self.idle_timeout_s)
        if isinstance(exc, httpx2.SSEError):
            return errors.protocol_error(self.name, str(exc))
        return errors.connection_lost(self.name, type(exc).__name__)

    async def _status_error(self, response: httpx2.Response) -> ModelError:
        body = (await response.aread())[:_ERROR_BODY_CHARS]
        error_type: str | None = None
        try:
            error = json.loads(body).get("error")
            if isinstance(error, dict):
                error_type = str(error.get("type") or "") or None
        except (ValueError, AttributeError):
            pass
        return errors.http_error(
            response.status_code,
            error_type=error_type,
            retry_after_s=errors.parse_retry_after(response.headers),
            provider=self.name,
        )


def _decode(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise errors.protocol_error(OpenAICompatibleProvider.name, "a chunk is not JSON") from None
    if not isinstance(chunk, dict):
        raise errors.protocol_error(OpenAICompatibleProvider.name, "a chunk is not a JSON object")
    return chunk


class _Accumulator:
    """Reads chunks: their text, and the finish reason and usage for the result."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.finish_reason: str | None = None
        self.stop_string = ""
        self.usage: dict[str, int] = {}
        self._calls: list[_PartialCall] = []
        self._slots: dict[int, int] = {}
        """The streamed index of a call -> its position in ``_calls``."""

    @property
    def calls(self) -> list[ToolCall]:
        """The tool calls assembled so far, in the order they began."""
        return [
            ToolCall(call_id=c.call_id or f"call_{i}", name=c.name, arguments_json="".join(c.arguments).strip() or "{}")
            for i, c in enumerate(self._calls)
        ]

    def _tool_delta(self, piece: dict[str, Any]) -> None:
        raw_index, raw_id = piece.get("index"), piece.get("id")
        index = raw_index if isinstance(raw_index, int) else len(self._slots)
        call_id = raw_id if isinstance(raw_id, str) else ""
        slot = self._slots.get(index)
        if slot is None or (call_id and self._calls[slot].call_id and call_id != self._calls[slot].call_id):
            # A new index, or a new id at a used one (Ollama numbers parallel calls all 0): a new call.
            self._slots[index] = slot = len(self._calls)
            self._calls.append(_PartialCall())
        call = self._calls[slot]
        call.call_id = call.call_id or call_id
        function = piece.get("function")
        if not isinstance(function, dict):
            return
        if isinstance(function.get("name"), str) and function["name"]:
            call.name = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call.arguments.append(arguments)
        elif isinstance(arguments, dict):
            call.arguments.append(json.dumps(arguments))

    def feed(self, chunk: dict[str, Any]) -> list[str]:
        """The text pieces of ``chunk`` (raising for an error chunk); its tool call pieces, finish reason and
        usage are kept for the result."""
        error = chunk.get("error")
        if error is not None:
            # vLLM and llama.cpp report a failure during generation as a chunk with an error object.
            kind = error.get("type") if isinstance(error, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) else 500
            raise errors.http_error(
                status, error_type=str(kind) if kind else None, provider=OpenAICompatibleProvider.name
            )
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage(usage)
        texts: list[str] = []
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                texts += self._choice(choice)
        return texts

    def _usage(self, usage: dict[str, Any]) -> None:
        for key in ("prompt_tokens", "completion_tokens"):
            if isinstance(usage.get(key), int):
                self.usage[key] = usage[key]
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            self.usage["cached_tokens"] = details["cached_tokens"]

    def _choice(self, choice: dict[str, Any]) -> list[str]:
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        for piece in delta.get("tool_calls") or ():
            if isinstance(piece, dict):
                self._tool_delta(piece)
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
            # vLLM says which stop string matched here.
            if isinstance(choice.get("stop_reason"), str):
                self.stop_string = choice["stop_reason"]
        content = delta.get("content")
        return [content] if isinstance(content, str) and content else []

    def result(self, provider: str, prices: PriceTable, stop_sequences: tuple[str, ...]) -> ModelResult:
        """The result once the stream has finished."""
        stop = _FINISH_REASONS.get(self.finish_reason or "stop", "end_turn")
        extra: dict[str, str] = {}
        if self._calls and stop != "max_tokens":
            stop = "tool_use"  # some servers finish with "stop" after calls
        elif self._calls:
            # Cut off by max_tokens: the last call's arguments may be incomplete, and none may run.
            extra["incomplete_tool_calls"] = str(len(self._calls))
        stop_sequence = ""
        if stop == "end_turn" and self.stop_string and self.stop_string in stop_sequences:
            stop, stop_sequence = "stop_sequence", self.stop_string
        cached = self.usage.get("cached_tokens", 0)
        # OpenAI-style prompt_tokens include the cached ones; ModelResult counts them apart, as Anthropic does.
        inp = max(self.usage.get("prompt_tokens", 0) - cached, 0)
        out = self.usage.get("completion_tokens", 0)
        return ModelResult(
            stop_reason=stop,
            stop_sequence=stop_sequence,
            input_tokens=inp,
            output_tokens=out,
            cache_read_input_tokens=cached,
            provider=provider,
            model=self.model,
            estimated_cost_usd=prices.cost(self.model, input_tokens=inp, output_tokens=out, cache_read_tokens=cached),
            extra=extra,
        )


class _PartialCall:
    """A tool call being streamed."""

    def __init__(self) -> None:
        self.call_id = ""
        self.name = ""
        self.arguments: list[str] = []
