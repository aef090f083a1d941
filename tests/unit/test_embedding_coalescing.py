"""Coalescing: concurrent embedding calls share the model's inferences and each still gets its own vectors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from salon.storage.embedding import CoalescingEmbedder, HashEmbedder


class GatedEmbedder:
    """A hash embedder that records each call's texts and holds every call until its gate opens."""

    def __init__(self, fail: bool = False) -> None:
        self._inner = HashEmbedder()
        self.dim = self._inner.dim
        self.model_id = self._inner.model_id
        self.calls: list[list[str]] = []
        self.called = asyncio.Condition()
        self.gate = asyncio.Event()
        self.fail = fail

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        async with self.called:
            self.calls.append(list(texts))
            self.called.notify_all()
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("model failed")
        return await self._inner.embed(texts)


async def wait_for_calls(inner: GatedEmbedder, n: int) -> None:
    async with asyncio.timeout(10), inner.called:
        await inner.called.wait_for(lambda: len(inner.calls) >= n)


async def test_calls_made_while_one_runs_share_the_next_inference() -> None:
    inner = GatedEmbedder()
    embedder = CoalescingEmbedder(inner)
    first = asyncio.ensure_future(embedder.embed(["first text"]))
    await wait_for_calls(inner, 1)
    queued = [asyncio.ensure_future(embedder.embed([f"text {i}", f"more {i}"])) for i in range(5)]
    inner.gate.set()
    results = await asyncio.gather(first, *queued)
    # The first call went alone at once; the five that came while it ran went together.
    assert [len(c) for c in inner.calls] == [1, 10]
    expected = HashEmbedder()
    assert results[0] == await expected.embed(["first text"])
    for i, vectors in enumerate(results[1:]):
        assert vectors == await expected.embed([f"text {i}", f"more {i}"])
    await embedder.close()


async def test_a_run_holds_at_most_max_texts() -> None:
    inner = GatedEmbedder()
    embedder = CoalescingEmbedder(inner, coalesce_up_to=2, max_texts=3)
    held = asyncio.ensure_future(embedder.embed(["held"]))
    await wait_for_calls(inner, 1)
    queued = [asyncio.ensure_future(embedder.embed([f"t{i}", f"u{i}"])) for i in range(3)]
    inner.gate.set()
    await asyncio.gather(held, *queued)
    assert [len(c) for c in inner.calls] == [1, 2, 2, 2]
    await embedder.close()


async def test_a_bulk_call_goes_directly_and_queries_do_not_wait_behind_it() -> None:
    inner = GatedEmbedder()
    embedder = CoalescingEmbedder(inner, coalesce_up_to=2)
    bulk = asyncio.ensure_future(embedder.embed([f"chunk {i}" for i in range(20)]))
    await wait_for_calls(inner, 1)
    # The bulk call is held in the model; a query still reaches the model beside it.
    query = asyncio.ensure_future(embedder.embed(["a question"]))
    await wait_for_calls(inner, 2)
    assert [len(c) for c in inner.calls] == [20, 1]
    inner.gate.set()
    assert await query == await HashEmbedder().embed(["a question"])
    assert len(await bulk) == 20
    await embedder.close()


async def test_a_failure_reaches_every_call_of_its_batch_and_the_next_calls_still_run() -> None:
    inner = GatedEmbedder(fail=True)
    embedder = CoalescingEmbedder(inner)
    calls = [asyncio.ensure_future(embedder.embed([f"text {i}"])) for i in range(3)]
    inner.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    inner.fail = False
    assert await embedder.embed(["again"]) == await HashEmbedder().embed(["again"])
    await embedder.close()


async def test_a_caller_that_gives_up_leaves_the_others_their_vectors() -> None:
    inner = GatedEmbedder()
    embedder = CoalescingEmbedder(inner)
    first = asyncio.ensure_future(embedder.embed(["first"]))
    await wait_for_calls(inner, 1)
    abandoned = asyncio.ensure_future(embedder.embed(["abandoned"]))
    kept = asyncio.ensure_future(embedder.embed(["kept"]))
    await asyncio.sleep(0)  # wait-ok: one loop turn, so both have queued before one is cancelled
    abandoned.cancel()
    inner.gate.set()
    assert await kept == await HashEmbedder().embed(["kept"])
    await first
    assert inner.calls == [["first"], ["kept"]]
    await embedder.close()


async def test_close_cancels_the_queued_calls_and_is_idempotent() -> None:
    inner = GatedEmbedder()
    embedder = CoalescingEmbedder(inner)
    running = asyncio.ensure_future(embedder.embed(["running"]))
    await wait_for_calls(inner, 1)
    queued = asyncio.ensure_future(embedder.embed(["queued"]))
    await asyncio.sleep(0)  # wait-ok: one loop turn, so the call has queued before close
    await embedder.close()
    await embedder.close()
    for call in (running, queued):
        with pytest.raises(asyncio.CancelledError):
            await call
    # After close, calls go to the model directly.
    inner.gate.set()
    assert await embedder.embed(["after"]) == await HashEmbedder().embed(["after"])


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        CoalescingEmbedder(HashEmbedder(), coalesce_up_to=0)
    with pytest.raises(ValueError):
        CoalescingEmbedder(HashEmbedder(), coalesce_up_to=9, max_texts=8)


async def test_no_texts_need_no_inference() -> None:
    inner = GatedEmbedder()
    embedder = CoalescingEmbedder(inner)
    assert await embedder.embed([]) == []
    assert inner.calls == []
