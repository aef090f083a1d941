"""The deployment's figures for the gateway's metrics: what the hosts, the batch writer and the turn queues
report, gathered off the scrape path by a poller the engine owns (observable instruments then read the last
gathered figures without waiting on Ray or NATS)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from salon import otel
from salon.otel import DeploymentFigures, stop_tasks

log = logging.getLogger(__name__)

FIGURES_INTERVAL_S = 5.0
"""How often the figures are gathered: well under the usual Prometheus scrape interval (15 s or more)."""


def figures_from(
    host_stats: Sequence[Mapping[str, int]], writer: Mapping[str, Any] | None, waiting: Mapping[int, int]
) -> DeploymentFigures:
    """Fold each host's ``stats()``, the batch writer's status and the turns waiting per shard into figures."""
    figures = DeploymentFigures(waiting_by_shard=dict(waiting))
    for stats in host_stats:
        figures.live_sessions += stats.get("live_sessions", 0)
        figures.inflight_turns += stats.get("inflight_turns", 0)
        figures.activations += stats.get("activations", 0)
        figures.passivations += stats.get("passivations", 0)
        _tool_figures(figures, stats)
        for key, value in stats.items():
            if not key.startswith("model_"):
                continue
            name = key.removeprefix("model_")
            if "_errors." in name:
                provider, reason = name.split("_errors.", 1)
                figures.model_errors[provider, reason] = figures.model_errors.get((provider, reason), 0) + value
            elif name.endswith("_breaker"):
                provider = name.removesuffix("_breaker")
                figures.breaker_states[provider] = max(figures.breaker_states.get(provider, 0), value)
    if writer is not None:
        figures.batch_flushes = int(writer.get("flushes", 0))
        figures.batch_rows = int(writer.get("flushed_rows", 0))
        figures.last_flush_s = float(writer.get("last_flush_ms", 0.0)) / 1000.0
    return figures


def _tool_figures(figures: DeploymentFigures, stats: Mapping[str, int]) -> None:
    """A host's tool figures (``tool_calls.<tool>.<outcome>``, ``tool_wait_ms``, ``tool_waits``,
    ``waiting_turns``) added to ``figures``."""
    figures.tool_wait_s += stats.get("tool_wait_ms", 0) / 1000.0
    figures.tool_waits += stats.get("tool_waits", 0)
    figures.waiting_turns += stats.get("waiting_turns", 0)
    for key, value in stats.items():
        if key.startswith("tool_calls."):
            tool, _, outcome = key.removeprefix("tool_calls.").rpartition(".")
            figures.tool_calls[tool, outcome] = figures.tool_calls.get((tool, outcome), 0) + value


class FiguresPoller:
    """Gathers the figures every :data:`FIGURES_INTERVAL_S` into the process's metrics, while started.

    Each source is a coroutine function; a source that fails (a host restarting, NATS away) leaves its part
    out of that round rather than stopping the poller. Lifecycle: :meth:`start`, :meth:`close` (idempotent)."""

    def __init__(
        self,
        hosts: Callable[[], Awaitable[Sequence[Mapping[str, int]]]] | None,
        writer: Callable[[], Awaitable[Mapping[str, Any]]] | None,
        waiting: Callable[[], Awaitable[Mapping[int, int]]],
        interval_s: float = FIGURES_INTERVAL_S,
    ) -> None:
        self._hosts = hosts
        self._writer = writer
        self._waiting = waiting
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling (only when this process serves metrics). Starting twice does nothing."""
        if self._task is None and otel.metrics() is not None:
            self._task = asyncio.create_task(self._run(), name="salon-figures")

    async def gather(self) -> DeploymentFigures:
        """One round of figures."""
        hosts = await _quietly(self._hosts(), []) if self._hosts else []
        writer = await _quietly(self._writer(), None) if self._writer else None
        waiting = await _quietly(self._waiting(), {})
        return figures_from(hosts, writer, waiting)

    async def _run(self) -> None:
        while True:
            metrics = otel.metrics()
            if metrics is not None:
                metrics.observe(await self.gather())
            await asyncio.sleep(self._interval_s)

    async def close(self) -> None:
        """Stop polling. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks([task])


async def _quietly(source: Awaitable[Any], default: Any) -> Any:
    try:
        return await asyncio.wait_for(source, timeout=5.0)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.debug("a metrics source did not answer (%s)", type(exc).__name__)
        return default
