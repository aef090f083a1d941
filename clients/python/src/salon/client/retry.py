"""When and how long a turn waits before calling again after its stream failed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc


def _default_codes() -> frozenset[grpc.StatusCode]:
    return frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Bounded retries with jittered exponential backoff.

    A turn whose stream fails with one of ``retry_codes`` calls again: ``ResumeTurn`` after the last event it
    saw, or ``SendTurn`` with the same idempotency key if it saw none. It gives up (raising the last error)
    after ``max_retries`` failed calls in a row with no new event, or when ``max_elapsed_s`` have passed since
    the last new event. A call that brings new events resets both counts, so a long turn over a flaky link
    keeps going while it makes progress.
    """

    max_retries: int = 6
    """Failed calls in a row (without a new event) retried before giving up; 0 turns retrying off."""
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    max_elapsed_s: float = 60.0
    """Longest time spent retrying since the last new event."""
    retry_codes: frozenset[grpc.StatusCode] = field(default_factory=_default_codes)
    """gRPC status codes worth calling again for; UNAVAILABLE by default (gateway gone, connection cut,
    engine dependency down)."""

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.initial_backoff_s < 0 or self.max_elapsed_s < 0:
            raise ValueError("retry limits must not be negative")
        if self.multiplier < 1 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("backoff must not shrink: multiplier >= 1 and max_backoff_s >= initial_backoff_s")

    def backoff_s(self, failures: int, rng: random.Random, hint_s: float | None = None) -> float:
        """The wait before the next call after ``failures`` failed calls in a row (1 for the first).

        "Equal jitter": a random point in the upper half of the exponential step, so clients that lost the same
        gateway do not come back in lockstep yet never hammer it. The server's ``salon-retry-after-ms`` hint,
        when given, is a floor.
        """
        step = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** max(failures - 1, 0))
        delay = rng.uniform(step / 2, step)
        if hint_s is not None:
            delay = max(delay, hint_s)
        return delay


NO_RETRY = RetryPolicy(max_retries=0)
"""Fail on the first error."""
