"""A local model server speaking OpenAI's streaming chat completions (vLLM, Ollama, llama.cpp's server).

One upstream request per :meth:`stream` call, over ``httpx2`` (the HTTP client the anthropic SDK brings):
``POST {base_url}/chat/completions`` with ``stream: true``, read as server-sent events until ``data: [DONE]``.
Retries, fallbacks and breakers are :class:`~providers.resilience.ProviderChain`'s job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2

from actors.model import ModelChunk, ModelError, ModelRequest, ModelResult, StopReason, TextDelta
from providers import errors
from providers.pricing import PriceTable
from providers.turns import merge_turns

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
    messages: list[dict[str, str]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages += [{"role": role, "content": text} for role, text in merge_turns(request.messages)]
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
    return body


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
        """One streamed chat completion: text deltas as they arrive, then the result."""
        model = request.model or self.model
        if not model:
            raise ModelError("no model is configured for the openai_compatible provider", reason=errors.NOT_CONFIGURED)
        http_request = self._client.build_request("POST", self.url, json=build_body(request, model))
        try:
            response = await self._client.send(http_request, stream=True)
        except httpx2.ReadTimeout as exc:
            raise errors.stalled(self.name, self.idle_timeout_s) from exc
        except httpx2.TransportError as exc:
            raise errors.connection_lost(self.name, type(exc).__name__) from exc
        try:
            if response.status_code != 200:
                raise await self._status_error(response)
            result = _Accumulator(model)
            async for sse in httpx2.EventSource(response):
                if sse.data.strip() == "[DONE]":
                    break
                for text in result.feed(_decode(sse.data)):
                    yield TextDelta(text)
        except ModelError:
            raise
        except httpx2.ReadTimeout as exc:
            raise errors.stalled(self.name, self.idle_timeout_s) from exc
        except httpx2.SSEError as exc:
            raise errors.protocol_error(self.name, str(exc)) from exc
        except httpx2.TransportError as exc:
            raise errors.connection_lost(self.name, type(exc).__name__) from exc
        finally:
            # Closing the response closes the connection: an abandoned or cancelled turn stops upstream now.
            await response.aclose()
        if result.finish_reason is None:
            raise errors.connection_lost(self.name, "the stream ended before a finish reason")
        yield result.result(self.name, self.prices, request.stop_sequences)

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

    def feed(self, chunk: dict[str, Any]) -> list[str]:
        """The text pieces of ``chunk`` (raising for an error chunk)."""
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
            for key in ("prompt_tokens", "completion_tokens"):
                if isinstance(usage.get(key), int):
                    self.usage[key] = usage[key]
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                self.usage["cached_tokens"] = details["cached_tokens"]
        texts: list[str] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str) and delta["content"]:
                texts.append(delta["content"])
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
                # vLLM says which stop string matched here.
                if isinstance(choice.get("stop_reason"), str):
                    self.stop_string = choice["stop_reason"]
        return texts

    def result(self, provider: str, prices: PriceTable, stop_sequences: tuple[str, ...]) -> ModelResult:
        """The result once the stream has finished."""
        stop = _FINISH_REASONS.get(self.finish_reason or "stop", "end_turn")
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
        )
