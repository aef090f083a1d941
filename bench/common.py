"""Helpers the benchmarks share: percentiles, command-line value checks, the machine's load, the header of
the JSON results, and the CPU and memory of the processes a benchmark started (from /proc)."""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` with linear interpolation (NaN when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {raw!r}") from None


def positive_int(raw: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = _int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {raw!r}")
    return value


def non_negative_int(raw: str) -> int:
    """An argparse type: an integer of at least 0."""
    value = _int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {raw!r}")
    return value


def int_list(raw: str, *, minimum: int, what: str) -> list[int]:
    """A comma-separated list of integers, each at least ``minimum`` (bind with functools.partial)."""
    try:
        values = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {raw!r}") from None
    if not values or any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be integers of at least {minimum}")
    return values


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as text (the machine may be shared)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run_header(command: str, load_before: str, load_after: str) -> dict[str, Any]:
    """What every benchmark's JSON results start with: when, how, on what, under which load."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": {"before": load_before, "after": load_after},
    }


# --- the processes a benchmark started ---------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process of a tree at one moment: what it is, its CPU so far and its memory."""

    pid: int
    kind: str
    cpu_s: float
    """User + system CPU time it has spent (its own, not its reaped children's)."""
    rss_bytes: int
    pss_bytes: int
    """Proportional set size: shared pages split among their users (so a tree's PSS adds up honestly)."""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def tree_pids(root: int) -> list[int]:
    """``root`` and its live (non-zombie) descendants, from /proc (only ``root`` where there is no /proc)."""
    parents: dict[int, int] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return [root]
    for entry in proc.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found = [root] if root in parents else []
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_kind(pid: int) -> str:
    """What a process of an engine's tree is, from its command line (Ray names its workers ``ray::<Actor>``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    line = " ".join(part.decode(errors="replace") for part in argv if part)
    kinds = (
        ("--serve-relay", "relay server"),
        ("ray::HostActor", "host actor"),
        ("ray::WriterActor", "writer actor"),
        ("ray::IDLE", "ray idle worker"),
        ("ray::DashboardAgent", "ray dashboard agent"),
        ("ray::RuntimeEnvAgent", "ray runtime-env agent"),
        ("ray::", "ray worker"),
        ("nats-server", "nats-server"),
        ("gcs_server", "ray gcs"),
        ("raylet", "ray raylet"),
        ("dashboard/agent.py", "ray dashboard agent"),
        ("runtime_env/agent", "ray runtime-env agent"),
        ("log_monitor.py", "ray log monitor"),
        ("monitor.py", "ray monitor"),
        ("dashboard.py", "ray dashboard"),
        ("salon.engine.cli", "gateway (salon serve)"),
    )
    for marker, kind in kinds:
        if marker in line:
            return kind
    return line[:60] or "?"


def sample_process(pid: int) -> ProcessSample | None:
    """CPU and memory of one process now (None when it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return ProcessSample(pid, process_kind(pid), cpu, rss, pss)


def sample_tree(root: int) -> list[ProcessSample]:
    """Every live process of ``root``'s tree now."""
    return [s for s in (sample_process(pid) for pid in tree_pids(root)) if s is not None]


def by_kind(samples: Sequence[ProcessSample]) -> dict[str, dict[str, float]]:
    """Samples summed per kind of process: count, CPU seconds, RSS and PSS in MiB."""
    out: dict[str, dict[str, float]] = {}
    for s in samples:
        row = out.setdefault(s.kind, {"processes": 0, "cpu_s": 0.0, "rss_mib": 0.0, "pss_mib": 0.0})
        row["processes"] += 1
        row["cpu_s"] += s.cpu_s
        row["rss_mib"] += s.rss_bytes / 2**20
        row["pss_mib"] += s.pss_bytes / 2**20
    return dict(sorted(out.items(), key=lambda item: -item[1]["rss_mib"]))


def cpu_between(before: Sequence[ProcessSample], after: Sequence[ProcessSample]) -> dict[str, float]:
    """CPU seconds each kind of process spent between two samples of a tree (processes that appeared in
    between count from zero; those that left are not counted)."""
    start = {s.pid: s.cpu_s for s in before}
    out: dict[str, float] = {}
    for s in after:
        out[s.kind] = out.get(s.kind, 0.0) + s.cpu_s - start.get(s.pid, 0.0)
    return out
