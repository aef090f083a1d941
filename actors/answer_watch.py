"""A host's watch on the tool answers the gateway keeps: each one is handed at once to its turn when the turn waits
on this host.

A turn reads its kept answers whenever it starts to wait (:meth:`~salon.actors.tool_loop.ToolLoop.wait`); an
answer kept while the turn already waits here (the gateway found this host too slow to answer, or the answer
arrived while the turn was being taken up) would otherwise wait for the turn's deadline. The watch hands it over
through the same checks as an answer the gateway sends, so one the turn has is a duplicate, never taken twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from salon.actors.session import SessionActor
from salon.actors.stored_answers import as_message
from salon.actors.turn import SessionKey
from salon.storage import AnswerStore, SalonError, StoredAnswer

log = logging.getLogger(__name__)

RETRY_S = (0.5, 1.0, 2.0, 5.0)
"""Waits before watching again after the store was lost, growing to the last."""


class AnswerWatch:
    """Follows the answer store for one host. Lifecycle: :meth:`run` in a task the host owns (cancel it to stop)."""

    def __init__(self, store: AnswerStore, session_of: Callable[[SessionKey], SessionActor | None]) -> None:
        self._store = store
        self._session_of = session_of

    async def run(self) -> None:
        """Watch until cancelled, watching again (after a pause) whenever the store is lost."""
        failures = 0
        while True:
            try:
                async for answer in self._store.watch():
                    failures = 0
                    await self.hand(answer)
            except SalonError as exc:
                log.warning("the tool answer watch was lost (%s); watching again", exc.reason)
            await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
            failures += 1

    async def hand(self, answer: StoredAnswer) -> None:
        """Give ``answer`` to its turn when the turn waits on this host now (otherwise the turn reads it when it
        waits)."""
        session = self._session_of(SessionKey(answer.tenant_id, answer.session_id))
        if session is None or not session.waiting:
            return
        try:
            reply = await session.answer(as_message(answer))
        except Exception:
            log.exception("handing a kept tool answer to session %s failed", session.key)
            return
        if reply.result == "accepted":
            log.info("session %s took a tool answer kept while it was out of reach", session.key)
