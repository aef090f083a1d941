"""Telemetry for Salon: one trace per turn across every hop, span files and a viewer, turn metrics.

Nothing here is required for the engine to run: until :func:`setup` turns an exporter on, every span is the
OpenTelemetry API's no-op that still passes the caller's trace id along. Message content stays out of spans
unless the operator opts in (``capture_content``).
"""

from opentelemetry.context import Context as TraceContext
from opentelemetry.trace import SpanKind

from otel import attributes
from otel.jsonl import JsonlSpanExporter, SpanRecord, read_spans
from otel.metrics import Metrics
from otel.propagation import ConsumerSpan, ServerSpan, consumer_span, server_span, trace_id_hex
from otel.runtime import capture_content, force_flush, metrics, metrics_port, setup, shutdown
from otel.settings import MODES, TelemetrySettings
from otel.spans import ProducerSpan, model_span_attributes, producer_span, set_model_content, set_model_response, span
from otel.viewer import find_trace, render_trace

__all__ = [
    "MODES",
    "ConsumerSpan",
    "JsonlSpanExporter",
    "Metrics",
    "ProducerSpan",
    "ServerSpan",
    "SpanKind",
    "SpanRecord",
    "TelemetrySettings",
    "TraceContext",
    "attributes",
    "capture_content",
    "consumer_span",
    "find_trace",
    "force_flush",
    "metrics",
    "metrics_port",
    "model_span_attributes",
    "producer_span",
    "read_spans",
    "render_trace",
    "server_span",
    "set_model_content",
    "set_model_response",
    "setup",
    "shutdown",
    "span",
    "trace_id_hex",
]
