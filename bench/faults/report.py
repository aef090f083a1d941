"""The suite's results as a Markdown table, and the verdict the CI test asserts."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bench.common import percentile
from bench.faults.suite import FaultResult


def _recovery(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):.1f} / {max(values):.1f}"


def _statuses(result: FaultResult) -> str:
    shown = sorted(result.statuses.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{name} {count}" for name, count in shown) or "-"


def render(results: Sequence[FaultResult], notes: Sequence[str]) -> str:
    """One row per fault, then what went wrong in words."""
    lines = [
        "| fault | runs | acked turns | lost | hidden right after | dup rows / history / stored events "
        "| event gaps / repeats | contradictions | generations per turn (mean / max) "
        "| restarts from the start / second full generations | tokens paid twice | recovery s (p50 / max) "
        "| statuses clients saw (attempts) |",
        "|---|---:|---:|---:|---:|---|---|---:|---|---|---:|---|---|",
    ]
    for r in results:
        if r.skipped:
            lines.append(f"| {r.name} | skipped: {r.skipped} |" + " |" * 11)
            continue
        gens = r.generations
        mean = statistics.fmean(gens) if gens else 0.0
        lines.append(
            f"| {r.name} | {r.runs} | {r.acked} | {r.lost} | {r.hidden} "
            f"| {r.dup_rows} / {r.dup_history} / {r.dup_stored_events} | {r.gaps} / {r.repeats} "
            f"| {r.contradictions + r.contradicted_prefills} | {mean:.2f} / {max(gens, default=0)} "
            f"| {r.restarts} / {r.second_full} | {r.tokens_paid_twice} | {_recovery(r.recovery_s)} | {_statuses(r)} |"
        )
    problems = []
    for r in results:
        if r.abandoned or r.failed:
            problems.append(f"{r.name}: {r.abandoned} turns abandoned, failed: {dict(r.failed)}")
        if r.unrecovered:
            problems.append(f"{r.name}: {r.unrecovered} runs did not recover in time")
        problems += [f"{r.name}: {note}" for note in r.notes]
    return "\n".join([*lines, "", *problems, *notes])


def verdict(results: Sequence[FaultResult]) -> list[str]:
    """What breaks a promise: lost or duplicated turns, events, history entries or rows, contradictions, second
    full generations, turns that never ended, runs that never recovered. Empty: every promise held."""
    broken = []
    for r in results:
        if r.skipped:
            continue
        checks = {
            "lost": r.lost,
            "hidden right after": r.hidden,
            "duplicate rows": r.dup_rows,
            "duplicate history entries": r.dup_history,
            "duplicate stored events": r.dup_stored_events,
            "event gaps": r.gaps,
            "event repeats": r.repeats,
            "contradictions": r.contradictions + r.contradicted_prefills,
            "second full generations": r.second_full,
            "abandoned turns": r.abandoned,
            "unrecovered runs": r.unrecovered,
            "failed tasks": r.task_errors,
            "no acknowledged turn": 0 if r.acked else 1,
        }
        broken += [f"{r.name}: {name} {value}" for name, value in checks.items() if value]
    return broken
