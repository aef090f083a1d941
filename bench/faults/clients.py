"""Closed-loop clients of the engine under test: every turn with an idempotency key, retried until it ends.

A client owns one session and sends turns one after another. A turn's first attempt is ``SendTurn`` with the
turn's key; after a failure the client retries on whichever gateway is up: with ``ResumeTurn`` after the last
event it holds (when it holds any and its policy resumes) or ``SendTurn`` with the same key (which joins or
replays the same turn). Retryable statuses are retried after the server's retry hint (or a short seeded
backoff); an attempt that receives nothing for ``idle_timeout_s`` is dropped by the client and retried (no gRPC
deadline is set, since a deadline travels with the turn and would cancel it on the host).

What the client saw is kept per turn: every event by sequence number, gaps and repeats within an attempt
(an attempt must start right after what it asked for and go up by one), events whose content differs from an
earlier copy with the same number (a contradiction), and the status of every attempt.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench.faults.model import BIG
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import turn_pb2

TERMINAL = ("completed", "error", "cancelled")
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}
"""Statuses a client retries. UNKNOWN and INTERNAL are retried too (a gateway killed mid-stream can end a call
with either), but they are counted: the engine itself should never answer with them."""


def reason_of(exc: grpc.aio.AioRpcError) -> str:
    """``CODE`` or ``CODE/REASON`` of a failed call."""
    metadata = dict(exc.trailing_metadata() or ())
    reason = metadata.get("salon-error-reason", "")
    return f"{exc.code().name}/{reason}" if reason else exc.code().name


def retry_after_s(exc: grpc.aio.AioRpcError) -> float | None:
    """The server's retry hint, if it gave one."""
    raw = dict(exc.trailing_metadata() or ()).get("salon-retry-after-ms")
    try:
        return int(str(raw)) / 1000 if raw is not None else None
    except ValueError:
        return None


SLOW_CHANNEL_OPTIONS = (("grpc.http2.bdp_probe", 0),)
"""A slow reader's own channel: without BDP probing its stream window stays at 64 KiB, so a reader that stops
reading stalls the gateway's writes (the library otherwise buffers megabytes for it)."""


