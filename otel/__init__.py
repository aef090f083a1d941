"""Telemetry for Salon: one trace per turn across every hop, span files and a viewer, turn metrics.

Nothing here is required for the engine to run: until :func:`setup` turns an exporter on, every span is the
OpenTelemetry API's no-op that still passes the caller's trace id along. Logs (:func:`setup_logging`, text or
JSON) carry the trace, span, tenant, session and turn ids. Message content stays out of spans and logs unless
the operator opts in (``capture_content``).
"""

from opentelemetry.context import Context as TraceContext
from opentelemetry.trace import SpanKind

from salon.otel import attributes
from salon.otel.jsonl import JsonlSpanExporter, SpanRecord, read_spans
from salon.otel.logs import ContentFilter, JsonFormatter, TextFormatter, current_ids, log_context, setup_logging
from salon.otel.metrics import DeploymentFigures, Metrics
from salon.otel.propagation import (
    ConsumerSpan,
    ServerSpan,
    consumer_span,
    inject_current,
    link_from,
    server_span,
    trace_id_hex,
)
from salon.otel.runtime import capture_content, force_flush, metrics, metrics_port, otlp_protocol, setup, shutdown
from salon.otel.settings import LOG_FORMATS, MODES, TelemetrySettings, resolve_mode
from salon.otel.spans import (
    ProducerSpan,
    end_tool_span,
    model_span_attributes,
    producer_span,
    set_model_content,
    set_model_response,
    span,
    start_tool_span,
)
from salon.otel.tasks import stop_tasks, task_stacks
from salon.otel.viewer import find_trace, render_trace

__all__ = [
    "LOG_FORMATS",
    "MODES",
    "ConsumerSpan",
    "ContentFilter",
    "DeploymentFigures",
    "JsonFormatter",
    "JsonlSpanExporter",
    "Metrics",
    "ProducerSpan",
    "ServerSpan",
    "SpanKind",
    "SpanRecord",
    "TelemetrySettings",
    "TextFormatter",
    "TraceContext",
    "attributes",
    "capture_content",
    "consumer_span",
    "current_ids",
    "end_tool_span",
    "find_trace",
    "force_flush",
    "inject_current",
    "link_from",
    "log_context",
    "metrics",
    "metrics_port",
    "model_span_attributes",
    "otlp_protocol",
    "producer_span",
    "read_spans",
    "render_trace",
    "resolve_mode",
    "server_span",
    "set_model_content",
    "set_model_response",
    "setup",
    "setup_logging",
    "shutdown",
    "span",
    "start_tool_span",
    "stop_tasks",
    "task_stacks",
    "trace_id_hex",
]
