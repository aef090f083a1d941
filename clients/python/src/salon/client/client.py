"""The async client: sessions as objects, turns as async iterators of events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from salon.client.approvals import ApprovalHandler
from salon.client.converse import Conversation, ConverseTurn
from salon.client.errors import SalonError
from salon.client.knowledge import Document, IngestProgress, request_stream
from salon.client.messages import turn_request
from salon.client.policies import Disconnect, DoubleTexting, disconnect_value, double_texting_value
from salon.client.reply import Reply
from salon.client.retry import RetryPolicy
from salon.client.tools import Toolbox, Tools, tool_settings
from salon.client.turn import Turn
from salon.v1 import admin_service_pb2 as admin_pb2
from salon.v1 import admin_service_pb2_grpc as admin_grpc
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import knowledge_service_pb2_grpc as ks_grpc
from salon.v1 import session_pb2, turn_pb2
from salon.v1 import token_service_pb2 as tok_pb2
from salon.v1 import token_service_pb2_grpc as tok_grpc

__all__ = ["Reply", "SalonClient", "Session"]


class Session:
    """A session on the server; send it turns.

    ``toolbox`` holds the functions that answer the session's tool calls and ``on_approval`` the callback that
    decides its calls waiting for approval; both live in this object only (the engine knows the tools' names,
    descriptions and schemas, not the functions), and every turn of this object uses them unless it is given
    its own.
    """

    def __init__(
        self,
        client: SalonClient,
        proto: session_pb2.Session,
        *,
        toolbox: Toolbox | None = None,
        on_approval: ApprovalHandler | None = None,
    ) -> None:
        self._client = client
        self.proto = proto
        self.toolbox = toolbox
        self.on_approval = on_approval

    @property
    def id(self) -> str:
        """The session id."""
        return self.proto.session_id

    def turn(
        self,
        text: str,
        *,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        double_texting: DoubleTexting | None = None,
        disconnect_policy: Disconnect | None = None,
        metadata: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        tools: Tools | None = None,
        mcp_servers: Sequence[str] | None = None,
        tool_wait_timeout_s: float | None = None,
        max_model_rounds: int | None = None,
        on_approval: ApprovalHandler | None = None,
        do_not_remember: bool = False,
    ) -> Turn:
        """A new turn: ``async for event in session.turn("hi")`` yields typed events until the turn ends.

        Nothing is sent until iteration starts. The turn carries an idempotency key (a new UUID unless given),
        so the automatic retries never run it twice. ``double_texting`` and ``disconnect_policy`` override the
        session's policies for this turn; ``timeout_s`` bounds the whole turn, retries included.

        Tool calls are answered by the session's functions, approvals by its callback, as the turn streams.
        ``tools`` and ``mcp_servers`` replace the session's tools for this turn (sent to the engine; their
        functions answer this turn's calls); ``tool_wait_timeout_s`` and ``max_model_rounds`` override the
        session's tool settings; ``on_approval`` the session's callback. ``do_not_remember``: the turn is
        answered but never written into long-term memory.
        """
        return self._client.turn(
            self.id,
            text,
            idempotency_key=idempotency_key,
            timeout_s=timeout_s,
            double_texting=double_texting,
            disconnect_policy=disconnect_policy,
            metadata=metadata,
            retry=retry,
            tools=tools,
            mcp_servers=mcp_servers,
            tool_wait_timeout_s=tool_wait_timeout_s,
            max_model_rounds=max_model_rounds,
            on_approval=on_approval or self.on_approval,
            toolbox=self.toolbox,
            do_not_remember=do_not_remember,
        )

    def send(
        self, text: str, *, idempotency_key: str | None = None, timeout_s: float | None = None
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """Send a turn and iterate over its ``salon.v1.TurnEvent`` messages until the turn ends.

        Every turn carries an idempotency key (a new one unless given), so resending the same turn with the
        same key never runs it twice. Resumes after a dropped stream like :meth:`turn`.
        """
        return self._client.send_turn(self.id, text, idempotency_key=idempotency_key, timeout_s=timeout_s)

    async def ask(
        self,
        text: str,
        *,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        double_texting: DoubleTexting | None = None,
        disconnect_policy: Disconnect | None = None,
        tools: Tools | None = None,
        mcp_servers: Sequence[str] | None = None,
        tool_wait_timeout_s: float | None = None,
        max_model_rounds: int | None = None,
        on_approval: ApprovalHandler | None = None,
    ) -> Reply:
        """Send a turn and collect its whole answer, answering its tool calls on the way (see :meth:`turn`)."""
        turn = self.turn(
            text,
            idempotency_key=idempotency_key,
            timeout_s=timeout_s,
            double_texting=double_texting,
            disconnect_policy=disconnect_policy,
            tools=tools,
            mcp_servers=mcp_servers,
            tool_wait_timeout_s=tool_wait_timeout_s,
            max_model_rounds=max_model_rounds,
            on_approval=on_approval,
        )
        async with turn:
            return await turn.reply()

    def converse(self, conversation: Conversation, text: str, **kwargs: Any) -> ConverseTurn:
        """A new turn of this session carried by ``conversation`` (a ``Converse`` stream), with this session's
        functions and approval callback; the keywords are those of :meth:`Conversation.turn
        <salon.client.converse.Conversation.turn>`."""
        kwargs.setdefault("toolbox", self.toolbox)
        kwargs.setdefault("on_approval", self.on_approval)
        return conversation.turn(self.id, text, **kwargs)

    async def refresh(self) -> Session:
        """Reload the session from the server."""
        self.proto = (await self._client.get_session(self.id)).proto
        return self

    async def delete(self) -> None:
        """Delete the session."""
        await self._client.delete_session(self.id)

    def __repr__(self) -> str:
        return f"<Session {self.id}>"


class SalonClient:
    """A connection to a Salon gateway. Use as ``async with SalonClient(target) as client``.

    ``timeout_s`` is the default deadline of the unary calls (sessions, cancel); turns take their own.
    ``retry`` is the default :class:`RetryPolicy` of turns.

    Credentials: ``api_key`` is sent on every call (``authorization: Bearer``); ``root_certificates`` (PEM)
    turns TLS on and verifies the server; ``client_certificate`` and ``client_key`` (PEM) add mutual TLS.
    ``credentials`` (prebuilt channel credentials) takes precedence over the three TLS arguments.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        options: Sequence[tuple[str, object]] = (),
        timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        api_key: str | None = None,
        root_certificates: bytes | None = None,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
    ) -> None:
        self.target = target
        self._metadata = tuple(metadata) + ((("authorization", f"Bearer {api_key}"),) if api_key else ())
        self._timeout_s = timeout_s
        self._retry = retry or RetryPolicy()
        opts = list(options)
        if credentials is None and (root_certificates or client_certificate):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates, private_key=client_key, certificate_chain=client_certificate
            )
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=opts)
        self.stub = cs_grpc.ConversationServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.knowledge_stub = ks_grpc.KnowledgeServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.admin = admin_grpc.AdminServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.tokens = tok_grpc.SessionTokenServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> SalonClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (open calls are cancelled). Idempotent."""
        await self._channel.close()

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until the channel is connected (``TimeoutError`` if it is not within ``timeout_s``)."""
        await asyncio.wait_for(self._channel.channel_ready(), timeout_s)

    async def create_session(
        self,
        *,
        session_id: str = "",
        system_prompt: str = "",
        metadata: Mapping[str, str] | None = None,
        memory: session_pb2.MemorySettings | None = None,
        model: session_pb2.ModelSettings | None = None,
        double_texting: DoubleTexting | None = None,
        disconnect_policy: Disconnect | None = None,
        timeout_s: float | None = None,
        tools: Tools | None = None,
        mcp_servers: Sequence[str] | None = None,
        tool_wait_timeout_s: float | None = None,
        max_model_rounds: int | None = None,
        on_approval: ApprovalHandler | None = None,
        user_id: str = "",
    ) -> Session:
        """Open a session (with a chosen id, or let the server name it).

        ``tools`` are the tools the model may call in every turn: plain functions (sync or async) and
        :class:`~salon.client.Tool` objects (see :func:`~salon.client.tool` and :func:`~salon.client.mcp_tool`);
        ``mcp_servers`` names configured MCP servers whose every tool is offered. Definitions go to the engine,
        functions stay in the returned :class:`Session`, which runs them when the model calls them.
        ``on_approval`` decides calls of tools marked ``requires_approval``; without it, the turn yields
        :class:`~salon.client.ApprovalRequired` and waits for ``turn.approve`` / ``turn.reject``.
        ``tool_wait_timeout_s`` bounds how long a turn waits for a result or a decision (then it fails with
        ``TOOL_WAIT_TIMEOUT``); ``max_model_rounds`` caps the model requests of a turn. ``user_id`` names the
        person the session is with (memory of the user: ``memory.memory_scope``, :meth:`search_memory`,
        :meth:`erase_user`).
        """
        toolbox = Toolbox.of(tools, mcp_servers)
        request = cs_pb2.CreateSessionRequest(
            session_id=session_id,
            system_prompt=system_prompt,
            metadata=dict(metadata or {}),
            memory=memory,
            model=model,
            double_texting=double_texting_value(double_texting),
            disconnect_policy=disconnect_value(disconnect_policy),
            tools=toolbox.to_proto() if toolbox is not None else None,
            tool_settings=tool_settings(tool_wait_timeout_s, max_model_rounds),
            user_id=user_id,
        )
        response = await self._unary(self.stub.CreateSession, request, timeout_s)
        return Session(self, response.session, toolbox=toolbox, on_approval=on_approval)

    async def get_session(
        self,
        session_id: str,
        *,
        timeout_s: float | None = None,
        tools: Tools | None = None,
        on_approval: ApprovalHandler | None = None,
    ) -> Session:
        """The session with this id. ``tools`` and ``on_approval`` attach the functions that answer its calls
        and the approval callback to the returned object (nothing is sent: the session keeps the definitions
        it was created with)."""
        request = cs_pb2.GetSessionRequest(session_id=session_id)
        response = await self._unary(self.stub.GetSession, request, timeout_s)
        return Session(self, response.session, toolbox=Toolbox.of(tools), on_approval=on_approval)

    async def list_sessions(
        self, *, metadata_filter: Mapping[str, str] | None = None, page_size: int = 0, timeout_s: float | None = None
    ) -> AsyncIterator[Session]:
        """Every session of the caller (matching the filter), following pages."""
        token = ""
        while True:
            request = cs_pb2.ListSessionsRequest(
                page_size=page_size, page_token=token, metadata_filter=dict(metadata_filter or {})
            )
            response = await self._unary(self.stub.ListSessions, request, timeout_s)
            for proto in response.sessions:
                yield Session(self, proto)
            token = response.next_page_token
            if not token:
                return

    async def delete_session(self, session_id: str, *, timeout_s: float | None = None) -> None:
        """Delete a session."""
        await self._unary(self.stub.DeleteSession, cs_pb2.DeleteSessionRequest(session_id=session_id), timeout_s)

    def turn(
        self,
        session_id: str,
        text: str,
        *,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        double_texting: DoubleTexting | None = None,
        disconnect_policy: Disconnect | None = None,
        metadata: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        tools: Tools | None = None,
        mcp_servers: Sequence[str] | None = None,
        tool_wait_timeout_s: float | None = None,
        max_model_rounds: int | None = None,
        on_approval: ApprovalHandler | None = None,
        toolbox: Toolbox | None = None,
        do_not_remember: bool = False,
    ) -> Turn:
        """A new turn of ``session_id`` (see :meth:`Session.turn`). ``toolbox`` answers the turn's calls when
        ``tools`` (which are sent, and answer them otherwise) are not given."""
        key = idempotency_key or str(uuid.uuid4())
        sent = Toolbox.of(tools, mcp_servers)
        request = turn_request(
            session_id,
            text,
            key,
            double_texting=double_texting,
            disconnect_policy=disconnect_policy,
            metadata=metadata,
            tools=sent,
            tool_wait_timeout_s=tool_wait_timeout_s,
            max_model_rounds=max_model_rounds,
            do_not_remember=do_not_remember,
        )
        return Turn(
            self.stub,
            session_id=session_id,
            turn_id=key,
            request=request,
            metadata=self._metadata,
            timeout_s=timeout_s,
            retry=retry or self._retry,
            toolbox=sent if sent is not None else toolbox,
            on_approval=on_approval,
            call_timeout_s=self._timeout_s if self._timeout_s is not None else 30.0,
        )

    def resume_turn(
        self,
        session_id: str,
        turn_id: str,
        *,
        after_seq: int = 0,
        timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        tools: Tools | None = None,
        on_approval: ApprovalHandler | None = None,
    ) -> Turn:
        """An existing turn, read from the event after ``after_seq`` (running, waiting for a tool, or finished).

        Its ``text`` holds only the deltas after ``after_seq``. ``tools`` (functions, nothing is sent) answer
        the calls it yields and ``on_approval`` decides its approvals: a call seen again (``after_seq`` before
        its result) runs again, and the engine keeps the first answer, so make side effects idempotent by
        ``call.call_id``.
        """
        return Turn(
            self.stub,
            session_id=session_id,
            turn_id=turn_id,
            after_seq=after_seq,
            metadata=self._metadata,
            timeout_s=timeout_s,
            retry=retry or self._retry,
            toolbox=Toolbox.of(tools),
            on_approval=on_approval,
            call_timeout_s=self._timeout_s if self._timeout_s is not None else 30.0,
        )

    def converse(self, *, retry: RetryPolicy | None = None) -> Conversation:
        """One ``Converse`` stream for many turns of many sessions (``async with client.converse() as c``):
        turns, cancels, tool results and approvals travel on it; see :class:`~salon.client.Conversation`."""
        return Conversation(
            self.stub,
            metadata=self._metadata,
            retry=retry or self._retry,
            call_timeout_s=self._timeout_s if self._timeout_s is not None else 30.0,
        )

    async def submit_tool_result(
        self,
        session_id: str,
        turn_id: str,
        call_id: str,
        *,
        result: str | None = None,
        error: str | None = None,
        timeout_s: float | None = None,
    ) -> bool:
        """Answer a tool call of any turn (for example one another process streams) with exactly one of
        ``result`` or ``error``; ``True`` when the call already had an answer."""
        if (result is None) == (error is None):
            raise ValueError("give exactly one of result or error")
        request = cs_pb2.SubmitToolResultRequest(session_id=session_id, turn_id=turn_id, call_id=call_id)
        if error is not None:
            request.error = error
        else:
            request.result = result or ""
        response = await self._unary(self.stub.SubmitToolResult, request, timeout_s)
        return bool(response.duplicate)

    async def decide_approval(
        self,
        session_id: str,
        turn_id: str,
        call_id: str,
        *,
        approved: bool,
        reason: str = "",
        approver: str = "",
        timeout_s: float | None = None,
    ) -> bool:
        """Approve or reject a call of any turn waiting for approval; ``True`` when it was already decided (the
        first decision holds)."""
        verdict = cs_pb2.APPROVAL_VERDICT_APPROVE if approved else cs_pb2.APPROVAL_VERDICT_REJECT
        request = cs_pb2.DecideApprovalRequest(
            session_id=session_id, turn_id=turn_id, call_id=call_id, verdict=verdict, reason=reason, approver=approver
        )
        response = await self._unary(self.stub.DecideApproval, request, timeout_s)
        return bool(response.duplicate)

    async def cancel_turn(self, session_id: str, turn_id: str, *, timeout_s: float | None = None) -> None:
        """Stop a running or queued turn; its stream ends with a ``cancelled`` event."""
        request = cs_pb2.CancelTurnRequest(session_id=session_id, turn_id=turn_id)
        await self._unary(self.stub.CancelTurn, request, timeout_s)

    async def send_turn(
        self,
        session_id: str,
        text: str,
        *,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        do_not_remember: bool = False,
    ) -> AsyncGenerator[turn_pb2.TurnEvent, None]:
        """Send a turn to a session and iterate over its ``salon.v1.TurnEvent`` messages until it ends
        (``do_not_remember``: never written into long-term memory)."""
        turn = self.turn(
            session_id, text, idempotency_key=idempotency_key, timeout_s=timeout_s, do_not_remember=do_not_remember
        )
        async with turn:
            async for event in turn.protos():
                yield event

    async def ingest(
        self,
        documents: Iterable[Document] | AsyncIterable[Document],
        *,
        batch: int = 8,
        timeout_s: float | None = None,
    ) -> AsyncIterator[IngestProgress]:
        """Add or replace documents in the caller's knowledge base: yields each document's result as it is
        stored (in the order given, with running counts), then the summary. A document that fails gets its
        reason in its result; the others go on."""
        call = self.knowledge_stub.IngestDocuments(
            request_stream(documents, batch=batch), metadata=self._metadata, timeout=timeout_s
        )
        try:
            async for response in call:
                yield IngestProgress.from_proto(response)
        except grpc.aio.AioRpcError as exc:
            raise SalonError.from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def delete_documents(self, document_ids: Iterable[str], *, timeout_s: float | None = None) -> int:
        """Remove documents from the caller's knowledge base; returns how many existed."""
        request = ks_pb2.DeleteDocumentsRequest(document_ids=list(document_ids))
        response = await self._unary(self.knowledge_stub.DeleteDocuments, request, timeout_s)
        return int(response.deleted)

    async def search(
        self,
        text: str,
        *,
        top_k: int = 0,
        min_score: float = 0.0,
        collections: Sequence[str] = (),
        document_ids: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> list[ks_pb2.SearchHit]:
        """The passages of the caller's knowledge base most relevant to ``text``, best first; only of documents
        ingested into ``collections`` and of ``document_ids`` when given."""
        request = ks_pb2.SearchRequest(
            text=text,
            top_k=top_k,
            min_score=min_score,
            collections=list(collections),
            document_ids=list(document_ids),
        )
        response = await self._unary(self.knowledge_stub.Search, request, timeout_s)
        return list(response.hits)

    async def search_memory(
        self,
        text: str,
        *,
        session_id: str = "",
        user_id: str = "",
        top_k: int = 0,
        min_score: float = 0.0,
        timeout_s: float | None = None,
    ) -> list[ks_pb2.MemoryHit]:
        """The remembered turns most relevant to ``text``, best first: of one session (``session_id``) or of
        every session of one user (``user_id``), exactly one of the two. Remembers nothing itself."""
        request = ks_pb2.SearchMemoryRequest(
            text=text, session_id=session_id, user_id=user_id, top_k=top_k, min_score=min_score
        )
        response = await self._unary(self.knowledge_stub.SearchMemory, request, timeout_s)
        return list(response.hits)

    async def erase_user(
        self, user_id: str, *, tenant_id: str = "", timeout_s: float | None = None
    ) -> admin_pb2.EraseUserResponse:
        """Erase everything the engine holds about a user (their sessions and memories) of the caller's tenant,
        or of ``tenant_id`` with an admin key."""
        request = admin_pb2.EraseUserRequest(tenant_id=tenant_id, user_id=user_id)
        erased: admin_pb2.EraseUserResponse = await self._unary(self.admin.EraseUser, request, timeout_s)
        return erased

    async def get_usage(
        self, tenant_id: str = "", *, all_tenants: bool = False, timeout_s: float | None = None
    ) -> list[admin_pb2.TenantUsage]:
        """Usage against limits: the caller's tenant, another one or all of them (those two need an admin key)."""
        request = admin_pb2.GetUsageRequest(tenant_id=tenant_id, all_tenants=all_tenants)
        response = await self._unary(self.admin.GetUsage, request, timeout_s)
        return list(response.usage)

    async def issue_session_token(
        self,
        session_id: str = "",
        *,
        user: str = "",
        rights: Sequence[str] = (),
        ttl_s: float = 0.0,
        timeout_s: float | None = None,
    ) -> tok_pb2.IssueSessionTokenResponse:
        """A short-lived token for a browser (the web bridge takes these, never an API key): for ``session_id``, or
        with none a user token that may only create sessions (``rights`` must then hold ``"create_sessions"``).
        ``rights`` by name (send, resume, cancel, read, tools, approve, create_sessions); empty: send, resume,
        cancel and read. ``ttl_s`` 0: the deployment's default."""
        values = [f"TOKEN_RIGHT_{name.upper()}" for name in rights]
        try:
            for value in values:
                tok_pb2.TokenRight.Value(value)
        except ValueError:
            known = "send, resume, cancel, read, tools, approve, create_sessions"
            raise ValueError(f"rights must be among {known}: {list(rights)}") from None
        seconds = int(ttl_s)
        request = tok_pb2.IssueSessionTokenRequest(
            session_id=session_id,
            user=user,
            rights=values,
            ttl=Duration(seconds=seconds, nanos=int((ttl_s - seconds) * 1e9)),
        )
        issued: tok_pb2.IssueSessionTokenResponse = await self._unary(self.tokens.IssueSessionToken, request, timeout_s)
        return issued

    async def _unary(self, method: Any, request: object, timeout_s: float | None = None) -> Any:
        timeout = self._timeout_s if timeout_s is None else timeout_s
        try:
            return await method(request, metadata=self._metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise SalonError.from_rpc_error(exc) from None
