"""Opening on first use: the embedding model, and the LanceDB retriever of a session host.

Loading the bundled model (onnxruntime and the weights, tens of MiB per process) at start made every process
that might embed pay for it, whether or not it ever did: the gateway (ingestion and knowledge search), each
session host (a turn's query, once a session has memories or its tenant has documents) and the memory indexer.
:class:`LazyEmbedder` knows its ``dim`` and ``model_id`` without the model (tables are opened with them), and
loads the model, in a worker thread, when the first texts are to be embedded, or earlier when :meth:`warm` is
called.

:class:`LazyRetriever` does the same for a host's retriever: a host process imports LanceDB (and Arrow) and
opens its tables only when a turn first retrieves, or when warmed in the background after the host started,
so a host pulls turns at once instead of seconds after its process began (a turn that retrieves while the tables
are still opening waits for them, see :data:`salon.actors.prompt.RETRIEVER_OPEN_WAIT_S`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

from salon.storage.embedding import MODEL_DIM, MODEL_ID, CoalescingEmbedder, Embedder, HashEmbedder, build_embedder
from salon.storage.errors import Unavailable
from salon.storage.retrieval import Passage, RetrievalQuery, Retriever

_T = TypeVar("_T")

log = logging.getLogger(__name__)


class _Once(Generic[_T]):
    """One value made by one coroutine, at most once at a time: callers share the attempt in progress, and a
    failed or abandoned attempt is made again by the next caller. Warming starts it in an owned task."""

    def __init__(self, make: Callable[[], Awaitable[_T]], what: str) -> None:
        self._make = make
        self._what = what
        self.value: _T | None = None
        self._pending: asyncio.Future[_T] | None = None
        self._warming: asyncio.Task[None] | None = None

    async def get(self) -> _T:
        if self.value is not None:
            return self.value
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._run())
        pending = self._pending
        try:
            # Shielded: a caller giving up (its turn cancelled) does not stop the attempt others wait for.
            return await asyncio.shield(pending)
        finally:
            failed = pending.done() and (pending.cancelled() or pending.exception() is not None)
            if failed and self._pending is pending:
                self._pending = None

    async def _run(self) -> _T:
        value = await self._make()
        self.value = value
        return value

    def warm(self) -> None:
        if self.value is None and self._warming is None:
            self._warming = asyncio.get_running_loop().create_task(self._warm(), name=f"salon-warm-{self._what}")

    async def _warm(self) -> None:
        try:
            await self.get()
        except Exception as exc:
            log.warning("preparing %s failed (%s); its first use tries again", self._what, type(exc).__name__)

    async def close(self) -> None:
        """Stop a warm-up and an attempt in progress. Idempotent.

        The attempt is cancelled, not waited for: a background import can take many seconds on
        a busy machine, and a host's close would wait that long for something it is about to drop. (An import
        already running in its thread finishes there; nothing is opened with it.)"""
        task, self._warming = self._warming, None
        pending, self._pending = self._pending, None
        stopping = {f for f in (task, pending) if f is not None and not f.done()}
        for future in stopping:
            future.cancel()
        if stopping:
            # asyncio.wait, not awaiting each under a suppress: a cancellation of close() itself still propagates.
            await asyncio.wait(stopping)
        if pending is not None and not pending.cancelled():
            pending.exception()  # retrieved: a failed attempt was already reported to whoever waited for it


class LazyEmbedder:
    """The :class:`~salon.storage.embedding.Embedder` named by the ``embedding_model`` setting, loaded on first use.

    ``hash`` (for tests) is built at once: it has no model. Lifecycle: :meth:`close` stops a warm-up still
    running (idempotent); the model itself is shared by the process and never unloaded.
    """

    def __init__(self, kind: str, *, build: Callable[[str], Embedder] = build_embedder) -> None:
        self._kind = kind
        self._build = build
        self._model = _Once(self._load, "the embedding model")
        if kind == "hash":
            self._model.value = HashEmbedder()
        self.dim: int = self._model.value.dim if self._model.value is not None else MODEL_DIM
        self.model_id: str = self._model.value.model_id if self._model.value is not None else MODEL_ID
        self.load_s = 0.0
        """How long loading the model took (0 until it is loaded; for benchmarks and logs)."""
        self._coalescing: CoalescingEmbedder | None = None
        """The loaded model behind one queue: concurrent calls (a host's turns) share its inferences."""

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model.value is not None

    @property
    def count_tokens(self) -> Callable[[str], int] | None:
        """The loaded model's own count of word pieces (None before :meth:`load`, or for a model without a
        tokenizer: callers then estimate)."""
        inner = self._model.value
        return getattr(inner, "count_tokens", None) if inner is not None else None

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order (the first call loads the model)."""
        if self._coalescing is None:
            inner = self._model.value or await self._model.get()
            if self._coalescing is None:
                self._coalescing = CoalescingEmbedder(inner)
        return await self._coalescing.embed(texts)

    async def load(self) -> Embedder:
        """The loaded embedder, loading it now (off the event loop) unless it is loaded or loading. Raises
        :class:`~salon.storage.embedding.EmbeddingUnavailable` when the model cannot be loaded (a later call
        tries again)."""
        return await self._model.get()

    async def _load(self) -> Embedder:
        started = time.perf_counter()
        inner = await asyncio.to_thread(self._build, self._kind)
        self.load_s = time.perf_counter() - started
        log.debug("embedding model loaded in %.2f s", self.load_s)
        return inner

    def warm(self) -> None:
        """Start loading the model in the background (idempotent; a failure is logged, and the first use then
        tries again)."""
        self._model.warm()

    async def close(self) -> None:
        """Stop a warm-up still running, and cancel the calls still queued for the model. Idempotent."""
        await self._model.close()
        if self._coalescing is not None:
            await self._coalescing.close()


class LazyRetriever:
    """A :class:`~salon.storage.retrieval.Retriever` over LanceDB at ``uri`` that imports LanceDB and opens its
    tables on the first query (or on :meth:`warm`); its embedder loads on the first query that needs a vector.

    Lifecycle: :meth:`close` (idempotent) stops a warm-up and closes what was opened."""

    def __init__(self, uri: str, embedder: LazyEmbedder, *, storage_options: Mapping[str, str] | None = None) -> None:
        self._uri = uri
        self._storage_options = dict(storage_options or {})
        self.embedder = embedder
        self._retriever = _Once(self._open, "the retrieval tables")
        self._closed = False

    @property
    def opened(self) -> bool:
        """Whether LanceDB is imported and the tables open."""
        return self._retriever.value is not None

    @property
    def count_tokens(self) -> Callable[[str], int] | None:
        """The embedding model's count of word pieces once it is loaded (None before): what a prompt's passage
        budget is counted in."""
        return self.embedder.count_tokens

    async def _open(self) -> Retriever:
        # Imported off the event loop: LanceDB and Arrow take about a second to import. (Not at a lower thread
        # priority, as it once was: measured, that did not speed the engine's start, and a starved thread holding
        # the GIL mid-import can hold up the event loop that serves the host's turns.)
        module = await asyncio.to_thread(importlib.import_module, "salon.storage.lance.retrieval")
        retriever: Retriever = await module.LanceRetriever.open(
            self._uri, self.embedder, storage_options=self._storage_options
        )
        if self._closed:
            await _close(retriever)
            raise Unavailable("the retriever is closed", reason="STORE_CLOSED")
        return retriever

    async def retrieve(self, query: RetrievalQuery) -> list[Passage]:
        """See :meth:`salon.storage.retrieval.Retriever.retrieve` (the first call opens the tables). The first
        query also starts loading the embedding model in the background: a host that runs turns soon retrieves
        past a session's window, and that turn should not wait for the model."""
        if self._closed:
            raise Unavailable("the retriever is closed", reason="STORE_CLOSED")
        self.embedder.warm()
        retriever = await self._retriever.get()
        return await retriever.retrieve(query)

    async def ready(self) -> None:
        """Open the tables now, or wait for the opening in progress."""
        if self._closed:
            raise Unavailable("the retriever is closed", reason="STORE_CLOSED")
        await self._retriever.get()

    def warm(self, *, embedder: bool = False) -> None:
        """Open the tables in the background now (and load the embedding model too, with ``embedder``)."""
        if not self._closed:
            self._retriever.warm()
            if embedder:
                self.embedder.warm()

    async def close(self) -> None:
        """Stop warming, close the tables. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._retriever.close()
        await self.embedder.close()
        if self._retriever.value is not None:
            await _close(self._retriever.value)


async def _close(retriever: Retriever) -> None:
    close = getattr(retriever, "close", None)
    if close is not None:
        await close()
