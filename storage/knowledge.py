"""The knowledge base's records: a document to ingest, what became of it, and the stable reasons a document
is refused. The knowledge base itself (chunking, embedding, LanceDB) is :mod:`salon.storage.lance.knowledge`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from salon.storage.reasons import Reason

INVALID_DOCUMENT_ID: Final = Reason.INVALID_DOCUMENT_ID
EMPTY_DOCUMENT: Final = Reason.EMPTY_DOCUMENT
DOCUMENT_TOO_LARGE: Final = Reason.DOCUMENT_TOO_LARGE
UNSUPPORTED_MEDIA_TYPE: Final = Reason.UNSUPPORTED_MEDIA_TYPE
TITLE_TOO_LONG: Final = Reason.TITLE_TOO_LONG
UNREADABLE_DOCUMENT: Final = Reason.UNREADABLE_DOCUMENT
INVALID_COLLECTION: Final = Reason.INVALID_COLLECTION


@dataclass(frozen=True, slots=True)
class Document:
    """A document to ingest. ``media_type``: one of :data:`salon.storage.documents.MEDIA_TYPES` (empty: plain
    text); the content is ``text`` or, for a binary type (PDF, DOCX) and optionally for the others, ``content``.
    ``collection``: the knowledge base within the tenant it belongs to (empty: none)."""

    document_id: str
    text: str
    title: str = ""
    media_type: str = "text/plain"
    collection: str = ""
    content: bytes = b""


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
