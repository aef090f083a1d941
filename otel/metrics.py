"""Turn metrics of the gateway process, scraped by Prometheus and/or pushed over OTLP.

Each :class:`Metrics` has its own meter provider and registry (the SDK's global meter provider can be set
only once per process, and tests run several engines in one), served on its own HTTP endpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from salon.otel import attributes as attrs

TTFT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Time-to-first-token buckets: from cached local models to slow remote ones."""


@dataclass
class DeploymentFigures:
    """What the gateway last read from the rest of the deployment (hosts, batch writer, turn queues): the
    observable instruments report it when scraped or pushed. Cumulative counts are sums over the hosts (a
    restarted host starts again from 0, which Prometheus reads as a counter reset)."""

    live_sessions: int = 0
    inflight_turns: int = 0
    activations: int = 0
    passivations: int = 0
    waiting_by_shard: dict[int, int] = field(default_factory=dict)
    """Turns published and not yet taken by a host, per shard."""
    breaker_states: dict[str, int] = field(default_factory=dict)
    """Provider -> the worst circuit-breaker state over the hosts (0 closed, 1 half-open, 2 open)."""
    model_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    """(provider, error reason) -> failed attempts."""
    batch_flushes: int = 0
    batch_rows: int = 0
    last_flush_s: float = 0.0
    tool_calls: dict[tuple[str, str], int] = field(default_factory=dict)
    """(tool name, outcome) -> calls that got their result (outcome: ok, error, rejected, timeout, invalid,
    cancelled)."""
    tool_wait_s: float = 0.0
    """Time turns spent waiting for tool results and approvals, summed."""
    tool_waits: int = 0
    waiting_turns: int = 0
    """Turns waiting for tool results or approvals now (holding no model connection)."""


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
        self.tokens = meter.create_counter(
            "salon.tokens", unit="1", description="Model tokens of the turns relayed, by type (input, output, cache)."
        )
        self.rpcs = meter.create_counter(
            "salon.rpc.responses", unit="1", description="Calls answered, by method and gRPC status code."
        )
        self.figures = DeploymentFigures()
        """Replaced by the engine's poller (:meth:`observe`); read when the instruments are collected."""
        gauges: list[tuple[str, str, Callable[[DeploymentFigures], Iterable[Observation]]]] = [
            ("salon.sessions.active", "Live sessions over the hosts.", lambda f: [Observation(f.live_sessions)]),
            (
                "salon.turns.inflight",
                "Turns running or queued on the hosts.",
                lambda f: [Observation(f.inflight_turns)],
            ),
            (
                "salon.turns.waiting",
                "Turns published and not yet taken by a host, per shard.",
                lambda f: [Observation(n, {"salon.shard": s}) for s, n in sorted(f.waiting_by_shard.items())],
            ),
            (
                "salon.model.breaker_state",
                "Circuit breaker per provider: 0 closed, 1 half-open, 2 open (the worst over the hosts).",
                lambda f: [Observation(v, {"gen_ai.provider.name": p}) for p, v in sorted(f.breaker_states.items())],
            ),
            (
                "salon.batch.last_flush_duration",
                "Duration of the batch writer's last flush, s.",
                lambda f: [Observation(f.last_flush_s)],
            ),
            (
                "salon.turns.waiting_for_tools",
                "Turns waiting for tool results or approvals (no model connection held).",
                lambda f: [Observation(f.waiting_turns)],
            ),
        ]
        for name, description, read in gauges:
            meter.create_observable_gauge(name, callbacks=[self._reading(read)], description=description)
        counters: list[tuple[str, str, Callable[[DeploymentFigures], Iterable[Observation]]]] = [
            ("salon.session.activations", "Sessions activated by the hosts.", lambda f: [Observation(f.activations)]),
            (
                "salon.session.passivations",
                "Sessions passivated by the hosts.",
                lambda f: [Observation(f.passivations)],
            ),
            (
                "salon.model.errors",
                "Failed model attempts, by provider and error kind.",
                lambda f: [
                    Observation(n, {"gen_ai.provider.name": p, "error.type": r})
                    for (p, r), n in sorted(f.model_errors.items())
                ],
            ),
            ("salon.batch.flushes", "Batch writer flushes to LanceDB.", lambda f: [Observation(f.batch_flushes)]),
            (
                "salon.tool.calls",
                "Tool calls that got their result, by tool and outcome.",
                lambda f: [
                    Observation(n, {attrs.GEN_AI_TOOL_NAME: t, attrs.TOOL_OUTCOME: o})
                    for (t, o), n in sorted(f.tool_calls.items())
                ],
            ),
            (
                "salon.tool.wait_time",
                "Time turns spent waiting for tool results and approvals, s (with salon.tool.waits: the mean wait).",
                lambda f: [Observation(f.tool_wait_s)],
            ),
            ("salon.tool.waits", "Waits of turns for their tools.", lambda f: [Observation(f.tool_waits)]),
            ("salon.batch.rows", "Records the batch writer wrote.", lambda f: [Observation(f.batch_rows)]),
        ]
        for name, description, read in counters:
            meter.create_observable_counter(name, callbacks=[self._reading(read)], description=description)

    def _reading(
        self, read: Callable[[DeploymentFigures], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return read(self.figures)

        return callback

    def observe(self, figures: DeploymentFigures) -> None:
        """The deployment's latest figures, reported from the next collection on."""
        self.figures = figures

    def tokens_used(self, counts: dict[str, int]) -> None:
        """Count a turn's model tokens, by type (input, output, cache_read, cache_write)."""
        for kind, n in counts.items():
            if n:
                self.tokens.add(n, {"salon.token.type": kind})

    def rpc_ended(self, method: str, code: str) -> None:
        """Count a call answered with ``code`` (a gRPC status code name)."""
        self.rpcs.add(1, {"rpc.method": method, "rpc.grpc.status_code": code})

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
