"""The fault suite's short form, run as anyone runs it (``python -m bench.faults --short``): every fault against a
real engine, and no promise broken. The full form is a benchmark (bench/RESULTS-faults.md)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
async def test_every_fault_keeps_every_promise(tmp_path: Path) -> None:
    results = tmp_path / "faults.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALON_", "RAY_ADDRESS"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.faults",
        "--short",
        "--seed",
        "14",
        "--json",
        str(results),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    print(output.decode(errors="replace")[-6000:])  # the table, for whoever reads the test's output
    report = json.loads(results.read_text())
    ran = [f for f in report["faults"] if not f["skipped"]]
    assert len(ran) >= 10, "every fault ran (only the full disk may be skipped, when no tmpfs can be mounted)"
    for fault in ran:
        name = fault["fault"]
        assert fault["acknowledged"] > 0, f"{name}: clients saw turns complete"
        assert fault["lost"] == fault["hidden_right_after"] == 0, f"{name}: an acknowledged turn went missing"
        duplicates = (fault["duplicate_rows"], fault["duplicate_history_entries"], fault["duplicate_stored_events"])
        assert duplicates == (0, 0, 0), f"{name}: something was recorded twice"
        assert fault["event_gaps"] == fault["event_repeats"] == fault["contradictions"] == 0, name
        assert fault["second_full_generations"] == 0, f"{name}: a turn was generated in full twice"
        assert fault["abandoned"] == fault["unrecovered_runs"] == 0, f"{name}: the engine did not recover"
    assert report["broken"] == []
    assert proc.returncode == 0
