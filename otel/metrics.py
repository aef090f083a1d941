"""Turn metrics of the gateway process, scraped by Prometheus and/or pushed over OTLP.

Each :class:`Metrics` has its own meter provider and registry (the SDK's global meter provider can be set
only once per process, and tests run several engines in one), served on its own HTTP endpoint.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

TTFT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Time-to-first-token buckets: from cached local models to slow remote ones."""


class Metrics:
    """The gateway's instruments and where they go. Build with :meth:`serve` or :meth:`build`."""

    def __init__(self, provider: MeterProvider, server: Any, thread: Any) -> None:
        self._provider = provider
        self._server = server
        self._thread = thread
        self._closed = False
        self.port: int = int(server.server_port) if server is not None else 0
        meter = provider.get_meter("salon")
        self.turns = meter.create_counter("salon.turns", unit="1", description="Turns ended, by outcome.")
        self.time_to_first_token = meter.create_histogram(
            "salon.turn.time_to_first_token", unit="s", description="From SendTurn to the first answer token."
        )
        self.turn_duration = meter.create_histogram(
            "salon.turn.duration", unit="s", description="From SendTurn to the turn's terminal event."
        )

    @classmethod
    def serve(cls, host: str, port: int) -> Metrics:
        """Start the Prometheus endpoint on ``host:port`` (0: a free port, see :attr:`port`)."""
        return cls.build(host, port)

    @classmethod
    def build(
        cls, host: str, port: int | None, exporter: MetricExporter | None = None, service_name: str = "salon"
    ) -> Metrics:
        """Instruments served on a Prometheus endpoint at ``host:port`` (None: no endpoint; 0: a free port)
        and, with ``exporter``, pushed to it periodically (``OTEL_METRIC_EXPORT_INTERVAL``) and at close."""
        readers: list[MetricReader] = []
        server: Any = None
        thread: Any = None
        if port is not None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry, start_http_server

            registry = CollectorRegistry()
            readers.append(PrometheusMetricReader(registry=registry))
            server, thread = start_http_server(port, addr=host, registry=registry)
        if exporter is not None:
            readers.append(PeriodicExportingMetricReader(exporter))
        views = [
            View(
                instrument_name="salon.turn.*",
                aggregation=ExplicitBucketHistogramAggregation(boundaries=TTFT_BUCKETS_S),
            )
        ]
        resource = Resource.create({"service.name": service_name})
        provider = MeterProvider(metric_readers=readers, views=views, resource=resource)
        return cls(provider, server, thread)

    def turn_ended(self, outcome: str, duration_s: float) -> None:
        """Count a turn that ended (completed, cancelled, error, ...)."""
        self.turns.add(1, {"outcome": outcome})
        self.turn_duration.record(duration_s, {"outcome": outcome})

    def first_token(self, seconds: float) -> None:
        """Record a turn's time to first token."""
        self.time_to_first_token.record(seconds)

    def force_flush(self) -> None:
        """Push the current figures to the OTLP exporter now, if there is one."""
        if not self._closed:
            self._provider.force_flush(timeout_millis=10_000)

    def close(self) -> None:
        """Stop the endpoint and push the last figures. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()
            self._thread.join(timeout=5)
        self._provider.shutdown()
