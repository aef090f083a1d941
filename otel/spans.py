"""Spans inside a turn: the gateway's PRODUCER span, children of the host's CONSUMER span, and the GenAI
model-call span. Attributes are computed only when the span records, so telemetry off costs one no-op call.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind

from salon.otel import attributes as attrs
from salon.otel.logs import annotate, ids_from_attributes, log_context
from salon.otel.propagation import TRACER_NAME
from salon.otel.runtime import capture_content


def _tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: otel_context.Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    links: Sequence[Link] = (),
) -> Iterator[Span]:
    """A span current for the block, child of ``parent`` (or of the current span). Exceptions, cancellation
    included, are recorded by type only: their messages may quote user data. Records logged in the block
    carry the span's ids and the turn ids among ``attributes`` (``salon.tenant_id``, ``salon.session_id``,
    ``salon.turn_id``)."""
    with (
        _tracer().start_as_current_span(
            name,
            context=parent,
            kind=kind,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as current,
        log_context(ids_from_attributes(attributes)),
    ):
        try:
            yield current
        except BaseException as exc:
            if current.is_recording():
                current.set_attribute("error.type", type(exc).__qualname__)
                current.set_status(trace.StatusCode.ERROR)
            raise


class ProducerSpan:
    """A PRODUCER span for a message about to be published; :meth:`headers` carry it to the consumer."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def headers(self) -> dict[str, str]:
        """Trace headers naming this span as the parent."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(self.span))
        return carrier


@contextlib.contextmanager
def producer_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, Any] | None = None
) -> Iterator[ProducerSpan]:
    """A PRODUCER span continuing the trace in ``headers`` (a gateway's SERVER span), ended with the block.

    When no SDK records spans the incoming headers are passed on unchanged, so the caller's trace id still
    reaches the host. The turn ids among ``attributes`` are added to the enclosing log context (the
    gateway call's), so the call's later records carry them too."""
    annotate(ids_from_attributes(attributes))
    parent = propagate.extract(dict(headers))
    with span(name, parent=parent, kind=SpanKind.PRODUCER, attributes=attributes) as current:
        producer = ProducerSpan(current)
        if not current.is_recording():
            # Telemetry off here: pass the caller's context on untouched (its sampled flag included).
            producer.headers = lambda: dict(headers)  # type: ignore[method-assign]
        yield producer


def start_tool_span(
    tool: str, call_id: str, *, server: str, round_index: int, requires_approval: bool, arguments: str
) -> Span:
    """Start the span of one tool call, from the moment it was made (a child of the current span, the turn's):
    ``execute_tool {tool}``, INTERNAL, as the GenAI conventions name it. The caller ends it (see
    :func:`end_tool_span`); the arguments go on it only when the operator opted in to content."""
    attributes: dict[str, Any] = {
        attrs.GEN_AI_OPERATION: attrs.OPERATION_EXECUTE_TOOL,
        attrs.GEN_AI_TOOL_NAME: tool,
        attrs.GEN_AI_TOOL_CALL_ID: call_id,
        attrs.GEN_AI_TOOL_TYPE: "extension" if server else "function",
        attrs.TOOL_ROUND: round_index,
        attrs.TOOL_REQUIRES_APPROVAL: requires_approval,
    }
    if server:
        attributes[attrs.TOOL_SERVER] = server
    current = _tracer().start_span(f"execute_tool {tool}", kind=SpanKind.INTERNAL, attributes=attributes)
    if capture_content() and current.is_recording():
        current.set_attribute(attrs.GEN_AI_TOOL_CALL_ARGUMENTS, arguments)
    return current


def end_tool_span(current: Span, *, source: str, is_error: bool, result: str, approved: bool | None = None) -> None:
    """End a tool call's span with where its result came from (the result itself only under content capture)."""
    if current.is_recording():
        current.set_attribute(attrs.TOOL_SOURCE, source)
        if approved is not None:
            current.set_attribute(attrs.TOOL_APPROVED, approved)
        if is_error:
            current.set_attribute(attrs.ERROR_TYPE, "tool_error" if source in ("client", "mcp") else source)
            current.set_status(trace.StatusCode.ERROR)
        if capture_content():
            current.set_attribute(attrs.GEN_AI_TOOL_CALL_RESULT, result)
    current.end()


def model_span_attributes(
    *,
    provider: str,
    request_model: str,
    max_tokens: int,
    temperature: float | None,
) -> dict[str, Any]:
    """GenAI request attributes of a model call (``gen_ai.*``)."""
    values: dict[str, Any] = {
        attrs.GEN_AI_OPERATION: "chat",
        attrs.GEN_AI_SYSTEM: provider or "salon",
        attrs.GEN_AI_PROVIDER: provider or "salon",
        attrs.GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
    }
    if request_model:
        values[attrs.GEN_AI_REQUEST_MODEL] = request_model
    if temperature is not None:
        values[attrs.GEN_AI_REQUEST_TEMPERATURE] = temperature
    return values


def set_model_response(
    current: Span,
    *,
    provider: str,
    response_model: str,
    finish_reason: str,
    input_tokens: int,
    output_tokens: int,
    time_to_first_token_ms: float | None,
) -> None:
    """GenAI response attributes of a model call."""
    if not current.is_recording():
        return
    if provider:
        current.set_attribute(attrs.GEN_AI_PROVIDER, provider)
        current.set_attribute(attrs.GEN_AI_SYSTEM, provider)
    if response_model:
        current.set_attribute(attrs.GEN_AI_RESPONSE_MODEL, response_model)
    if finish_reason:
        current.set_attribute(attrs.GEN_AI_FINISH_REASONS, [finish_reason])
    current.set_attribute(attrs.GEN_AI_INPUT_TOKENS, input_tokens)
    current.set_attribute(attrs.GEN_AI_OUTPUT_TOKENS, output_tokens)
    if time_to_first_token_ms is not None:
        current.set_attribute(attrs.TTFT_MS, time_to_first_token_ms)


def set_model_content(
    current: Span, *, system: str, messages: Sequence[tuple[str, str]], answer: str | None = None
) -> None:
    """Message content on a model span, in the GenAI conventions' opt-in attributes: only when the operator
    enabled capture (``SALON_CAPTURE_CONTENT=true``); otherwise nothing, whatever the caller passes."""
    if not capture_content() or not current.is_recording():
        return
    if system:
        current.set_attribute(attrs.GEN_AI_SYSTEM_INSTRUCTIONS, json.dumps([{"type": "text", "content": system}]))
    if messages:
        current.set_attribute(
            attrs.GEN_AI_INPUT_MESSAGES,
            json.dumps([{"role": r, "parts": [{"type": "text", "content": t}]} for r, t in messages]),
        )
    if answer is not None:
        current.set_attribute(
            attrs.GEN_AI_OUTPUT_MESSAGES,
            json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]),
        )
