"""What a session is given: its identity and settings, and each turn in flight.

A turn reaches a session as one :class:`InFlight` object: the turn's data, where its events go, and the two
ways it leaves the session (done: recorded and ended; released: handed back unfinished). The host implements
it over a bus message; :class:`LocalInFlight` implements it with plain callbacks for running a session
without a host.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from salon import otel
from salon.actors.events import TurnEvent
from salon.actors.guardrails import GuardrailSettings
from salon.actors.tools import ToolPolicy, ToolSelection


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A session's identity: sessions are always scoped to a tenant."""

    tenant_id: str
    session_id: str

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.session_id}"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the session was created with (read from the session registry at activation)."""

    system_prompt: str = ""
    window_max_messages: int = 40
    window_token_budget: int = 8000
    model: str = ""
    max_tokens: int = 1024
    temperature: float | None = None
    stop_sequences: tuple[str, ...] = ()
    snapshot_every_turns: int = 20
    provider: str = ""
    fallback_providers: tuple[str, ...] = ()
    double_texting: str = "enqueue"
    """What a turn arriving while another runs does: enqueue, reject, interrupt or rollback."""
    retrieval_top_k: int = 25
    """Retrieved passages (knowledge and long-term memory) that may enter a prompt; 0 turns retrieval off."""
    retrieval_min_score: float = 0.0
    retrieval_token_budget: int = 2000
    """Tokens the retrieved passages may take in a prompt together (the embedding model's count)."""
    long_term_memory: bool = True
    """Whether this session's earlier turns are retrieved (the knowledge base is, either way)."""
    user_id: str = ""
    """The session's user (``Session.user_id``): its turns' records and memory rows carry it."""
    user_memory: bool = False
    """Retrieve the remembered turns of every session of ``user_id``, not only this session's."""
    knowledge_collections: frozenset[str] = frozenset()
    """Knowledge collections retrieved from; empty: the whole knowledge base of the tenant."""
    summary_max_tokens: int = 400
    """Size the rolling summary is kept under."""
    summary_min_messages: int = 4
    """Messages that must have left the window before the summary is rewritten (fewer, larger rewrites)."""
    tools: ToolSelection = field(default_factory=ToolSelection)
    """The tools the session's turns offer the model."""
    tool_policy: ToolPolicy = field(default_factory=ToolPolicy)
    """How its turns wait for tools and how many model rounds they may make."""


@dataclass(slots=True)
class Turn:
    """One turn's data, as handed to a session."""

    turn_id: str
    text: str
    trace_id: str = ""
    trace_context: otel.TraceContext | None = None
    """The host's CONSUMER span of this turn: the session's spans are its children."""
    enqueued_at_ns: int = 0
    prior_events: Sequence[TurnEvent] = ()
    """Events an earlier attempt at this turn already sent (its host died mid-turn): the answer continues
    after them instead of starting over."""
    policy: str = ""
    """Double-texting policy for this turn; empty: the session's."""
    deadline_ns: int = 0
    """Wall-clock time (ns) after which the turn is cancelled; 0: none."""
    guardrails: GuardrailSettings = field(default_factory=GuardrailSettings)
    """The tenant's guardrails, as the gateway sent them with the turn."""
    tools: ToolSelection | None = None
    """The tools this turn offers instead of the session's; None: the session's."""
    tool_policy: ToolPolicy | None = None
    """This turn's tool policy (the session's with the turn's overrides); None: the session's."""
    do_not_remember: bool = False
    """Answered and recorded, never written into long-term memory (``SendTurnRequest.do_not_remember``)."""

    @property
    def prior_seq(self) -> int:
        """Sequence number of the last event an earlier attempt sent (0: none)."""
        return self.prior_events[-1].seq if self.prior_events else 0


class InFlight(Protocol):
    """A turn in flight, as its session sees it. The session calls exactly one of :meth:`done` and
    :meth:`release` for a turn it took, or neither when it stops before the turn's end (the bus then
    redelivers it)."""

    @property
    def turn(self) -> Turn:
        """The turn's data."""
        ...

    async def emit(self, event: TurnEvent) -> None:
        """Send one of the turn's events (numbered by the session)."""
        ...

    def join_delta(self, seq: int, text: str) -> bool:
        """Add ``text`` to the delta numbered ``seq`` if it has not left yet (True); False: send it on its own."""
        ...

    async def done(self) -> None:
        """The turn is recorded and its terminal event sent: it may be acknowledged."""
        ...

    async def release(self) -> None:
        """This session will not finish the turn (another host took the session over, or it closed while the
        turn waited for its tools): hand it back for prompt redelivery."""
        ...

    def set_waiting(self, waiting: bool) -> None:
        """The turn starts (True) or stops waiting for tool results or approvals: it holds no model connection
        meanwhile, so its host does not count it as a busy slot."""
        ...


Callback = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class LocalInFlight:
    """An :class:`InFlight` made of plain callbacks: a session run without a host (tests, benchmarks)."""

    turn: Turn
    sink: Callable[[TurnEvent], Awaitable[None]]
    on_done: Callback | None = None
    on_release: Callback | None = None
    join: Callable[[int, str], bool] | None = None
    """Joins pieces of the answer to a delta not sent yet (None: every piece is an event)."""

    async def emit(self, event: TurnEvent) -> None:
        """Hand the event to ``sink``."""
        await self.sink(event)

    def join_delta(self, seq: int, text: str) -> bool:
        """Ask ``join``, if any."""
        return self.join is not None and self.join(seq, text)

    async def done(self) -> None:
        """Call ``on_done``, if any."""
        if self.on_done is not None:
            await self.on_done()

    async def release(self) -> None:
        """Call ``on_release``, if any."""
        if self.on_release is not None:
            await self.on_release()

    def set_waiting(self, waiting: bool) -> None:
        """Nothing to tell."""
