"""Turning telemetry on and off in one process: ``setup`` installs exporters, ``shutdown`` flushes them.

The SDK's tracer provider can be installed only once per process, while a process may run several engines
one after another (tests do). So one provider is installed on first use, with a sampler and a span processor
that delegate to whatever the current ``setup`` chose; ``shutdown`` detaches them again. With telemetry off
nothing is installed at all and every span is the API's no-op.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from salon.otel.jsonl import JsonlSpanExporter
from salon.otel.logs import log_to_file
from salon.otel.metrics import Metrics
from salon.otel.settings import TelemetrySettings

log = logging.getLogger(__name__)

EXPORT_DELAY_MS = 200
"""How long finished spans wait to be written to span files in a batch: short, so `salon trace` sees a turn
promptly. Other exporters follow ``OTEL_BSP_SCHEDULE_DELAY`` (the SDK's default: 5 s), and so do span files
when it is set."""


def sampler_from_env() -> Sampler:
    """The sampler the standard ``OTEL_TRACES_SAMPLER`` (and ``OTEL_TRACES_SAMPLER_ARG``) name; by default the
    caller's decision, else every trace (``parentbased_always_on``)."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"

    def ratio() -> float:
        try:
            return min(max(float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")), 0.0), 1.0)
        except ValueError:
            return 1.0

    if name == "always_on":
        return ALWAYS_ON
    if name == "always_off":
        return ALWAYS_OFF
    if name == "traceidratio":
        return TraceIdRatioBased(ratio())
    if name == "parentbased_always_off":
        return ParentBased(ALWAYS_OFF)
    if name == "parentbased_traceidratio":
        return ParentBased(TraceIdRatioBased(ratio()))
    if name != "parentbased_always_on":
        log.warning("OTEL_TRACES_SAMPLER %r is not supported; following the caller's decision", name[:40])
    return ParentBased(ALWAYS_ON)


class _SwitchSampler(Sampler):
    """Drops every span while telemetry is off; otherwise samples as the current setup says."""

    def __init__(self) -> None:
        self.enabled = False
        self._inner: Sampler = ParentBased(ALWAYS_ON)

    def use(self, inner: Sampler) -> None:
        """Sample with ``inner`` from now on."""
        self._inner = inner

    def should_sample(  # noqa: PLR0917 - the SDK's signature
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if not self.enabled:
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "SalonSwitch"


class _SwitchProcessor(SpanProcessor):
    """Forwards finished spans to the processor of the current setup, if any."""

    def __init__(self) -> None:
        self.inner: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        inner = self.inner
        if inner is not None:
            inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        inner = self.inner
        if inner is not None:
            inner.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        inner = self.inner
        return inner.force_flush(timeout_millis) if inner is not None else True


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sampler: _SwitchSampler | None = None
        self.switch: _SwitchProcessor | None = None
        self.settings = TelemetrySettings()
        self.metrics: Metrics | None = None


_state = _State()


def _install(service_name: str) -> tuple[_SwitchSampler, _SwitchProcessor]:
    if _state.sampler is None or _state.switch is None:
        sampler, switch = _SwitchSampler(), _SwitchProcessor()
        provider = TracerProvider(sampler=sampler, resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(switch)
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            log.warning("another tracer provider is installed in this process; Salon's spans go to it")
        _state.sampler, _state.switch = sampler, switch
    return _state.sampler, _state.switch


def otlp_protocol(signal: str = "TRACES") -> str:
    """The OTLP protocol of a signal (``TRACES``, ``METRICS``) by the standard variables: ``grpc`` or
    ``http/protobuf`` (the default); ``http/json`` is not supported and falls back to ``http/protobuf``."""
    raw = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = (raw or "http/protobuf").strip().lower()
    if protocol not in ("grpc", "http/protobuf"):
        log.warning("OTLP protocol %r is not supported; using http/protobuf", protocol[:32])
        protocol = "http/protobuf"
    return protocol


def _otlp_span_exporter() -> SpanExporter:
    # Endpoint, headers, timeout, compression, certificates: the exporters read the OTEL_EXPORTER_OTLP_*
    # variables themselves. Imported here: only processes that export over OTLP pay for the import.
    if otlp_protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter()


def _otlp_metric_exporter() -> MetricExporter | None:
    wanted = os.environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower()
    if "otlp" not in [name.strip() for name in wanted.split(",")]:
        return None
    if otlp_protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

        return GrpcMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

    return HttpMetricExporter()


def _exporter(settings: TelemetrySettings, process: str) -> SpanExporter | None:
    if settings.mode == "console":
        return ConsoleSpanExporter(service_name=settings.service_name)
    if settings.mode == "jsonl":
        path = Path(settings.directory or ".") / f"{process}-{os.getpid()}.jsonl"
        return JsonlSpanExporter(path, process=process)
    if settings.mode == "otlp":
        return _otlp_span_exporter()
    return None


def _inherit_otel_env(settings: TelemetrySettings) -> None:
    # A host process started by Ray before the gateway's OTEL_* variables were set (or on another node)
    # lacks them; the process's own variables win, so a node can point at its local collector.
    for name, value in settings.otel_env:
        os.environ.setdefault(name, value)


def setup(
    settings: TelemetrySettings,
    *,
    process: str = "gateway",
    serve_metrics: bool = False,
    exporter: SpanExporter | None = None,
) -> None:
    """Start exporting this process's telemetry as ``settings`` say, replacing an earlier setup.

    ``process`` names the process in span files (``<process>-<pid>.jsonl``); ``serve_metrics`` starts the
    Prometheus endpoint (the gateway process only: hosts are many processes and have no port of their own).
    ``exporter`` overrides the mode's exporter and exports each span as it ends (tests: an in-memory one).
    """
    shutdown()
    _inherit_otel_env(settings)
    with _state.lock:
        _state.settings = settings
        log_to_file(settings.log_dir, process)
        processor: SpanProcessor | None = None
        if exporter is not None:
            processor = SimpleSpanProcessor(exporter)
        else:
            chosen = _exporter(settings, process)
            if chosen is not None:
                # Fewer, larger OTLP requests cost less CPU; span files are cheap to append to often.
                quick = settings.mode == "jsonl" and "OTEL_BSP_SCHEDULE_DELAY" not in os.environ
                processor = BatchSpanProcessor(chosen, schedule_delay_millis=EXPORT_DELAY_MS if quick else None)
        if processor is not None:
            sampler, switch = _install(settings.service_name)
            switch.inner = processor
            sampler.use(sampler_from_env())
            sampler.enabled = True
        if serve_metrics:
            otlp = _otlp_metric_exporter() if settings.mode == "otlp" and exporter is None else None
            if settings.metrics_port >= 0 or otlp is not None:
                port = settings.metrics_port if settings.metrics_port >= 0 else None
                _state.metrics = Metrics.build(settings.metrics_host, port, otlp, settings.service_name)


def shutdown() -> None:
    """Flush and detach the exporters and stop the metrics endpoint. Idempotent."""
    with _state.lock:
        if _state.sampler is not None:
            _state.sampler.enabled = False
        if _state.switch is not None and _state.switch.inner is not None:
            inner, _state.switch.inner = _state.switch.inner, None
            inner.shutdown()  # exports what is still queued, then closes the exporter
        if _state.metrics is not None:
            metrics, _state.metrics = _state.metrics, None
            metrics.close()
        log_to_file("", "")
        _state.settings = TelemetrySettings()


def force_flush() -> None:
    """Export every finished span, and the metrics when they go over OTLP, now (tests; the CLI before it
    reads span files)."""
    if _state.switch is not None:
        _state.switch.force_flush()
    current = _state.metrics
    if current is not None:
        current.force_flush()


def capture_content() -> bool:
    """Whether the operator opted in to message content in spans (``SALON_CAPTURE_CONTENT``)."""
    return _state.settings.capture_content


def metrics() -> Metrics | None:
    """The metrics of this process when its endpoint is on, else None (record nothing)."""
    return _state.metrics


def metrics_port() -> int:
    """The port the Prometheus endpoint listens on, or 0 when it is off."""
    current = _state.metrics
    return current.port if current is not None else 0
