"""Helpers the benchmarks share: percentiles, command-line value checks, the machine's load, the header of
the JSON results."""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
from collections.abc import Sequence
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
