"""The knowledge base: each tenant's documents, chunked, embedded and searchable, in the LanceDB table
``knowledge``.

Ingestion reads documents as they arrive and works in batches: the documents already waiting (up to
:data:`BATCH_DOCUMENTS`, or until :data:`BATCH_CHUNKS` chunks) are chunked, embedded together and written
in one ``merge_insert`` that also deletes the chunks those documents had before. Replacing a document is
thus one transaction: a search sees the old chunks or the new ones, never both and never none. While a
batch is embedded, the next documents are already being received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, cast

from lancedb.db import AsyncConnection
from lancedb.table import AsyncTable

from salon.storage.chunking import Chunk, chunk_text
from salon.storage.documents import BINARY_TYPES, MEDIA_TYPES, UnreadableDocument, convert
from salon.storage.embedding import Embedder
from salon.storage.errors import InvalidArgument, Unavailable
from salon.storage.ids import is_valid_id, require_id
from salon.storage.knowledge import (
    DOCUMENT_TOO_LARGE,
    EMPTY_DOCUMENT,
    INVALID_COLLECTION,
    INVALID_DOCUMENT_ID,
    TITLE_TOO_LONG,
    UNREADABLE_DOCUMENT,
    UNSUPPORTED_MEDIA_TYPE,
    Document,
    IngestResult,
)
from salon.storage.lance.connection import connect, retry_conflicts
from salon.storage.lance.reembed import check_model
from salon.storage.lance.retrieval import SearchTarget, candidate_limit, hybrid_search, knowledge_filter
from salon.storage.lance.schemas import CHUNK_KEY, knowledge_schema, rows_to_batch
from salon.storage.lance.vector_index import VECTOR_INDEX_MIN_ROWS, SearchPlanner, VectorIndexer
from salon.storage.reasons import Reason
from salon.storage.retrieval import KNOWLEDGE, Passage, fuse, select
from salon.storage.tables import (
    UNREADABLE,
    UNWRITABLE,
    create_missing_indexes,
    has_indexes,
    knowledge_spec,
    open_table,
    store_errors,
)

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES: Final = 1 << 20
CHUNK_TOKENS: Final = 200
"""Word pieces of the embedding model (counted with its tokenizer; characters / 4 for an embedder without
one): within the model's 256, with room for the title that is embedded with each chunk."""
OVERLAP_TOKENS: Final = 40
MAX_TITLE_CHARS: Final = 512
CONVERTED_BYTES_FACTOR: Final = 4
"""A converted document (PDF, DOCX, HTML) may hold at most this many times ``max_document_bytes`` of text: a
compressed file can expand far beyond its size."""
BATCH_DOCUMENTS: Final = 16
BATCH_CHUNKS: Final = 256
OPTIMIZE_MIN_INTERVAL_S: Final = 10.0
"""An ingestion that wrote rows ends with ``optimize()`` (compaction of its small fragments, new rows into
the indexes), unless one ran less than this long ago. Every batch write leaves a fragment and every search
pays for each fragment and each unindexed row: measured on a 400-chunk table left in 7 fragments, a vector
search took 3.9 ms before and 2.5 ms after optimize() (which took 30 ms)."""


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A valid document, chunked: chunk texts, their titles and what is embedded of each."""

    document: Document
    media_type: str
    texts: list[str]
    titles: list[str]


_END: Final = object()


class KnowledgeBase:
    """Documents of every tenant in LanceDB; every call is scoped to one tenant. Create with :meth:`open`."""

    def __init__(
        self,
        db: AsyncConnection,
        table: AsyncTable,
        embedder: Embedder,
        *,
        max_document_bytes: int,
        chunk_tokens: int,
        overlap_tokens: int,
        indexed: bool,
        keep_versions_s: float,
        vector_index_min_rows: int = VECTOR_INDEX_MIN_ROWS,
    ) -> None:
        self._db = db
        self._table = table
        self._embedder = embedder
        self._spec = knowledge_spec(embedder.dim)
        self._max_document_bytes = max_document_bytes
        self._chunk_tokens = chunk_tokens
        self._overlap_tokens = overlap_tokens
        self._indexed = indexed
        self._keep_versions = timedelta(seconds=keep_versions_s)
        self._maintenance_lock = asyncio.Lock()
        self._last_optimize = -OPTIMIZE_MIN_INTERVAL_S
        self.vector_index = VectorIndexer(table, "knowledge", min_rows=vector_index_min_rows)
        self._plan = SearchPlanner(table)
        """Builds the table's ANN index once it is large (see :mod:`salon.storage.lance.vector_index`)."""
        self._closed = False

    @classmethod
    async def open(
        cls,
        uri: str,
        embedder: Embedder,
        *,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
        chunk_tokens: int = CHUNK_TOKENS,
        overlap_tokens: int = OVERLAP_TOKENS,
        read_consistency_s: float | None = 0.0,
        keep_versions_s: float = 3600.0,
        storage_options: Mapping[str, str] | None = None,
        vector_index_min_rows: int = VECTOR_INDEX_MIN_ROWS,
    ) -> KnowledgeBase:
        """Connect to the LanceDB at ``uri`` (a directory or an object store with its ``storage_options``),
        creating the ``knowledge`` table if missing.

        ``max_document_bytes``: largest document accepted (UTF-8 bytes); ``chunk_tokens`` and
        ``overlap_tokens``: chunk size and overlap (estimated tokens, see :mod:`salon.storage.chunking`).
        ``vector_index_min_rows``: rows past which the table gets its ANN index, built in the background after
        an ingestion (0: never).
        """
        if max_document_bytes < 1 or chunk_tokens < 1 or not 0 <= overlap_tokens < chunk_tokens:
            raise ValueError("max_document_bytes >= 1, chunk_tokens >= 1 and 0 <= overlap_tokens < chunk_tokens")
        with store_errors("cannot open the knowledge base", UNWRITABLE):
            db = await connect(uri, storage_options=storage_options, read_consistency_s=read_consistency_s)
        try:
            spec = knowledge_spec(embedder.dim)
            with store_errors("cannot open the knowledge base", UNWRITABLE):
                table = await open_table(db, spec)
            await check_model(table, "knowledge", embedder)
            indexed = await has_indexes(table, spec)
        except BaseException:
            db.close()  # type: ignore[no-untyped-call]  # lancedb leaves close() unannotated
            raise
        return cls(
            db,
            table,
            embedder,
            max_document_bytes=max_document_bytes,
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap_tokens,
            indexed=indexed,
            keep_versions_s=keep_versions_s,
            vector_index_min_rows=vector_index_min_rows,
        )

    async def ingest(self, tenant_id: str, documents: AsyncIterable[Document]) -> AsyncIterator[IngestResult]:
        """Chunk, embed and store ``documents``; one result per document, in order, as each batch is stored.

        Re-ingesting a document id replaces the document (atomically). A bad document (bad id, empty, too
        big, unsupported media type, title too long) gets an error result and does not stop the others.
        Raises :class:`InvalidArgument` for a bad tenant id and :class:`Unavailable` if LanceDB fails (the
        documents of earlier results are stored; the rest are not).
        """
        self._check_open()
        tenant = require_id(tenant_id, "tenant_id")
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=BATCH_DOCUMENTS)
        reader = asyncio.create_task(_read_into(documents, queue), name="salon-ingest-reader")
        written = False
        try:
            carry: object = None
            while True:
                first = carry if carry is not None else await queue.get()
                carry = None
                if first is _END:
                    break
                if isinstance(first, BaseException):
                    raise first
                batch, carry = _take_batch(cast(Document, first), queue)
                results, rows = await self._ingest_batch(tenant, batch)
                written = written or rows > 0
                for result in results:
                    yield result
                if carry is _END:
                    break
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if written:
                await self._after_write()

    async def delete(self, tenant_id: str, document_ids: Sequence[str]) -> int:
        """Delete the tenant's documents among ``document_ids``; returns how many of them existed."""
        self._check_open()
        ids = sorted({require_id(d, "document_id") for d in document_ids})
        if not ids:
            return 0
        quoted = ", ".join(f"'{d}'" for d in ids)
        where = f"{knowledge_filter(tenant_id)} AND document_id IN ({quoted})"
        with store_errors("cannot read the knowledge base", UNREADABLE):
            rows = await self._table.query().where(where).select(["document_id"]).to_arrow()
        existed = len(set(rows.column("document_id").to_pylist()))
        if existed:
            with store_errors("cannot delete from the knowledge base", UNWRITABLE):
                await retry_conflicts(lambda: self._table.delete(where), what="deleting documents")
        return existed

    async def search(
        self,
        tenant_id: str,
        text: str,
        *,
        top_k: int = 4,
        min_score: float = 0.0,
        collections: Sequence[str] = (),
        document_ids: Sequence[str] = (),
    ) -> list[Passage]:
        """The tenant's chunks most relevant to ``text``, best first (hybrid search, see
        :mod:`salon.storage.retrieval`); at most ``top_k``, none below ``min_score``; only of ``collections``
        and of ``document_ids`` when given."""
        self._check_open()
        where = knowledge_filter(tenant_id, collections=collections, document_ids=document_ids)
        if top_k <= 0:
            return []
        with store_errors("cannot read the knowledge base", UNREADABLE):
            exact = await self._plan.exact(where)
        target = SearchTarget(self._table, KNOWLEDGE, where, exact)
        (candidates,) = await hybrid_search([target], text, self._embedder.embed([text]), limit=candidate_limit(top_k))
        return select(fuse(candidates, query_text=text), top_k=top_k, min_score=min_score)

    async def count_chunks(self, tenant_id: str, document_id: str | None = None) -> int:
        """How many chunks the tenant has stored (of ``document_id`` if given)."""
        self._check_open()
        where = knowledge_filter(tenant_id)
        if document_id is not None:
            where += f" AND document_id = '{require_id(document_id, 'document_id')}'"
        with store_errors("cannot read the knowledge base", UNREADABLE):
            return await self._table.count_rows(where)

    async def optimize(self) -> None:
        """Compact the table and fold rows written since the last call into the indexes."""
        self._check_open()
        async with self._maintenance_lock:
            with store_errors("cannot optimize the knowledge base", UNWRITABLE):
                await retry_conflicts(
                    lambda: self._table.optimize(cleanup_older_than=self._keep_versions), what="optimizing knowledge"
                )
            self._last_optimize = time.monotonic()

    async def close(self) -> None:
        """Release the table and the connection; later calls raise :class:`Unavailable`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.vector_index.close()
        self._table.close()  # type: ignore[no-untyped-call]  # lancedb leaves close() unannotated
        self._db.close()  # type: ignore[no-untyped-call]

    async def _ingest_batch(self, tenant: str, batch: list[Document]) -> tuple[list[IngestResult], int]:
        """Store the valid documents of ``batch`` in one write; the results of all of them, in order."""
        load = getattr(self._embedder, "load", None)
        if load is not None:
            # A model loaded on first use: loaded now, so chunks are counted with its own tokenizer.
            await load()
        prepared = await asyncio.to_thread(lambda: [self._prepare(d) for d in batch])
        good = [p for p in prepared if isinstance(p, _Prepared)]
        rows = 0
        if good:
            texts = [t for p in good for t in _embedded_texts(p)]
            vectors = await self._embedder.embed(texts)
            rows = len(texts)
            await self._replace(tenant, good, vectors)
        results = [
            p if isinstance(p, IngestResult) else IngestResult(p.document.document_id, chunks=len(p.texts))
            for p in prepared
        ]
        return results, rows

    def _refusal(self, document: Document, media_type: str) -> IngestResult | None:
        """Why ``document`` is refused before it is read, or None."""
        doc_id = document.document_id
        if not is_valid_id(doc_id):
            return _refused(doc_id, INVALID_DOCUMENT_ID, "document ids are 1 to 64 letters, digits, '_' or '-'")
        if media_type not in MEDIA_TYPES:
            return _refused(doc_id, UNSUPPORTED_MEDIA_TYPE, f"media type must be one of {sorted(MEDIA_TYPES)}")
        if document.collection and not is_valid_id(document.collection):
            return _refused(doc_id, INVALID_COLLECTION, "a collection is 1 to 64 letters, digits, '_' or '-'")
        if len(document.title) > MAX_TITLE_CHARS:
            return _refused(doc_id, TITLE_TOO_LONG, f"the title is longer than {MAX_TITLE_CHARS} characters")
        if document.text and document.content:
            return _refused(doc_id, UNREADABLE_DOCUMENT, "a document has text or content, not both")
        if media_type in BINARY_TYPES and document.text:
            return _refused(doc_id, UNREADABLE_DOCUMENT, "PDF and DOCX documents come as content (bytes), not text")
        size = len(document.content) or len(document.text.encode("utf-8", errors="replace"))
        if size > self._max_document_bytes:
            return _refused(
                doc_id, DOCUMENT_TOO_LARGE, f"the document has {size} bytes; at most {self._max_document_bytes}"
            )
        return None

    def _prepare(self, document: Document) -> _Prepared | IngestResult:
        """The document converted and chunked, or the result that refuses it (messages never quote the
        content)."""
        doc_id = document.document_id
        media_type = _media_type(document.media_type)
        refused = self._refusal(document, media_type)
        if refused is not None:
            return refused
        try:
            sections = convert(media_type, document.text, document.content)
        except UnreadableDocument as exc:
            return _refused(doc_id, UNREADABLE_DOCUMENT, str(exc))
        converted = sum(len(s.text) for s in sections)
        if converted > CONVERTED_BYTES_FACTOR * self._max_document_bytes:
            return _refused(doc_id, DOCUMENT_TOO_LARGE, "the document's text is too large once converted")
        chunks: list[tuple[str, Chunk]] = []
        for section in sections:
            pieces = chunk_text(
                section.text,
                markdown=section.markdown,
                chunk_tokens=self._chunk_tokens,
                overlap_tokens=self._overlap_tokens,
                # The model's own tokenizer where it has one: no chunk is then cut at the model's input limit.
                count_tokens=getattr(self._embedder, "count_tokens", None),
            )
            chunks.extend((section.location, c) for c in pieces)
        if not chunks:
            return _refused(doc_id, EMPTY_DOCUMENT, "the document has no text")
        # The title names where the chunk is: document title, page (PDF), heading path; citations carry it.
        titles = [" / ".join(t for t in (document.title.strip(), where, c.heading) if t) for where, c in chunks]
        return _Prepared(document, media_type, [c.text for _, c in chunks], titles)

    async def _replace(self, tenant: str, docs: list[_Prepared], vectors: list[list[float]]) -> None:
        """Write the chunks of ``docs`` and delete every other chunk of those documents, in one commit."""
        keys: list[str] = []
        columns: dict[str, list[object]] = {
            name: []
            for name in (
                "tenant_id",
                "document_id",
                "chunk_id",
                "chunk_index",
                "title",
                "media_type",
                "text",
                "model_id",
                "collection",
            )
        }
        for p in docs:
            for index, (text, title) in enumerate(zip(p.texts, p.titles, strict=True)):
                chunk_id = f"{p.document.document_id}#{index}"
                keys.append(f"{tenant}.{chunk_id}")
                for name, value in (
                    ("tenant_id", tenant),
                    ("document_id", p.document.document_id),
                    ("chunk_id", chunk_id),
                    ("chunk_index", index),
                    ("title", title),
                    ("media_type", p.media_type),
                    ("text", text),
                    ("model_id", self._embedder.model_id),
                    ("collection", p.document.collection),
                ):
                    columns[name].append(value)
        now = time.time_ns()
        rows = rows_to_batch(
            knowledge_schema(self._embedder.dim),
            {CHUNK_KEY: keys, **columns, "vector": vectors, "ingested_at_ns": [now] * len(keys)},
        )
        ids = ", ".join(f"'{p.document.document_id}'" for p in docs)
        stale = f"{knowledge_filter(tenant)} AND document_id IN ({ids})"

        def replace() -> Awaitable[object]:
            builder = (
                self._table.merge_insert(CHUNK_KEY)
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(stale)
            )
            # On an AsyncTable, execute() returns a coroutine, though it is annotated as returning the result.
            return cast(Awaitable[object], builder.execute(rows))

        with store_errors("cannot write to the knowledge base", UNWRITABLE):
            await retry_conflicts(replace, what="ingesting documents")

    async def _after_write(self) -> None:
        """Create the indexes after the first write, else optimize (at most every
        :data:`OPTIMIZE_MIN_INTERVAL_S`). Never raises: the documents are stored, and searches are correct
        without this, only slower."""
        try:
            if not self._indexed:
                async with self._maintenance_lock:
                    self._indexed = await create_missing_indexes(self._table, self._spec)
            elif time.monotonic() - self._last_optimize >= OPTIMIZE_MIN_INTERVAL_S:
                await self.optimize()
            self.vector_index.check()
        except (Unavailable, InvalidArgument) as exc:
            log.warning("maintaining the knowledge base failed: %s", exc.reason)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the knowledge base is closed", reason=Reason.STORE_CLOSED)


async def _read_into(documents: AsyncIterable[Document], queue: asyncio.Queue[object]) -> None:
    """Put each document into ``queue``, then the end marker (or the source's exception)."""
    try:
        async for document in documents:
            await queue.put(document)
    except Exception as exc:
        await queue.put(exc)
        return
    await queue.put(_END)


def _take_batch(first: Document, queue: asyncio.Queue[object]) -> tuple[list[Document], object]:
    """``first`` and the documents already waiting, up to a batch; also what was taken but belongs to the
    next batch (a repeated document id, the end marker or an error), or None."""
    batch = [first]
    ids = {first.document_id}
    chunks = _estimated_chunks(first)
    while len(batch) < BATCH_DOCUMENTS and chunks < BATCH_CHUNKS:
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            return batch, None
        # A document given twice in one stream is written twice, in order: the later replaces the earlier.
        if not isinstance(item, Document) or item.document_id in ids:
            return batch, item
        batch.append(item)
        ids.add(item.document_id)
        chunks += _estimated_chunks(item)
    return batch, None


def _estimated_chunks(document: Document) -> int:
    return 1 + (len(document.text) or len(document.content)) // (CHUNK_TOKENS * 4)


def _embedded_texts(p: _Prepared) -> list[str]:
    # The title (document title and heading path) is embedded with the chunk: it often says what the
    # chunk is about when the chunk itself does not.
    return [f"{title}\n{text}" if title else text for title, text in zip(p.titles, p.texts, strict=True)]


def _media_type(value: str) -> str:
    """The media type without parameters (``; charset=utf-8``), lower-cased; empty means plain text."""
    base = value.split(";", 1)[0].strip().lower()
    return base or "text/plain"


def _refused(document_id: str, reason: str, message: str) -> IngestResult:
    # An invalid id is returned cut short: the result's position in the stream identifies the document.
    return IngestResult(document_id[:128], error_reason=reason, error_message=message)
