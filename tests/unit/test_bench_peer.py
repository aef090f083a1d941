"""The peer benchmark's arithmetic (bench/peer): percentiles, per-turn figures and the table. The benchmark
itself is not part of the suite (``python -m bench.peer``)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

from bench.peer.load import settle
from bench.peer.procs import process_cpu_s, tree_cpu_s
from bench.peer.report import markdown_table
from bench.peer.stats import LevelResult, percentile


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == 4.6
    assert percentile([7.0], 90) == 7.0
    assert math.isnan(percentile([], 50))


def test_summary_divides_by_measured_turns() -> None:
    result = LevelResult("salon", 2, 20, 2, ttft_s=[0.010, 0.020, 0.030, 0.040], window_s=2.0, server_cpu_s=0.1)
    result.record_error(RuntimeError("boom"), warmup=True)
    summary = result.summary()
    assert summary["ttft_p50_ms"] == 25.0
    assert summary["turns_per_s"] == 2.0
    assert math.isclose(summary["cpu_ms_per_turn"], 25.0)
    assert (summary["errors"], summary["warmup_errors"]) == (0, 1)
    assert summary["error_samples"] == ["warm-up: RuntimeError: boom"]
    assert LevelResult.from_json(result.to_json()) == result


def test_summary_without_turns_has_no_figures() -> None:
    summary = LevelResult("library", 1, 0, 1, errors=1).summary()
    assert math.isnan(summary["ttft_p50_ms"]) and math.isnan(summary["cpu_ms_per_turn"])


class _Run:
    def __init__(self, system: str, result: LevelResult | None, failure: str = "") -> None:
        self.system, self.sessions, self.result, self.failure = system, 16, result, failure
        self.load_before, self.load_after = "3.00 2.00 1.00", "4.00 2.50 1.10"


def test_table_has_a_row_per_run_and_marks_failures() -> None:
    ok = LevelResult("salon", 16, 20, 1, ttft_s=[0.5], window_s=1.0, server_cpu_s=0.002)
    table = markdown_table([_Run("salon", ok), _Run("langgraph-dev", None, "RuntimeError: no start")])
    rows = table.splitlines()[2:]
    assert rows[0] == "| 16 | Salon, defaults (memory on) | 500.0 | 500.0 | 1.0 | 2.0 | – | 0 | 3.00 → 4.00 |"
    assert "failed: RuntimeError: no start" in rows[1]


def test_tree_cpu_counts_a_busy_child() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ninput()",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while process_cpu_s(child.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)  # wait-ok: polls the child's CPU time under a deadline
        assert tree_cpu_s(os.getpid()) >= process_cpu_s(child.pid) >= 0.25
    finally:
        child.kill()
        child.wait()


async def test_the_idle_reading_waits_for_a_system_still_busy_after_it_answered() -> None:
    readings = iter([0.0, 0.5, 0.5, 1.0, 1.0, 1.0])  # busy for two intervals, then quiet

    def probe() -> float:
        return next(readings)

    await settle(probe, limit_s=30, interval_s=0.01)
    assert next(readings, None) is None, "every reading was taken: it waited for the quiet interval"


async def test_a_system_that_never_settles_is_read_after_the_limit() -> None:
    busy = iter(float(n) for n in range(100_000))
    await settle(lambda: next(busy), limit_s=0.05, interval_s=0.01)
    assert next(busy) >= 4, "it kept reading the busy system until its limit, then returned"
