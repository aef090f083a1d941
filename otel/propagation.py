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

TRACER_NAME = "salon"


def _tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def trace_id_hex(span: Span) -> str:
    """The span's trace id as 32 hex digits, or "" when there is no valid trace."""
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


@contextlib.contextmanager
def server_span(name: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> Iterator[Span]:
    """A SERVER span continuing the trace in incoming gRPC ``metadata`` (``traceparent``), made current."""
    carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
    parent = propagate.extract(carrier)
    with _tracer().start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
        yield span


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus the current trace context (``traceparent``/``tracestate``)."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier


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
