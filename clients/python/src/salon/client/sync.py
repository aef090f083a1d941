"""A blocking client for code that does not run an event loop (scripts, WSGI apps, notebooks' plain cells).

It is the async client running on a private event loop in a background thread that the client owns: every
call hands a coroutine to that loop and blocks until it is done. ``close()`` (or leaving the ``with`` block)
closes the channel, stops the loop and joins the thread.

Limits:

* Every call, and every event of a turn, crosses threads: fine for a chat, not the way to run thousands of
  turns at once. Use the async client for that.
* Do not call it from inside the client's own loop (there is no way to get there short of poking at
  privates); calling it from another event loop's thread works but blocks that loop while it waits.
* One client may be shared by threads; one :class:`Turn` must be read by one thread at a time.
* Ctrl-C while a call blocks cancels that call (a turn's stream stops; the turn itself follows its
  disconnect policy). Not fork-safe: make clients after forking.
* Tool functions and approval callbacks that are plain functions run in worker threads of the private loop
  (so they may block); async ones run on the private loop itself.
* An unclosed client's thread is a daemon thread, so it does not keep the process alive; close it anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc

from salon.client import client as aio
from salon.client import converse as aio_converse
from salon.client._loop import LoopThread, is_end, next_or_end
from salon.client.approvals import ApprovalHandler, Decision
from salon.client.events import Event, TerminalEvent
from salon.client.knowledge import Document, IngestProgress
from salon.client.policies import Disconnect, DoubleTexting
from salon.client.reply import Reply
from salon.client.retry import RetryPolicy
from salon.client.tool_loop import ToolLoop
from salon.client.tools import Toolbox, Tools
from salon.client.turn import BaseTurn
from salon.v1 import admin_service_pb2 as admin_pb2
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import session_pb2

__all__ = ["Conversation", "SalonClient", "Session", "Turn"]


class Turn:
    """A turn being read: ``for event in turn`` blocks for each typed event, ending after the terminal one.

    Properties (``text``, ``events``, ``final`` …) describe what has been read so far. Tool calls are answered
    by the turn's functions as it is read; the others with :meth:`submit_tool_result` and the like.
    """

    def __init__(self, loop: LoopThread, turn: BaseTurn) -> None:
        self._loop = loop
        self._turn = turn

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        item = self._loop.run(next_or_end(self._turn))
        if is_end(item):
            raise StopIteration
        return item

    @property
    def session_id(self) -> str:
        """The session the turn belongs to."""
        return self._turn.session_id

    @property
    def turn_id(self) -> str:
        """The turn's id."""
        return self._turn.turn_id

    @property
    def idempotency_key(self) -> str:
        """The key the turn was sent with."""
        return self._turn.idempotency_key

    @property
    def text(self) -> str:
        """The answer read so far."""
        return self._turn.text

    @property
    def events(self) -> tuple[Event, ...]:
        """The typed events read so far."""
        return self._turn.events

    @property
    def final(self) -> TerminalEvent | None:
        """The terminal event, once read."""
        return self._turn.final

    @property
    def done(self) -> bool:
        """Whether the terminal event has been read."""
        return self._turn.done

    @property
    def last_seq(self) -> int:
        """Sequence number of the last event read."""
        return self._turn.last_seq

    @property
    def retries(self) -> int:
        """Calls made after the first one."""
        return self._turn.retries

    @property
    def resumes(self) -> int:
        """ResumeTurn calls made."""
        return self._turn.resumes

    def wait(self) -> TerminalEvent:
        """Read the turn to its end and return the terminal event."""
        return self._loop.run(self._turn.wait())

    def reply(self) -> Reply:
        """Read the turn to its end and collect it."""
        return self._loop.run(self._turn.reply())

    @property
    def tool_loop(self) -> ToolLoop:
        """What the turn did about its tool calls (``answered``, ``decided``)."""
        return self._turn.tool_loop

    def cancel(self, *, timeout_s: float | None = 10.0) -> None:
        """Ask the engine to stop the turn; keep reading to get the ``Cancelled`` event."""
        self._loop.run(self._turn.cancel(timeout_s=timeout_s))

    def submit_tool_result(self, call_id: str, result: str) -> bool:
        """Answer a tool call with its result; ``True`` if it already had an answer."""
        return self._loop.run(self._turn.submit_tool_result(call_id, result))

    def submit_tool_error(self, call_id: str, error: str) -> bool:
        """Answer a tool call with an error."""
        return self._loop.run(self._turn.submit_tool_error(call_id, error))

    def decide_approval(self, call_id: str, decision: Decision) -> bool:
        """Approve or reject a call waiting for approval; ``True`` if it was already decided."""
        return self._loop.run(self._turn.decide_approval(call_id, decision))

    def approve(self, call_id: str, reason: str = "", *, approver: str = "") -> bool:
        """Approve a call waiting for approval."""
        return self._loop.run(self._turn.approve(call_id, reason, approver=approver))

    def reject(self, call_id: str, reason: str = "", *, approver: str = "") -> bool:
        """Reject a call waiting for approval; the model sees ``reason``."""
        return self._loop.run(self._turn.reject(call_id, reason, approver=approver))

    def close(self) -> None:
        """Stop reading (see :meth:`salon.client.Turn.aclose`). Idempotent."""
        if not self._loop.closed:
            self._loop.run(self._turn.aclose())

    def __enter__(self) -> Turn:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._turn)


