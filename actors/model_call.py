"""One model round of a turn: the provider's stream, in a task of its own, under a GenAI CLIENT span (one per
round), through the turn's output guard.

The stream runs in its own task so the turn alone can be stopped (cancel, deadline, a newer turn) while the
session goes on; stopping it closes the provider's upstream stream at once. What the round ends with is set
on the turn's :class:`~salon.actors.running.TurnOutcome`: ``completed`` with the model's result, or a failure; the
tool calls it made are in ``running.round_calls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from opentelemetry.trace import Span

from salon import otel
from salon.actors.model import ModelChunk, ModelError, ModelProvider, ModelRequest, ModelResult, TextDelta, ToolCall
from salon.actors.running import RunningTurn
from salon.actors.turn import SessionKey

log = logging.getLogger(__name__)

DEADLINE_PASSED = "the turn's deadline passed"


class ModelCall:
    """Asks a session's provider for answers."""

    def __init__(self, key: SessionKey, provider: ModelProvider, instructions: str) -> None:
        self._key = key
        self._provider = provider
        self._instructions = instructions
        """The session's own system prompt: what content capture may export (never the canary line)."""

    async def run(self, running: RunningTurn, request: ModelRequest) -> None:
        """Stream the answer to ``request`` into ``running``. Cancelling the caller stops the stream (and
        re-raises); every other ending is set on the turn's outcome."""
        request_attrs = otel.model_span_attributes(
            provider=request.provider or self._provider.name,
            request_model=request.model,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
        )
        name = f"chat {request.model}" if request.model else "chat"
        running.model_rounds += 1
        running.round_calls = []
        running.outcome.result = None
        with otel.span(name, kind=otel.SpanKind.CLIENT, attributes=request_attrs) as span:
            started_ns = time.time_ns()
            try:
                await self._in_task(running, request)
            finally:
                if span.is_recording():
                    self._trace(span, running, request, started_ns)

    async def _in_task(self, running: RunningTurn, request: ModelRequest) -> None:
        stream = self._provider.stream(request)
        task = asyncio.create_task(self._consume(stream, running))
        running.task = task
        try:
            done, _ = await asyncio.wait({task}, timeout=running.seconds_left())
            if not done:
                running.stop(DEADLINE_PASSED)
                # wait() never raises the task's cancellation, only our own.
                await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise
        finally:
            running.task = None
            # Closing the generator closes the provider's upstream stream (its HTTP response) at once.
            await _aclose(stream)

    async def _consume(self, stream: AsyncIterator[ModelChunk], running: RunningTurn) -> None:
        outcome = running.outcome
        try:
            async for chunk in stream:
                if isinstance(chunk, TextDelta):
                    if not await self._on_text(chunk.text, running):
                        return
                elif isinstance(chunk, ToolCall):
                    running.round_calls.append(chunk)
                elif isinstance(chunk, ModelResult):
                    outcome.result = chunk
                    running.results.append(chunk)
            if outcome.result is None:
                raise ModelError("the model stream ended without a result", reason="MODEL_PROTOCOL_ERROR")
            await running.release_held()
            outcome.status = "completed"
        except ModelError as exc:
            # What was held back is part of the partial answer (redacted like the rest).
            await running.release_held()
            outcome.fail(
                exc.reason,
                exc.message,
                retryable=exc.retryable,
                retry_after_s=exc.retry_after_s,
                partial=bool(running.deltas),
            )
        except Exception:
            log.exception("turn failed inside the engine (session %s)", self._key)
            outcome.fail("INTERNAL", "the engine failed while running this turn", partial=bool(running.deltas))

    async def _on_text(self, text: str, running: RunningTurn) -> bool:
        """Send a piece of the answer through the output guard; False when the guard stopped the answer."""
        if not text:
            return True
        guard = running.output
        # Redaction holds back only a possibly unfinished secret or address at the end.
        await running.send(guard.feed(text) if guard is not None else text)
        if guard is not None and guard.leaked:
            log.warning("guardrail stopped an answer of session %s: system-prompt canary", self._key)
            running.outcome.fail(
                "SYSTEM_PROMPT_LEAK",
                "the answer was stopped: it repeated the session's confidential instructions",
                partial=bool(running.deltas),
            )
            return False
        return True

    def _trace(self, span: Span, running: RunningTurn, request: ModelRequest, started_ns: int) -> None:
        """Usage, finish reason and time to first token on the round's span; message content only when the
        operator opted in."""
        reported = running.outcome.result
        result = reported or ModelResult()
        first = running.first_token_at_ns
        otel.set_model_response(
            span,
            provider=result.provider,
            response_model=result.model,
            finish_reason=result.stop_reason if reported is not None else "",
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            time_to_first_token_ms=(first - started_ns) / 1e6 if first else None,
        )
        otel.set_model_content(
            span,
            # Never the canary line: content capture must not export it.
            system=self._instructions,
            messages=[(m.role, m.text) for m in request.messages],
            answer=running.prefill,
        )


async def _aclose(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
