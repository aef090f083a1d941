"""Opening on first use: the embedder and the host's retriever load nothing until needed, share one attempt,
and try again after a failure."""

from __future__ import annotations

import asyncio
import threading

import pytest

from salon.storage import EmbeddingUnavailable, HashEmbedder, RetrievalQuery
from salon.storage.embedding import MODEL_DIM, MODEL_ID, Embedder
from salon.storage.errors import Unavailable
from salon.storage.lazy import LazyEmbedder, LazyRetriever
from salon.storage.retrieval import Retriever


class CountingBuild:
    """A stand-in for ``build_embedder`` that counts its calls, can be held, and can fail."""

    def __init__(self, fail: int = 0) -> None:
        self.calls = 0
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, kind: str) -> Embedder:
        self.calls += 1
        self.gate.wait(10)
        if self.fail:
            self.fail -= 1
            raise EmbeddingUnavailable("not installed")
        return HashEmbedder()


async def test_the_model_is_not_loaded_until_texts_are_embedded() -> None:
    build = CountingBuild()
    embedder = LazyEmbedder("default", build=build)
    assert (embedder.dim, embedder.model_id) == (MODEL_DIM, MODEL_ID)
    assert not embedder.loaded and build.calls == 0
    vectors = await embedder.embed(["hello world"])
    assert embedder.loaded and build.calls == 1
    assert vectors == await HashEmbedder().embed(["hello world"])


async def test_concurrent_first_uses_share_one_load() -> None:
    build = CountingBuild()
    build.gate.clear()
    embedder = LazyEmbedder("default", build=build)
    waiting = [asyncio.ensure_future(embedder.embed([f"text {i}"])) for i in range(5)]
    await asyncio.sleep(0)  # wait-ok: one loop turn, so every waiter has asked before the load is let through
    build.gate.set()
    results = await asyncio.gather(*waiting)
    assert len(results) == 5 and build.calls == 1


async def test_a_failed_load_is_tried_again_by_the_next_use() -> None:
    build = CountingBuild(fail=1)
    embedder = LazyEmbedder("default", build=build)
    with pytest.raises(EmbeddingUnavailable):
        await embedder.embed(["a"])
    assert not embedder.loaded
    assert len(await embedder.embed(["a"])) == 1
    assert build.calls == 2


async def test_warming_loads_in_the_background_and_close_is_idempotent() -> None:
    build = CountingBuild()
    embedder = LazyEmbedder("default", build=build)
    embedder.warm()
    await embedder.load()
    assert embedder.loaded and build.calls == 1
    await embedder.close()
    await embedder.close()


async def test_a_warm_up_that_fails_is_only_logged_and_the_first_use_tries_again() -> None:
    build = CountingBuild(fail=1)
    embedder = LazyEmbedder("default", build=build)
    embedder.warm()
    with pytest.raises(EmbeddingUnavailable):
        await embedder.load()
    await embedder.close()
    assert not embedder.loaded
    assert len(await embedder.embed(["a"])) == 1
    assert build.calls == 2


def test_the_hash_embedder_needs_no_loading() -> None:
    embedder = LazyEmbedder("hash")
    assert embedder.loaded and embedder.dim == HashEmbedder().dim


async def test_the_retriever_opens_its_tables_on_first_query(tmp_path: object) -> None:
    build = CountingBuild()
    retriever = LazyRetriever(str(tmp_path), LazyEmbedder("default", build=build))
    assert not retriever.opened
    query = RetrievalQuery(tenant_id="t1", session_id="s1", text="hello", include_memory=False)
    assert await retriever.retrieve(query) == []
    assert retriever.opened
    # The tenant has no documents and the session is inside its window: no vector was needed, but the model
    # is loading in the background for the turns that will need one.
    await retriever.embedder.load()
    assert build.calls == 1
    await retriever.close()
    await retriever.close()
    with pytest.raises(Unavailable):
        await retriever.retrieve(query)


async def test_warming_the_retriever_opens_it_in_the_background(tmp_path: object) -> None:
    retriever = LazyRetriever(str(tmp_path), LazyEmbedder("hash"))
    retriever.warm()
    query = RetrievalQuery(tenant_id="t1", session_id="s1", text="hello", include_memory=False)
    assert await retriever.retrieve(query) == []
    assert retriever.opened
    await retriever.close()


async def test_closing_during_a_warm_up_leaves_nothing_open(tmp_path: object) -> None:
    retriever = LazyRetriever(str(tmp_path), LazyEmbedder("hash"))
    retriever.warm()
    await retriever.close()
    # The open in progress finished after close began: it closed what it opened instead of keeping it.
    assert not retriever.opened


async def test_closing_does_not_wait_for_an_opening_that_is_stuck(tmp_path: object) -> None:
    retriever = LazyRetriever(str(tmp_path), LazyEmbedder("hash"))
    stuck = asyncio.Event()

    async def never_opens() -> Retriever:
        await stuck.wait()
        raise AssertionError("not reached")

    retriever._retriever._make = never_opens  # an import that a busy machine never gets to
    retriever.warm()
    await asyncio.sleep(0)  # wait-ok: one loop turn, so the warm-up is inside its opening
    closing = asyncio.ensure_future(retriever.close())
    try:
        done, _ = await asyncio.wait({closing}, timeout=60)  # a deadline for a hang, not a speed
        assert closing in done, "close waited for the opening"
    finally:
        stuck.set()
        await closing
    assert not retriever.opened