class Session:
    """A session on the server (blocking)."""

    def __init__(self, loop: LoopThread, session: aio.Session) -> None:
        self._loop = loop
        self._session = session

    @property
    def id(self) -> str:
        """The session id."""
        return self._session.id

    @property
    def proto(self) -> session_pb2.Session:
        """The session as the server last described it."""
        return self._session.proto

    @property
    def toolbox(self) -> Toolbox | None:
        """The functions answering the session's tool calls (held here, not by the engine)."""
        return self._session.toolbox

    @property
    def on_approval(self) -> ApprovalHandler | None:
        """The callback deciding the session's calls that wait for approval."""
        return self._session.on_approval

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
        """A new turn; iterate over it for its typed events (see :meth:`salon.client.Session.turn`)."""
        turn = self._session.turn(
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
            on_approval=on_approval,
            do_not_remember=do_not_remember,
        )
        return Turn(self._loop, turn)

    def ask(
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
        """Send a turn and return its whole answer, answering its tool calls on the way."""
        return self._loop.run(
            self._session.ask(
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
        )

    def converse(self, conversation: Conversation, text: str, **kwargs: Any) -> Turn:
        """A new turn of this session on ``conversation``, with this session's functions and approval callback
        (the keywords of :meth:`Conversation.turn`)."""
        kwargs.setdefault("toolbox", self._session.toolbox)
        kwargs.setdefault("on_approval", self._session.on_approval)
        return conversation.turn(self.id, text, **kwargs)

    def refresh(self) -> Session:
        """Reload the session from the server."""
        self._loop.run(self._session.refresh())
        return self

    def delete(self) -> None:
        """Delete the session."""
        self._loop.run(self._session.delete())

    def __repr__(self) -> str:
        return repr(self._session)


class SalonClient:
    """A blocking connection to a Salon gateway. Use as ``with SalonClient(target) as client``.

    Takes the same arguments as :class:`salon.client.SalonClient`.
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
        self._loop = LoopThread()

        async def build() -> aio.SalonClient:
            # grpc.aio binds a channel to the loop it is made on: make it on the private loop.
            return aio.SalonClient(
                target,
                credentials=credentials,
                metadata=metadata,
                options=options,
                timeout_s=timeout_s,
                retry=retry,
                api_key=api_key,
                root_certificates=root_certificates,
                client_certificate=client_certificate,
                client_key=client_key,
            )

        try:
            self._client = self._loop.run(build())
        except BaseException:
            self._loop.close()
            raise

    def __enter__(self) -> SalonClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel and stop the private loop and its thread. Idempotent."""
        if self._loop.closed:
            return
        try:
            self._loop.run(self._client.close())
        finally:
            self._loop.close()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the channel is connected (``TimeoutError`` after ``timeout_s``)."""
        self._loop.run(self._client.wait_ready(timeout_s))

    def create_session(
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
        """Open a session (with a chosen id, or let the server name it), with the tools the model may call
        (see :meth:`salon.client.SalonClient.create_session`)."""
        session = self._loop.run(
            self._client.create_session(
                session_id=session_id,
                system_prompt=system_prompt,
                metadata=metadata,
                memory=memory,
                model=model,
                double_texting=double_texting,
                disconnect_policy=disconnect_policy,
                timeout_s=timeout_s,
                tools=tools,
                mcp_servers=mcp_servers,
                tool_wait_timeout_s=tool_wait_timeout_s,
                max_model_rounds=max_model_rounds,
                on_approval=on_approval,
                user_id=user_id,
            )
        )
        return Session(self._loop, session)

    def get_session(
        self,
        session_id: str,
        *,
        timeout_s: float | None = None,
        tools: Tools | None = None,
        on_approval: ApprovalHandler | None = None,
    ) -> Session:
        """The session with this id (``tools`` and ``on_approval`` attach functions and a callback locally)."""
        session = self._client.get_session(session_id, timeout_s=timeout_s, tools=tools, on_approval=on_approval)
        return Session(self._loop, self._loop.run(session))

    def list_sessions(
        self, *, metadata_filter: Mapping[str, str] | None = None, page_size: int = 0, timeout_s: float | None = None
    ) -> Iterator[Session]:
        """Every session of the caller (matching the filter), fetching pages as the iteration goes."""
        pages = self._client.list_sessions(metadata_filter=metadata_filter, page_size=page_size, timeout_s=timeout_s)
        while not is_end(session := self._loop.run(next_or_end(pages))):
            yield Session(self._loop, session)

    def delete_session(self, session_id: str, *, timeout_s: float | None = None) -> None:
        """Delete a session."""
        self._loop.run(self._client.delete_session(session_id, timeout_s=timeout_s))

    def get_usage(
        self, tenant_id: str = "", *, all_tenants: bool = False, timeout_s: float | None = None
    ) -> list[admin_pb2.TenantUsage]:
        """Usage against limits (see :meth:`salon.client.SalonClient.get_usage`)."""
        return self._loop.run(self._client.get_usage(tenant_id, all_tenants=all_tenants, timeout_s=timeout_s))

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
        """An existing turn, read from the event after ``after_seq`` (see
        :meth:`salon.client.SalonClient.resume_turn`)."""
        turn = self._client.resume_turn(
            session_id,
            turn_id,
            after_seq=after_seq,
            timeout_s=timeout_s,
            retry=retry,
            tools=tools,
            on_approval=on_approval,
        )
        return Turn(self._loop, turn)

    def converse(self, *, retry: RetryPolicy | None = None) -> Conversation:
        """One ``Converse`` stream for many turns (``with client.converse() as conversation``)."""

        async def build() -> aio_converse.Conversation:
            conversation = self._client.converse(retry=retry)
            await conversation.open()
            return conversation

        return Conversation(self._loop, self._loop.run(build()))

    def submit_tool_result(
        self,
        session_id: str,
        turn_id: str,
        call_id: str,
        *,
        result: str | None = None,
        error: str | None = None,
        timeout_s: float | None = None,
    ) -> bool:
        """Answer a tool call of any turn (see :meth:`salon.client.SalonClient.submit_tool_result`)."""
        return self._loop.run(
            self._client.submit_tool_result(
                session_id, turn_id, call_id, result=result, error=error, timeout_s=timeout_s
            )
        )

    def decide_approval(
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
        """Approve or reject a call of any turn (see :meth:`salon.client.SalonClient.decide_approval`)."""
        return self._loop.run(
            self._client.decide_approval(
                session_id, turn_id, call_id, approved=approved, reason=reason, approver=approver, timeout_s=timeout_s
            )
        )

    def cancel_turn(self, session_id: str, turn_id: str, *, timeout_s: float | None = None) -> None:
        """Stop a running or queued turn."""
        self._loop.run(self._client.cancel_turn(session_id, turn_id, timeout_s=timeout_s))

    def ingest(
        self,
        documents: Iterable[Document],
        *,
        on_progress: Callable[[IngestProgress], None] | None = None,
        batch: int = 8,
        timeout_s: float | None = None,
    ) -> ks_pb2.IngestSummary:
        """Add or replace documents; ``on_progress`` sees each document's result as it is stored. Returns the
        summary (which documents failed, and why)."""
        stream = self._client.ingest(list(documents), batch=batch, timeout_s=timeout_s)
        summary = ks_pb2.IngestSummary()
        while not is_end(progress := self._loop.run(next_or_end(stream))):
            if on_progress is not None:
                on_progress(progress)
            if progress.summary is not None:
                summary = progress.summary
        return summary

    def delete_documents(self, document_ids: Iterable[str], *, timeout_s: float | None = None) -> int:
        """Remove documents; returns how many existed."""
        return self._loop.run(self._client.delete_documents(list(document_ids), timeout_s=timeout_s))

    def search(
        self,
        text: str,
        *,
        top_k: int = 0,
        min_score: float = 0.0,
        collections: Sequence[str] = (),
        document_ids: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> list[ks_pb2.SearchHit]:
        """The most relevant passages of the knowledge base (of ``collections`` and ``document_ids`` if given)."""
        return self._loop.run(
            self._client.search(
                text,
                top_k=top_k,
                min_score=min_score,
                collections=collections,
                document_ids=document_ids,
                timeout_s=timeout_s,
            )
        )

    def search_memory(
        self,
        text: str,
        *,
        session_id: str = "",
        user_id: str = "",
        top_k: int = 0,
        min_score: float = 0.0,
        timeout_s: float | None = None,
    ) -> list[ks_pb2.MemoryHit]:
        """The most relevant remembered turns of a session or of a user (see
        :meth:`salon.client.SalonClient.search_memory`)."""
        return self._loop.run(
            self._client.search_memory(
                text, session_id=session_id, user_id=user_id, top_k=top_k, min_score=min_score, timeout_s=timeout_s
            )
        )

    def erase_user(
        self, user_id: str, *, tenant_id: str = "", timeout_s: float | None = None
    ) -> admin_pb2.EraseUserResponse:
        """Erase a user's sessions and memories (see :meth:`salon.client.SalonClient.erase_user`)."""
        return self._loop.run(self._client.erase_user(user_id, tenant_id=tenant_id, timeout_s=timeout_s))


class Conversation:
    """One ``Converse`` stream carrying many turns (blocking); see :class:`salon.client.Conversation`."""

    def __init__(self, loop: LoopThread, conversation: aio_converse.Conversation) -> None:
        self._loop = loop
        self._conversation = conversation

    def __enter__(self) -> Conversation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Cancel the stream. Idempotent."""
        if not self._loop.closed:
            self._loop.run(self._conversation.close())

    @property
    def streams_opened(self) -> int:
        """How many streams the conversation opened (more than one: it reconnected)."""
        return self._conversation.streams_opened

    def turn(self, session_id: str, text: str, **kwargs: Any) -> Turn:
        """A new turn of ``session_id`` on the stream (the keywords of :meth:`salon.client.Conversation.turn`)."""
        return Turn(self._loop, self._conversation.turn(session_id, text, **kwargs))

    def resume_turn(self, session_id: str, turn_id: str, **kwargs: Any) -> Turn:
        """An existing turn read on the stream (see :meth:`salon.client.Conversation.resume_turn`)."""
        return Turn(self._loop, self._conversation.resume_turn(session_id, turn_id, **kwargs))

    def submit_tool_result(
        self, session_id: str, turn_id: str, call_id: str, *, result: str | None = None, error: str | None = None
    ) -> bool:
        """Answer a tool call on the stream."""
        return self._loop.run(
            self._conversation.submit_tool_result(session_id, turn_id, call_id, result=result, error=error)
        )

    def decide_approval(self, session_id: str, turn_id: str, call_id: str, decision: Decision) -> bool:
        """Approve or reject a call on the stream."""
        return self._loop.run(self._conversation.decide_approval(session_id, turn_id, call_id, decision))
