"""The deployment figures behind the gateway's metrics: what each host, the batch writer and the turn queues
report, folded together; a source that fails leaves its part out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from salon.engine.figures import FiguresPoller, figures_from

HOSTS = [
    {
        "live_sessions": 3,
        "inflight_turns": 1,
        "activations": 5,
        "passivations": 2,
        "model_calls": 9,
        "model_openai_compatible_breaker": 2,
        "model_openai_compatible_errors.rate_limited": 4,
        "model_anthropic_breaker": 0,
        "model_anthropic_errors.overloaded": 1,
        "tool_calls.lookup_order.ok": 3,
        "tool_calls.refund.rejected": 1,
        "tool_wait_ms": 1500,
        "tool_waits": 2,
        "waiting_turns": 1,
    },
    {
        "live_sessions": 4,
        "inflight_turns": 0,
        "activations": 4,
        "passivations": 1,
        "model_openai_compatible_breaker": 1,
        "model_openai_compatible_errors.rate_limited": 1,
        "tool_calls.lookup_order.ok": 2,
        "tool_wait_ms": 500,
        "tool_waits": 1,
    },
]


def test_host_figures_are_summed_and_the_worst_breaker_state_wins() -> None:
    writer = {"flushes": 7, "flushed_rows": 70, "last_flush_ms": 125.0}
    figures = figures_from(HOSTS, writer, {0: 2, 1: 0})
    assert (figures.live_sessions, figures.inflight_turns) == (7, 1)
    assert (figures.activations, figures.passivations) == (9, 3)
    # Provider names may hold underscores: the errors and breaker keys still split right.
    assert figures.breaker_states == {"openai_compatible": 2, "anthropic": 0}
    assert figures.model_errors == {("openai_compatible", "rate_limited"): 5, ("anthropic", "overloaded"): 1}
    assert (figures.batch_flushes, figures.batch_rows, figures.last_flush_s) == (7, 70, 0.125)
    assert figures.waiting_by_shard == {0: 2, 1: 0}
    assert figures.tool_calls == {("lookup_order", "ok"): 5, ("refund", "rejected"): 1}
    assert (figures.tool_wait_s, figures.tool_waits, figures.waiting_turns) == (2.0, 3, 1)


async def test_a_failing_source_leaves_its_part_out() -> None:
    async def hosts() -> Sequence[Mapping[str, int]]:
        raise ConnectionError("a host is restarting")

    async def writer() -> Mapping[str, object]:
        return {"flushes": 1, "flushed_rows": 2, "last_flush_ms": 3.0}

    async def waiting() -> Mapping[int, int]:
        return {0: 1}

    figures = await FiguresPoller(hosts, writer, waiting).gather()
    assert figures.live_sessions == 0 and figures.batch_rows == 2 and figures.waiting_by_shard == {0: 1}


def test_tool_figures_become_metrics_by_tool_and_outcome() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from salon.otel import Metrics

    reader = InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[reader]), None, None)
    try:
        metrics.observe(figures_from(HOSTS, None, {}))
        data = reader.get_metrics_data()
        assert data is not None
        points = {
            metric.name: [(dict(p.attributes or {}), p.value) for p in metric.data.data_points]
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
    finally:
        metrics.close()
    calls = {(a["gen_ai.tool.name"], a["salon.tool.outcome"]): v for a, v in points["salon.tool.calls"]}
    assert calls == {("lookup_order", "ok"): 5, ("refund", "rejected"): 1}
    assert points["salon.tool.wait_time"] == [({}, 2.0)] and points["salon.tool.waits"] == [({}, 3)]
    assert points["salon.turns.waiting_for_tools"] == [({}, 1)]
