"""How the load generator talks to Salon: ``salon.client`` over gRPC, one shared channel, a session per
simulated user; a turn counts its ``delta`` events and must end ``completed``."""

from __future__ import annotations

import time

from bench.peer.load import Conversation, TurnFailed
from salon.client import SalonClient, SalonError, Session


class _SalonConversation:
    def __init__(self, session: Session, tokens: int) -> None:
        self.session = session
        self.tokens = tokens

    async def turn(self, text: str) -> float:
        start = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        outcome = ""
        try:
            async for event in self.session.send(text):
                kind = event.WhichOneof("kind")
                if kind == "delta":
                    if first is None:
                        first = time.perf_counter()
                    pieces.append(event.delta.text)
                elif kind == "error":
                    raise TurnFailed(f"error event {event.error.reason}: {event.error.message}")
                elif kind in ("completed", "cancelled"):
                    outcome = kind
        except SalonError as exc:
            raise TurnFailed(f"{exc.code.name} {exc.reason}: {exc.message}") from exc
        # Count words, not deltas: the engine may merge tokens into one delta (its output guard holds some back).
        words = len("".join(pieces).split())
        if outcome != "completed" or first is None or words != self.tokens:
            raise TurnFailed(f"turn ended {outcome or 'without a terminal event'} after {words} words")
        return first - start


class SalonTarget:
    """A running Salon gateway, as an application backend would use it: one client, one channel."""

    def __init__(self, target: str, tokens: int) -> None:
        self.tokens = tokens
        self.client = SalonClient(target)

    async def open(self) -> Conversation:
        """A new session."""
        return _SalonConversation(await self.client.create_session(), self.tokens)

    async def close(self) -> None:
        """Close the channel."""
        await self.client.close()
