"""Carrying W3C trace context across hops: gRPC metadata in, NATS headers across, spans at each end.

Works with the OpenTelemetry API alone: without an SDK configured, spans are non-recording but the caller's
trace id still flows through every hop, so turns are correlated from day one and exporters only add output.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from salon.otel.logs import log_context

TRACER_NAME = "salon"


def _tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def trace_id_hex(span: Span) -> str:
    """The span's trace id as 32 hex digits, or "" when there is no valid trace."""
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


class ServerSpan:
    """A SERVER span continuing the trace of an incoming gRPC call.

    It is deliberately not made the current span: gRPC stream handlers are async generators whose cleanup
    can run in another context, where detaching a context token fails. Children get its context explicitly
    through :meth:`headers`.
    """

    def __init__(self, name: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
        self._incoming: dict[str, str] = {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}
        self.span = _tracer().start_span(name, context=propagate.extract(carrier), kind=SpanKind.SERVER)

    def headers(self) -> dict[str, str]:
        """Trace headers (``traceparent``/``tracestate``) naming this span as the parent; while telemetry is
        off in this process, the caller's own, so its sampling decision reaches processes that record."""
        if not self.span.is_recording() and self._incoming:
            return dict(self._incoming)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(self.span))
        return carrier


@contextlib.contextmanager
def server_span(name: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> Iterator[ServerSpan]:
    """A :class:`ServerSpan` ended when the block exits; records logged in the block name it (and the turn's
    ids once the gateway knows them)."""
    span = ServerSpan(name, metadata)
    try:
        with log_context(span=span.span):
            yield span
    finally:
        span.span.end()


class ConsumerSpan:
    """A CONSUMER span started from trace headers of a bus message, ended when the work is done."""

    def __init__(self, name: str, headers: Mapping[str, str], enqueued_at_ns: int = 0) -> None:
        parent = propagate.extract(dict(headers))
        attributes = {}
        if enqueued_at_ns:
            attributes["salon.queue_wait_ms"] = max(time.time_ns() - enqueued_at_ns, 0) / 1e6
        self.span = _tracer().start_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes)
        self.trace_id_hex = trace_id_hex(self.span)
        if not self.trace_id_hex:
            # No SDK and no incoming context: still report the caller's trace id if one came in.
            self.trace_id_hex = trace_id_hex(trace.get_current_span(parent))
        self._ended = False

    def context(self) -> otel_context.Context:
        """A context in which this span is current (for child spans)."""
        return trace.set_span_in_context(self.span)

    def end(self) -> None:
        """End the span once. Idempotent."""
        if not self._ended:
            self._ended = True
            self.span.end()


def consumer_span(name: str, headers: Mapping[str, str], enqueued_at_ns: int = 0) -> ConsumerSpan:
    """Start a :class:`ConsumerSpan`."""
    return ConsumerSpan(name, headers, enqueued_at_ns)


def inject_current(carrier: dict[str, str]) -> None:
    """Write the current span's trace context into ``carrier`` (message headers), so whoever later consumes
    the message can link to the span that produced it. Without an SDK this passes the caller's context on."""
    propagate.inject(carrier)


def link_from(headers: Mapping[str, str] | None) -> trace.Link | None:
    """A span link to the producer whose context ``headers`` carry, or None if they carry none."""
    if not headers:
        return None
    context = trace.get_current_span(propagate.extract(dict(headers))).get_span_context()
    return trace.Link(context) if context.is_valid else None
