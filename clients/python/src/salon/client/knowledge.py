"""The knowledge base from the client side: documents to ingest, and the calls' results."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass

from salon.v1 import knowledge_service_pb2 as ks_pb2

__all__ = ["DOCX", "MEDIA_TYPES", "Document", "IngestProgress", "request_stream"]

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MEDIA_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": DOCX,
}
"""The media type of a file by its suffix, for the types the knowledge base reads."""


@dataclass(frozen=True, slots=True)
class Document:
    """A document to ingest. ``document_id``: 1 to 64 characters of ``[A-Za-z0-9_-]`` (ingesting the same id
    again replaces the document); ``media_type``: ``text/plain``, ``text/markdown``, ``text/html``,
    ``application/pdf`` or DOCX (:data:`DOCX`); a PDF or DOCX comes as ``content`` bytes (``text`` empty).
    ``collection``: the knowledge base within the tenant it belongs to (searches and sessions can be limited
    to collections)."""

    document_id: str
    text: str = ""
    title: str = ""
    media_type: str = "text/plain"
    collection: str = ""
    content: bytes = b""

    def to_proto(self) -> ks_pb2.Document:
        """The ``salon.v1.Document`` message."""
        return ks_pb2.Document(
            document_id=self.document_id,
            text=self.text,
            title=self.title,
            media_type=self.media_type,
            collection=self.collection,
            content=self.content,
        )


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """One message of an ingestion's answer: a document's ``result`` (with the running counts), or, last, the
    ``summary`` of the whole stream (its ``failures`` say which documents failed and why)."""

    result: ks_pb2.DocumentResult | None = None
    summary: ks_pb2.IngestSummary | None = None

    @classmethod
    def from_proto(cls, response: ks_pb2.IngestDocumentsResponse) -> IngestProgress:
        """Wrap a response message."""
        if response.HasField("summary"):
            return cls(summary=response.summary)
        return cls(result=response.result)

    @property
    def ok(self) -> bool:
        """For a result: whether the document was stored; for the summary: whether every document was."""
        if self.summary is not None:
            return self.summary.failed == 0
        return self.result is not None and self.result.code == 0


async def request_stream(
    documents: Iterable[Document] | AsyncIterable[Document], *, batch: int = 8
) -> AsyncIterator[ks_pb2.IngestDocumentsRequest]:
    """``documents`` as request messages of up to ``batch`` documents each."""
    pending: list[ks_pb2.Document] = []
    if isinstance(documents, AsyncIterable):
        async for doc in documents:
            pending.append(doc.to_proto())
            if len(pending) >= batch:
                yield ks_pb2.IngestDocumentsRequest(documents=pending)
                pending = []
    else:
        for doc in documents:
            pending.append(doc.to_proto())
            if len(pending) >= batch:
                yield ks_pb2.IngestDocumentsRequest(documents=pending)
                pending = []
    if pending:
        yield ks_pb2.IngestDocumentsRequest(documents=pending)
