"""The results as a Markdown table, one row per system and level."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from bench.peer.stats import LevelResult

LABELS = {
    "library": "LangGraph library in-process",
    "langgraph-dev": "`langgraph dev` (in-memory server)",
    "salon": "Salon, defaults (memory on)",
    "salon-nomem": "Salon, memory off",
}


class RunLike(Protocol):
    """What a row needs of a run."""

    system: str
    sessions: int
    load_before: str
    load_after: str
    result: LevelResult | None
    failure: str


def _num(value: Any, digits: int) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "–"
    return f"{value:,.{digits}f}"


def markdown_table(runs: Sequence[RunLike]) -> str:
    """Rows of TTFT p50/p90, turns/s, CPU per turn, errors and the 1-minute load before → after."""
    lines = [
        "| sessions | system | TTFT p50 ms | TTFT p90 ms | turns/s | server CPU ms/turn | idle CPU % | errors "
        "| load before → after |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        label = LABELS.get(run.system, run.system)
        load = f"{run.load_before.split()[0]} → {run.load_after.split()[0]}" if run.load_after else ""
        if run.result is None:
            lines.append(f"| {run.sessions} | {label} | failed: {run.failure[:80]} | | | | | | {load} |")
            continue
        s = run.result.summary()
        lines.append(
            f"| {run.sessions} | {label} | {_num(s['ttft_p50_ms'], 1)} | {_num(s['ttft_p90_ms'], 1)} | "
            f"{_num(s['turns_per_s'], 1)} | {_num(s['cpu_ms_per_turn'], 1)} | {_num(s['idle_cpu_pct'], 0)} | "
            f"{s['errors']} | {load} |"
        )
    return "\n".join(lines)
