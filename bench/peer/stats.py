"""Figures of one run: percentiles of the time to first token, turns per second and CPU per turn."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of ``values`` with linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class LevelResult:
    """What one system did at one concurrency level, measured turns only."""

    system: str
    sessions: int
    warmup_turns: int
    turns_per_session: int
    ttft_s: list[float] = field(default_factory=list)
    errors: int = 0
    warmup_errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    window_s: float = 0.0
    server_cpu_s: float = math.nan
    """CPU seconds the system's processes used during the measured window."""
    cpu_scope: str = ""
    """Whose CPU ``server_cpu_s`` is (the server's process tree, or the whole process for the library)."""
    load_before: str = ""
    load_after: str = ""
    idle_cpu_s: float = math.nan
    """CPU seconds the same processes used over ``idle_window_s`` before any session opened (their floor)."""
    idle_window_s: float = 0.0
    settle_s: float = 0.0
    """Seconds waited for the processes to settle after the system answered, before the idle reading."""
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    """CPU seconds per process name of the server's tree over the measured window (servers only)."""

    def record_error(self, exc: BaseException, *, warmup: bool) -> None:
        """Count a failed turn and keep the first few as evidence."""
        if warmup:
            self.warmup_errors += 1
        else:
            self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{'warm-up: ' if warmup else ''}{type(exc).__name__}: {exc}"[:300])

    def summary(self) -> dict[str, Any]:
        """The reported figures: milliseconds, turns per second, CPU milliseconds per turn."""
        ok = len(self.ttft_s)
        return {
            "system": self.system,
            "sessions": self.sessions,
            "turns_ok": ok,
            "errors": self.errors,
            "warmup_errors": self.warmup_errors,
            "ttft_p50_ms": percentile(self.ttft_s, 50) * 1e3,
            "ttft_p90_ms": percentile(self.ttft_s, 90) * 1e3,
            "turns_per_s": ok / self.window_s if self.window_s > 0 else math.nan,
            "cpu_ms_per_turn": self.server_cpu_s / ok * 1e3 if ok else math.nan,
            "cpu_scope": self.cpu_scope,
            "idle_cpu_pct": self.idle_cpu_s / self.idle_window_s * 100 if self.idle_window_s > 0 else math.nan,
            "settle_s": self.settle_s,
            "cpu_ms_per_turn_by_process": {k: v / ok * 1e3 for k, v in self.cpu_by_process.items()} if ok else {},
            "window_s": self.window_s,
            "load_before": self.load_before,
            "load_after": self.load_after,
            "error_samples": self.error_samples,
        }

    def to_json(self) -> dict[str, Any]:
        """Everything, raw samples included (what a driver process hands the harness)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LevelResult:
        """The inverse of :meth:`to_json`."""
        return cls(**data)
