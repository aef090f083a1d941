"""The gRPC face of :class:`~salon.engine.knowledge.Knowledge`: request in, status or results out. No logic here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

from salon.engine.knowledge import Knowledge
from salon.engine.status import error_boundary
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import knowledge_service_pb2_grpc as ks_grpc

# grpc ships no type information; the servicer context is typed loosely on purpose.
Context: TypeAlias = Any


class KnowledgeServicer(ks_grpc.KnowledgeServiceServicer):
    """``salon.v1.KnowledgeService`` over :class:`Knowledge`.

    ``tenant_of`` names the caller's tenant from the call's context: the conversation servicer's own, so
    authentication added there covers both services."""

    def __init__(self, knowledge: Knowledge, tenant_of: Callable[[Context], str]) -> None:
        self._knowledge = knowledge
        self._tenant_of = tenant_of

    @error_boundary
    async def IngestDocuments(
        self, request_iterator: AsyncIterator[ks_pb2.IngestDocumentsRequest], context: Context
    ) -> AsyncIterator[ks_pb2.IngestDocumentsResponse]:
        tenant = self._tenant_of(context)
        async for response in self._knowledge.ingest(tenant, request_iterator):
            yield response

    @error_boundary
    async def DeleteDocuments(self, request: ks_pb2.DeleteDocumentsRequest, context: Context) -> Any:
        deleted = await self._knowledge.delete(self._tenant_of(context), request)
        return ks_pb2.DeleteDocumentsResponse(deleted=deleted)

    @error_boundary
    async def Search(self, request: ks_pb2.SearchRequest, context: Context) -> Any:
        hits = await self._knowledge.search(self._tenant_of(context), request)
        return ks_pb2.SearchResponse(hits=hits)

    @error_boundary
    async def SearchMemory(self, request: ks_pb2.SearchMemoryRequest, context: Context) -> Any:
        hits = await self._knowledge.search_memory(self._tenant_of(context), request)
        return ks_pb2.SearchMemoryResponse(hits=hits)
