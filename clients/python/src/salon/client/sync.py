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
* An unclosed client's thread is a daemon thread, so it does not keep the process alive; close it anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType

import grpc

from salon.client import client as aio
from salon.client._loop import LoopThread, is_end, next_or_end
from salon.client.events import Event, TerminalEvent
from salon.client.knowledge import Document, IngestProgress
from salon.client.policies import Disconnect, DoubleTexting
from salon.client.reply import Reply
from salon.client.retry import RetryPolicy
from salon.client.turn import Turn as AsyncTurn
from salon.v1 import admin_service_pb2 as admin_pb2
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import session_pb2

__all__ = ["SalonClient", "Session", "Turn"]


class Turn:
    """A turn being read: ``for event in turn`` blocks for each typed event, ending after the terminal one.

    Properties (``text``, ``events``, ``final`` …) describe what has been read so far.
    """

    def __init__(self, loop: LoopThread, turn: AsyncTurn) -> None:
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

    def cancel(self, *, timeout_s: float | None = 10.0) -> None:
        """Ask the engine to stop the turn; keep reading to get the ``Cancelled`` event."""
        self._loop.run(self._turn.cancel(timeout_s=timeout_s))

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
    ) -> Reply:
        """Send a turn and return its whole answer."""
        return self._loop.run(
            self._session.ask(
                text,
                idempotency_key=idempotency_key,
                timeout_s=timeout_s,
                double_texting=double_texting,
                disconnect_policy=disconnect_policy,
            )
        )

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
    ) -> Session:
        """Open a session (with a chosen id, or let the server name it)."""
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
            )
        )
        return Session(self._loop, session)

    def get_session(self, session_id: str, *, timeout_s: float | None = None) -> Session:
        """The session with this id."""
        return Session(self._loop, self._loop.run(self._client.get_session(session_id, timeout_s=timeout_s)))

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
    ) -> Turn:
        """An existing turn, read from the event after ``after_seq``."""
        turn = self._client.resume_turn(session_id, turn_id, after_seq=after_seq, timeout_s=timeout_s, retry=retry)
        return Turn(self._loop, turn)

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
        self, text: str, *, top_k: int = 0, min_score: float = 0.0, timeout_s: float | None = None
    ) -> list[ks_pb2.SearchHit]:
        """The most relevant passages of the knowledge base."""
        return self._loop.run(self._client.search(text, top_k=top_k, min_score=min_score, timeout_s=timeout_s))
