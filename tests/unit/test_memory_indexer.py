"""The memory indexer paces its optimizations of the memories table by time, not by flushes."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import cast

import pytest

from salon.storage.records import TurnRecord
from salon.storage.tables import MEMORIES, MemoryIndexer, TranscriptStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """Records the optimizations asked of it; each takes ``optimize_s`` on the fake clock, or fails."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.optimized: list[Collection[str] | None] = []
        self.optimize_s = 0.1
        self.fail = False

    async def remember(self, turns: Sequence[TurnRecord]) -> None:
        pass

    async def optimize(self, tables: Collection[str] | None = None) -> None:
        self.optimized.append(tables)
        self.clock.now += self.optimize_s
        if self.fail:
            raise RuntimeError("optimize failed")


def indexer_of(store: FakeStore, clock: FakeClock) -> MemoryIndexer:
    return MemoryIndexer(cast(TranscriptStore, store), min_interval_s=3.0, max_share=0.05, clock=clock)


async def test_optimize_runs_at_most_once_per_interval() -> None:
    clock = FakeClock()
    store = FakeStore(clock)
    indexer = indexer_of(store, clock)
    for _ in range(10):  # a flush a second
        await indexer.optimize()
        clock.now += 1.0
    # Asked ten times over ten seconds: the first after 3 s, then at most every 3 s.
    assert store.optimized == [(MEMORIES,)] * 3
    assert indexer.optimizations == 3


async def test_a_slow_optimize_is_spaced_out_to_its_share_of_time() -> None:
    clock = FakeClock()
    store = FakeStore(clock)
    store.optimize_s = 2.0  # a large table: 2 s per optimize, so at 5% not again for 40 s
    indexer = indexer_of(store, clock)
    clock.now += 3.0
    await indexer.optimize()
    assert len(store.optimized) == 1
    clock.now += 30.0
    await indexer.optimize()
    assert len(store.optimized) == 1
    clock.now += 10.0
    await indexer.optimize()
    assert len(store.optimized) == 2


async def test_a_failed_optimize_is_tried_again_after_the_interval_not_at_once() -> None:
    clock = FakeClock()
    store = FakeStore(clock)
    store.fail = True
    indexer = indexer_of(store, clock)
    clock.now += 3.0
    with pytest.raises(RuntimeError):
        await indexer.optimize()
    await indexer.optimize()
    assert len(store.optimized) == 1
    store.fail = False
    clock.now += 3.0
    await indexer.optimize()
    assert len(store.optimized) == 2 and indexer.optimizations == 1


def test_bad_pacing_is_refused() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError):
        MemoryIndexer(cast(TranscriptStore, FakeStore(clock)), max_share=0.0)
    with pytest.raises(ValueError):
        MemoryIndexer(cast(TranscriptStore, FakeStore(clock)), min_interval_s=-1.0)
