"""In-memory reference of :class:`~salon.storage.tool_answers.AnswerStore`, with an injected clock."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

from salon.storage.tool_answers import AnswerKind, StoredAnswer

_Key = tuple[str, str, str, str, AnswerKind]


class InMemoryAnswerStore:
    """Answers in a dict, each expiring ``ttl_s`` after it was stored."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._answers: dict[_Key, tuple[StoredAnswer, float]] = {}
        """Each key's answer and when it expires, in the order stored."""
        self._watchers: set[asyncio.Queue[StoredAnswer]] = set()

    def _current(self, key: _Key) -> StoredAnswer | None:
        entry = self._answers.get(key)
        if entry is None:
            return None
        answer, expires = entry
        if self._clock() >= expires:
            del self._answers[key]
            return None
        return answer

    async def put(self, answer: StoredAnswer, ttl_s: float) -> tuple[StoredAnswer, bool]:
        """Store ``answer`` unless one of its kind is stored for its call; the one that holds, and whether it is
        this one."""
        key: _Key = (answer.tenant_id, answer.session_id, answer.turn_id, answer.call_id, answer.kind)
        held = self._current(key)
        if held is not None:
            return held, False
        stored = dataclasses.replace(answer, stored_at_ns=time.time_ns())
        self._answers[key] = (stored, self._clock() + ttl_s)
        for queue in self._watchers:
            queue.put_nowait(stored)
        return stored, True

    async def get(
        self, tenant_id: str, session_id: str, turn_id: str, call_id: str, kind: AnswerKind
    ) -> StoredAnswer | None:
        """The answer of ``kind`` stored for the call, if any."""
        return self._current((tenant_id, session_id, turn_id, call_id, kind))

    async def of_turn(self, tenant_id: str, session_id: str, turn_id: str) -> list[StoredAnswer]:
        """Every answer stored for the turn's calls, in the order stored."""
        keys = [k for k in self._answers if k[:3] == (tenant_id, session_id, turn_id)]
        return [answer for key in keys if (answer := self._current(key)) is not None]

    async def watch(self) -> AsyncIterator[StoredAnswer]:
        """Every answer kept now, then each one stored from now on."""
        queue: asyncio.Queue[StoredAnswer] = asyncio.Queue()
        for key in list(self._answers):
            if (answer := self._current(key)) is not None:
                queue.put_nowait(answer)
        self._watchers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)