class Channels:
    """One gRPC channel per gateway address, shared by every client of a run (a slow reader has its own)."""

    def __init__(self) -> None:
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}

    def stub(self, target: str, own: str = "") -> cs_grpc.ConversationServiceStub:
        """A stub on the shared channel to ``target`` (or on the channel of reader ``own``, made for slow
        reading)."""
        channel = self._channels.get((target, own))
        if channel is None:
            options = SLOW_CHANNEL_OPTIONS if own else ()
            channel = self._channels[(target, own)] = grpc.aio.insecure_channel(target, options=options)
        return cs_grpc.ConversationServiceStub(channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Close every channel."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()


@dataclass
class Policy:
    """How the clients of a run behave."""

    resume: bool = True
    """After a broken stream with events in hand: ResumeTurn after the last one (else SendTurn with the key)."""
    disconnect_every: int = 0
    """Hang up on purpose mid-stream in every n-th turn's first attempt, after a random number of events."""
    slow: bool = False
    """Stop reading for ``slow_pause_s`` after the first event of each turn (a slow consumer)."""
    slow_pause_s: float = 0.0
    big: bool = False
    """Ask for large tokens (with ``slow``: fills the stream's HTTP/2 window)."""
    idle_timeout_s: float = 15.0
    turn_budget_s: float = 120.0
    """A turn not ended after this long is given up (counted as abandoned)."""


@dataclass
class TurnLog:
    """One turn as a client saw it."""

    client: str
    session_id: str
    key: str
    tag: str
    started: float
    ended: float = 0.0
    outcome: str = ""
    """``completed``, ``error/<reason>``, ``cancelled``, ``failed/<status>`` or ``abandoned``."""
    events: dict[int, tuple[str, str]] = field(default_factory=dict)
    """seq → (kind, delta text) of every event received."""
    attempts: list[str] = field(default_factory=list)
    """Per attempt: ``OK`` or the status it ended with."""
    gaps: int = 0
    repeats: int = 0
    contradictions: int = 0

    @property
    def completed(self) -> bool:
        """The client saw the turn complete (an acknowledged turn)."""
        return self.outcome == "completed"

    @property
    def last_seq(self) -> int:
        """The last sequence number held with none missing before it."""
        seq = 0
        while seq + 1 in self.events:
            seq += 1
        return seq

    def reply(self) -> str:
        """The answer as received: the deltas in sequence order."""
        return "".join(text for _, (kind, text) in sorted(self.events.items()) if kind == "delta")


class _Hangup(Exception):
    """The client hangs up on purpose."""


class Client:
    """One session's closed loop of turns. ``targets()`` gives the gateways to use, preferred first."""

    def __init__(
        self,
        name: str,
        session_id: str,
        *,
        channels: Channels,
        targets: Callable[[], list[str]],
        rng: random.Random,
        policy: Policy,
    ) -> None:
        self.name = name
        self.session_id = session_id
        self._channels = channels
        self._targets = targets
        self._rng = rng
        self.policy = policy
        self.turns: list[TurnLog] = []
        self.statuses: Counter[str] = Counter()
        self._target_index = 0

    async def run(self, stop: asyncio.Event, max_turns: int = 10**6) -> None:
        """Send turns one after another until ``stop`` is set (the turn in progress then still ends)."""
        while not stop.is_set() and len(self.turns) < max_turns:
            await self.turn()

    async def turn(self) -> TurnLog:
        """One turn, retried until it ends or its budget runs out."""
        n = len(self.turns)
        key = f"{self.name}-{n}"
        tag = f"t:{key}"
        text = f"[{tag}] question {n} from {self.name}" + (f" {BIG}" if self.policy.big else "")
        log = TurnLog(self.name, self.session_id, key, tag, time.monotonic())
        self.turns.append(log)
        budget_end = log.started + self.policy.turn_budget_s
        hang_up = self.policy.disconnect_every and n % self.policy.disconnect_every == 0
        while not log.outcome:
            if time.monotonic() > budget_end:
                log.outcome = "abandoned"
                break
            cut_after = self._rng.randint(1, 6) if hang_up and not log.attempts else 0
            status, hint = await self._attempt(log, text, cut_after)
            log.attempts.append(status)
            self.statuses[status] += 1
            if log.outcome:
                break
            if status.startswith("NOT_FOUND") and not status.endswith("TURN_NOT_FOUND"):
                log.outcome = f"failed/{status}"
                break
            await asyncio.sleep(hint if hint is not None else self._rng.uniform(0.1, 0.3))
        log.ended = time.monotonic()
        return log

    def _target(self, failed: bool) -> str:
        targets = self._targets()
        if failed:
            self._target_index += 1
        return targets[self._target_index % len(targets)]

    async def _attempt(self, log: TurnLog, text: str, cut_after: int) -> tuple[str, float | None]:
        """One call for the turn; returns its status and the retry hint (None: back off a little)."""
        failed = bool(log.attempts) and log.attempts[-1] != "OK" and not log.attempts[-1].startswith("HANGUP")
        stub = self._channels.stub(self._target(failed), own=self.name if self.policy.slow else "")
        after = log.last_seq
        resume = after > 0 and self.policy.resume
        if resume and log.attempts and log.attempts[-1] == "NOT_FOUND/TURN_NOT_FOUND":
            resume = False  # not known yet where we asked: send it again under its key
        call: Any
        if resume:
            call = stub.ResumeTurn(
                cs_pb2.ResumeTurnRequest(session_id=self.session_id, turn_id=log.key, after_seq=after)
            )
            expected = after + 1
        else:
            call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=self.session_id, text=text, idempotency_key=log.key))
            expected = 1
        received = 0
        try:
            while True:
                try:
                    response = await asyncio.wait_for(call.read(), self.policy.idle_timeout_s)
                except TimeoutError:
                    call.cancel()
                    return "IDLE_TIMEOUT", 0.0
                if response is grpc.aio.EOF:
                    return "EOF_WITHOUT_END", None
                expected = self._note(log, response.event, expected)
                received += 1
                kind = response.event.WhichOneof("kind")
                if kind in TERMINAL:
                    log.outcome = _outcome(response.event)
                    return "OK", None
                if self.policy.slow and received == 1 and not log.attempts:
                    await asyncio.sleep(self.policy.slow_pause_s)
                if cut_after and received >= cut_after:
                    raise _Hangup
        except _Hangup:
            call.cancel()
            return "HANGUP", 0.0
        except grpc.aio.AioRpcError as exc:
            status = reason_of(exc)
            retried = exc.code() in RETRYABLE or status in (
                "NOT_FOUND/TURN_NOT_FOUND",
                "FAILED_PRECONDITION/SESSION_BUSY",
            )
            if not retried:
                log.outcome = f"failed/{status}"
            return status, retry_after_s(exc)

    @staticmethod
    def _note(log: TurnLog, event: turn_pb2.TurnEvent, expected: int) -> int:
        """Keep one received event; count a gap or a repeat against what the attempt should send next."""
        kind = event.WhichOneof("kind") or ""
        content = (kind, event.delta.text if kind == "delta" else "")
        if event.seq > expected:
            log.gaps += event.seq - expected
        elif event.seq < expected:
            log.repeats += 1
        held = log.events.get(event.seq)
        if held is None:
            log.events[event.seq] = content
        elif held != content:
            log.contradictions += 1
        return max(expected, event.seq + 1)


def _outcome(event: turn_pb2.TurnEvent) -> str:
    kind = event.WhichOneof("kind")
    if kind == "error":
        return f"error/{event.error.reason}"
    return str(kind)
