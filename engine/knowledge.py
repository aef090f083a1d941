"""The knowledge base as the API offers it: ingestion with per-document outcomes and progress, deletion and
search, for one tenant at a time (the caller's). The gRPC servicer (``engine.knowledge_servicer``) is a thin
adapter over :class:`Knowledge`; chunking, embedding and storage are ``storage.lance.knowledge.KnowledgeBase``'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

import grpc

from salon.engine.validation import check_text
from salon.storage import Document, InvalidArgument, Passage, is_valid_id
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.reasons import Reason
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import turn_pb2

MAX_SEARCH_TOP_K = 50
DEFAULT_SEARCH_TOP_K = 4
MAX_DELETE_IDS = 1000

_OK = grpc.StatusCode.OK.value[0]
_INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def citation_of(passage: Passage) -> turn_pb2.Citation:
    """A passage's citation (what names it, without its text)."""
    return turn_pb2.Citation(
        source=passage.source,
        document_id=passage.document_id,
        chunk_id=passage.chunk_id,
        score=passage.score,
        table_version=passage.table_version,
        title=passage.title,
    )


@dataclass(slots=True)
class _Progress:
    documents: int = 0
    failed: int = 0
    chunks: int = 0
    failures: list[ks_pb2.DocumentResult] = field(default_factory=list)


class Knowledge:
    """Ingest, delete and search one tenant's documents."""

    def __init__(self, base: KnowledgeBase, *, max_text_bytes: int) -> None:
        self._base = base
        self._max_text_bytes = max_text_bytes

    async def ingest(
        self, tenant_id: str, requests: AsyncIterable[ks_pb2.IngestDocumentsRequest]
    ) -> AsyncIterator[ks_pb2.IngestDocumentsResponse]:
        """One result per document, in the order sent, as each is stored; then the summary.

        A bad document gets its own status (INVALID_ARGUMENT and a reason) and the others go on; a problem
        with the whole request (the tenant) raises instead."""
        progress = _Progress()

        async def documents() -> AsyncIterator[Document]:
            async for request in requests:
                for doc in request.documents:
                    yield Document(
                        document_id=doc.document_id,
                        text=doc.text,
                        title=doc.title,
                        media_type=doc.media_type or "text/plain",
                    )

        async for result in self._base.ingest(tenant_id, documents()):
            index = progress.documents
            progress.documents += 1
            ok = not result.error_reason
            if ok:
                progress.chunks += result.chunks
            else:
                progress.failed += 1
            outcome = ks_pb2.DocumentResult(
                index=index,
                # An invalid id is input that failed validation: it is not echoed.
                document_id=result.document_id if is_valid_id(result.document_id) else "",
                code=_OK if ok else _INVALID,
                reason=result.error_reason,
                message=result.error_message,
                chunks=result.chunks if ok else 0,
                documents_done=progress.documents,
                documents_failed=progress.failed,
                chunks_done=progress.chunks,
            )
            if not ok:
                progress.failures.append(outcome)
            yield ks_pb2.IngestDocumentsResponse(result=outcome)
        yield ks_pb2.IngestDocumentsResponse(
            summary=ks_pb2.IngestSummary(
                documents=progress.documents,
                succeeded=progress.documents - progress.failed,
                failed=progress.failed,
                chunks=progress.chunks,
                failures=progress.failures,
            )
        )

    async def delete(self, tenant_id: str, request: ks_pb2.DeleteDocumentsRequest) -> int:
        """Delete the tenant's documents named in ``request``; how many existed."""
        ids = list(request.document_ids)
        if not ids:
            raise InvalidArgument("document_ids must not be empty", reason=Reason.NO_DOCUMENT_IDS)
        if len(ids) > MAX_DELETE_IDS:
            raise InvalidArgument(
                f"at most {MAX_DELETE_IDS} document_ids per request", reason=Reason.TOO_MANY_DOCUMENT_IDS
            )
        if not all(is_valid_id(i) for i in ids):
            raise InvalidArgument(
                "document_ids must be 1 to 64 characters of letters, digits, '_' or '-'",
                reason=Reason.INVALID_DOCUMENT_ID,
            )
        return await self._base.delete(tenant_id, ids)

    async def search(self, tenant_id: str, request: ks_pb2.SearchRequest) -> list[ks_pb2.SearchHit]:
        """The tenant's passages most relevant to the request's text."""
        check_text(request.text, self._max_text_bytes)
        if request.top_k > MAX_SEARCH_TOP_K:
            raise InvalidArgument(f"top_k must be at most {MAX_SEARCH_TOP_K}", reason=Reason.TOP_K_TOO_LARGE)
        if not request.min_score >= 0:
            raise InvalidArgument("min_score must not be negative", reason=Reason.BAD_MIN_SCORE)
        passages = await self._base.search(
            tenant_id, request.text, top_k=request.top_k or DEFAULT_SEARCH_TOP_K, min_score=request.min_score
        )
        return [ks_pb2.SearchHit(citation=citation_of(p), text=p.text) for p in passages]
