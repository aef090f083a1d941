"""The session actor: one conversation's state and its turns, one at a time, in arrival order.

Plain asyncio: no Ray, NATS or gRPC here, so the logic is testable alone. The host feeds it turns and gives
it a sink for their events; it calls back when a turn has ended so the host can acknowledge the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from actors.events import EventSink, TurnEmitter
from actors.memory import fit_window
from actors.model import Message, ModelChunk, ModelError, ModelProvider, ModelRequest, ModelResult, TextDelta

log = logging.getLogger(__name__)

RECENT_TURNS_KEPT = 32
"""How many finished turns a session remembers by id, to answer a redelivered turn without the model."""


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


@dataclass(slots=True)
class TurnOutcome:
    """How a turn ended; kept for recently finished turns so a duplicate is answered from it."""

    turn_id: str
    status: str  # completed | failed | partial | cancelled
    reply: str
    stop_reason: str = ""
    error_reason: str = ""


@dataclass(slots=True)
class SessionState:
    """What a session remembers between turns; saved as a snapshot after each turn and on passivation."""

    messages: list[Message] = field(default_factory=list)
    turn_count: int = 0
    recent: OrderedDict[str, TurnOutcome] = field(default_factory=OrderedDict)
    incarnation: str = ""
    """Which incarnation of the session id this state belongs to (see ``storage.TurnEnvelope``)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        return {
            "version": 1,
            "incarnation": self.incarnation,
            "turn_count": self.turn_count,
            "messages": [[m.role, m.text, m.turn_id] for m in self.messages],
            "recent": [[o.turn_id, o.status, o.reply, o.stop_reason, o.error_reason] for o in self.recent.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        """Rebuild state from :meth:`to_dict` output."""
        state = cls(turn_count=int(data.get("turn_count", 0)), incarnation=str(data.get("incarnation", "")))
        state.messages = [Message(role=r, text=t, turn_id=i) for r, t, i in data.get("messages", [])]
        for turn_id, status, reply, stop_reason, error_reason in data.get("recent", []):
            state.recent[turn_id] = TurnOutcome(turn_id, status, reply, stop_reason, error_reason)
        return state


@dataclass(slots=True)
class Turn:
    """One turn handed to a session."""

    turn_id: str
    text: str
    trace_id: str = ""
    on_done: Callable[[], Awaitable[None]] | None = None
    """Called once the turn has ended and its outcome is saved (the host acks the bus message here)."""


@dataclass(slots=True)
class _Queued:
    turn: Turn
    emitter: TurnEmitter


SnapshotSaver = Callable[[SessionKey, dict[str, Any]], Awaitable[None]]


class SessionActor:
    """Runs a session's turns one at a time, in the order they were submitted."""

    def __init__(
        self,
        key: SessionKey,
        settings: SessionSettings,
        state: SessionState,
        provider: ModelProvider,
        save_snapshot: SnapshotSaver,
        *,
        max_window_messages_kept: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.settings = settings
        self.state = state
        self._provider = provider
        self._save_snapshot = save_snapshot
        self._keep = max_window_messages_kept
        self._queue: deque[_Queued] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._clock = clock
        self.last_active = clock()

    @property
    def busy(self) -> bool:
        """Whether a turn is running or queued."""
        return bool(self._queue)

    @property
    def pending_turns(self) -> int:
        """Turns running or waiting."""
        return len(self._queue)

    async def wait_idle(self) -> None:
        """Return once no turn is running or queued."""
        while self._runner is not None:
            await asyncio.shield(self._runner)

    def knows_turn(self, turn_id: str) -> bool:
        """Whether ``turn_id`` is queued, running, or recently finished here."""
        return turn_id in self.state.recent or any(q.turn.turn_id == turn_id for q in self._queue)

    async def submit(self, turn: Turn, sink: EventSink) -> bool:
        """Queue ``turn``; its events (starting with ``accepted``) go to ``sink``, and ``turn.on_done`` is
        called once it has ended and been saved.

        A turn this session already finished is answered from its outcome without calling the model. One
        that is queued or running is a duplicate: it is not taken (returns False, ``on_done`` is never
        called), since the copy already here will finish and be acknowledged. (The host settles such
        copies itself; this is the actor's own guard.)
        """
        if self._closed:
            raise RuntimeError("session actor is closed")
        self.last_active = self._clock()
        emitter = TurnEmitter(self.key.session_id, turn.turn_id, sink)
        if turn.turn_id in self.state.recent:
            await self._replay(turn, emitter, self.state.recent[turn.turn_id])
            return True
        if any(q.turn.turn_id == turn.turn_id for q in self._queue):
            return False
        # Appending before the first await fixes the turn's place in line.
        self._queue.append(_Queued(turn, emitter))
        position = len(self._queue) - 1
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"session-{self.key}")
        await emitter.accepted(position, trace_id=turn.trace_id)
        return True

    async def _replay(self, turn: Turn, emitter: TurnEmitter, outcome: TurnOutcome) -> None:
        await emitter.accepted(0, trace_id=turn.trace_id, replayed=True)
        if outcome.reply:
            await emitter.delta(outcome.reply)
        if outcome.status == "completed":
            await emitter.completed(outcome.stop_reason or "end_turn")
        elif outcome.status == "cancelled":
            await emitter.cancelled("cancelled")
        else:
            await emitter.error(
                outcome.error_reason or "MODEL_ERROR",
                "the turn failed earlier; this is its recorded outcome",
                retryable=False,
                partial=outcome.status == "partial",
            )
        # Saved again before the ack: the earlier save may be the one that failed.
        await self._finish(turn)

    async def _run(self) -> None:
        try:
            while self._queue:
                queued = self._queue[0]
                try:
                    await self._execute(queued.turn, queued.emitter)
                finally:
                    self._queue.popleft()
                    self.last_active = self._clock()
        finally:
            self._runner = None

    def _request(self, user_text: str) -> ModelRequest:
        s = self.settings
        history = fit_window(
            self.state.messages,
            max_messages=max(s.window_max_messages - 1, 0),
            token_budget=s.window_token_budget,
        )
        return ModelRequest(
            system=s.system_prompt,
            messages=(*history, Message("user", user_text)),
            model=s.model,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            stop_sequences=s.stop_sequences,
        )

    async def _execute(self, turn: Turn, emitter: TurnEmitter) -> None:
        parts: list[str] = []
        stream = self._provider.stream(self._request(turn.text))
        try:
            outcome = await self._stream_answer(turn, emitter, stream, parts)
        except asyncio.CancelledError:
            # Stopped by close() after the drain grace period: the partial answer is recorded as cancelled
            # and the turn acknowledged, so it is not run a second time.
            await _aclose(stream)
            self._record(turn, TurnOutcome(turn.turn_id, "cancelled", "".join(parts)))
            with contextlib.suppress(Exception):
                await asyncio.shield(self._finish_cancelled(turn, emitter))
            raise
        await _aclose(stream)
        self._record(turn, outcome)
        await self._finish(turn)

    async def _stream_answer(
        self, turn: Turn, emitter: TurnEmitter, stream: AsyncIterator[ModelChunk], parts: list[str]
    ) -> TurnOutcome:
        try:
            result: ModelResult | None = None
            async for chunk in stream:
                if isinstance(chunk, TextDelta):
                    if chunk.text:
                        parts.append(chunk.text)
                        await emitter.delta(chunk.text)
                else:
                    result = chunk
            if result is None:
                raise ModelError("the model stream ended without a result", reason="MODEL_PROTOCOL_ERROR")
        except ModelError as exc:
            partial = bool(parts)
            await emitter.error(
                exc.reason,
                exc.message,
                retryable=exc.retryable and not partial,
                partial=partial,
                retry_after_s=exc.retry_after_s,
            )
            status = "partial" if partial else "failed"
            return TurnOutcome(turn.turn_id, status, "".join(parts), error_reason=exc.reason)
        except Exception:
            log.exception("turn failed inside the engine", extra={"session": str(self.key), "turn": turn.turn_id})
            partial = bool(parts)
            await emitter.error(
                "INTERNAL", "the engine failed while running this turn", retryable=False, partial=partial
            )
            status = "partial" if partial else "failed"
            return TurnOutcome(turn.turn_id, status, "".join(parts), error_reason="INTERNAL")
        await emitter.usage(result)
        await emitter.completed(result.stop_reason, result.stop_sequence)
        return TurnOutcome(turn.turn_id, "completed", "".join(parts), stop_reason=result.stop_reason)

    def _record(self, turn: Turn, outcome: TurnOutcome) -> None:
        state = self.state
        state.turn_count += 1
        state.messages.append(Message("user", turn.text, turn.turn_id))
        if outcome.reply:
            state.messages.append(Message("assistant", outcome.reply, turn.turn_id))
        if len(state.messages) > self._keep:
            del state.messages[: len(state.messages) - self._keep]
        state.recent[turn.turn_id] = outcome
        while len(state.recent) > RECENT_TURNS_KEPT:
            state.recent.popitem(last=False)

    async def _finish_cancelled(self, turn: Turn, emitter: TurnEmitter) -> None:
        await emitter.cancelled("the engine stopped before the turn finished")
        await self._finish(turn)

    async def _finish(self, turn: Turn) -> None:
        # The outcome is saved before the host acknowledges the turn: an acked turn is never forgotten.
        # When saving fails the turn stays unacknowledged; its redelivery finds the outcome in `recent`
        # and is answered from there, so the model is not called again.
        try:
            await self.save()
        except Exception:
            log.exception("saving the session snapshot failed; the turn stays unacknowledged")
            return
        if turn.on_done is not None:
            try:
                await turn.on_done()
            except Exception:
                log.exception("acknowledging the turn failed; it will be redelivered and answered from its record")

    async def save(self) -> None:
        """Write the session's snapshot."""
        await self._save_snapshot(self.key, self.state.to_dict())

    async def close(self) -> None:
        """Stop the running turn (recorded and acknowledged as cancelled) and drop queued ones, which stay
        unacknowledged so the bus redelivers them to the session's next activation. Idempotent."""
        self._closed = True
        runner = self._runner
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._queue.clear()


async def _aclose(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
