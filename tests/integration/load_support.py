"""Turns under load while hosts come and go: sessions each sending turns one after another, every acknowledged
turn noted, and afterwards checked against the sessions' histories (nothing acknowledged lost, nothing twice)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import grpc
from conftest import create_session

from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc


@dataclass
class TurnResult:
    session_id: str
    turn_id: str
    started: float
    ended: float
    outcome: str
    """completed, error:<reason> or cancelled."""


@dataclass
class Load:
    """``sessions`` clients, each running turns back to back until :meth:`stop`."""

    stub: cs_grpc.ConversationServiceStub
    sessions: int
    turn_timeout_s: float = 120.0
    results: list[TurnResult] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.session_ids = [await create_session(self.stub) for _ in range(self.sessions)]
        self._tasks = [asyncio.create_task(self._run(s)) for s in self.session_ids]

    async def _run(self, session_id: str) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            started = time.monotonic()
            request = cs_pb2.SendTurnRequest(session_id=session_id, text=f"turn {n}")
            turn_id, outcome = "", "none"
            try:
                async for response in self.stub.SendTurn(request, timeout=self.turn_timeout_s):
                    event = response.event
                    turn_id = turn_id or event.turn_id
                    kind = event.WhichOneof("kind")
                    if kind == "completed":
                        outcome = "completed"
                    elif kind == "error":
                        outcome = f"error:{event.error.reason}"
                    elif kind == "cancelled":
                        outcome = "cancelled"
            except grpc.aio.AioRpcError as exc:
                outcome = f"status:{exc.code().name}"
            self.results.append(TurnResult(session_id, turn_id, started, time.monotonic(), outcome))

    def completed_since(self, t: float) -> int:
        """Turns completed after ``t`` (time.monotonic)."""
        return sum(1 for r in self.results if r.outcome == "completed" and r.ended > t)

    async def stop(self) -> None:
        """Let every session finish its current turn, then stop."""
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def longest_wait_s(self, since: float, until: float) -> float:
        """The longest turn that was running at some moment in [since, until]: how long a session waited for its
        answer across a move."""
        spans = [r.ended - r.started for r in self.results if r.ended >= since and r.started <= until]
        return max(spans, default=0.0)

    async def lost_and_doubled(self) -> tuple[list[str], list[str]]:
        """Acknowledged turns missing from their session's history, and turns recorded twice."""
        lost: list[str] = []
        doubled: list[str] = []
        for session_id in self.session_ids:
            recorded: list[str] = []
            token = ""
            while True:
                page = await self.stub.GetHistory(
                    cs_pb2.GetHistoryRequest(session_id=session_id, page_size=100, page_token=token)
                )
                recorded += [t.turn_id for t in page.turns]
                token = page.next_page_token
                if not token:
                    break
            acked = [r.turn_id for r in self.results if r.session_id == session_id and r.outcome == "completed"]
            lost += [t for t in acked if t not in recorded]
            doubled += sorted({t for t in recorded if recorded.count(t) > 1})
        return lost, doubled

    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        return counts
