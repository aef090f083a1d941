"""The knowledge base: each tenant's documents, chunked, embedded and searchable, in the LanceDB table
``knowledge``."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

from storage.embedding import Embedder
from storage.retrieval import Passage

MAX_DOCUMENT_BYTES: Final = 1 << 20
CHUNK_TOKENS: Final = 200
OVERLAP_TOKENS: Final = 40
MEDIA_TYPES: Final = frozenset({"text/plain", "text/markdown"})


@dataclass(frozen=True, slots=True)
class Document:
    """A document to ingest. ``media_type``: ``text/plain`` or ``text/markdown``."""

    document_id: str
    text: str
    title: str = ""
    media_type: str = "text/plain"


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of one document: its chunk count, or why it was refused (``error_*`` empty on success).

    ``error_message`` is for people and never echoes the document's content.
    """

    document_id: str
    chunks: int = 0
    error_reason: str = ""
    error_message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the document was stored."""
        return not self.error_reason


class KnowledgeBase:
    """Documents of every tenant in LanceDB. Create with :meth:`open`."""

    @classmethod
    async def open(
        cls,
        uri: str,
        embedder: Embedder,
        *,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
        chunk_tokens: int = CHUNK_TOKENS,
        overlap_tokens: int = OVERLAP_TOKENS,
    ) -> KnowledgeBase:
        """Connect to the LanceDB at ``uri``, creating the ``knowledge`` table if missing."""
        raise NotImplementedError

    def ingest(self, tenant_id: str, documents: AsyncIterable[Document]) -> AsyncIterator[IngestResult]:
        """Chunk, embed and store ``documents``; one result per document, in order, as each is stored.

        Re-ingesting a document id replaces the document. A bad document (empty, too big, unsupported media
        type, bad id) gets an error result and does not stop the others.
        """
        raise NotImplementedError

    async def delete(self, tenant_id: str, document_ids: Sequence[str]) -> int:
        """Delete the tenant's documents among ``document_ids``; returns how many existed."""
        raise NotImplementedError

    async def search(self, tenant_id: str, text: str, *, top_k: int = 4, min_score: float = 0.0) -> list[Passage]:
        """The tenant's chunks most relevant to ``text`` (hybrid search, see :mod:`storage.retrieval`)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release the table and the connection. Idempotent."""
        raise NotImplementedError
