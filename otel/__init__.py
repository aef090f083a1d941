"""Telemetry for Salon: trace context propagation now; exporters and metrics plug in here.

Nothing here is required for the engine to run: with no SDK configured every call is a cheap no-op that
still passes the caller's trace id along.
"""

from otel.propagation import ConsumerSpan, ServerSpan, consumer_span, server_span, trace_id_hex

__all__ = ["ConsumerSpan", "ServerSpan", "consumer_span", "server_span", "trace_id_hex"]
